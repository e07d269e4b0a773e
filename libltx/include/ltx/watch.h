// watch.h - back up many databases from one process: per database, the
// three stages of the backup pipeline (wal-tail | ltx-encode | s3-put) run
// as threads joined by pipe(2)s, each calling the library directly, under
// one supervisor that restarts failed pipelines with exponential backoff
// and drains them on shutdown. A failure that retrying cannot cure
// (Error::permanent: a database not in WAL mode or missing, a state of
// another replica, damaged data) stops that database for good instead.
//
// Each (re)start follows the acknowledged-position protocol (pipeline.h):
// the acknowledgement is brought up to the remote's latest file, the page
// state is rolled back to it, and the WAL is tailed from its WAL cursor (a
// resync that sends only changed pages when the WAL no longer holds it).
//
// Databases share nothing mutable: each pipeline has its own SQLite
// connections, page state, store (curl handle) and buffers. Stages stop at
// the owning database's flag; the tail thread is woken from poll(2) by
// SIGUSR1 (watch installs a no-op handler without SA_RESTART).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "ltx/store.h"

namespace ltx::watch {

struct Database {
  std::string name;               // log and metrics label
  std::string db;                 // the SQLite database (WAL mode)
  std::string url;                // its replica
  std::string state_dir;          // page state, acknowledgement ("ack"), spools
  uint32_t checkpoint_pages = 1000;
  int64_t sync_interval_ms = 1000;  // at most one object per interval (UploadOptions)
};

// Databases found under a directory (ltx/discover.h), at start and while
// running: a new one is picked up from the directory's inotify events (and
// a rescan every rescan_ms, the safety net for lost events), one whose file
// is gone is stopped (drained) and forgotten; its replica stays.
struct Discovery {
  std::string dir;
  std::string pattern;  // relative glob (discover::check_pattern)
  // The database for a path found (dir + "/" + rel): its name, replica
  // and state directory are the caller's policy.
  std::function<Database(const std::string& path, const std::string& rel)> make;
};

constexpr size_t kMetricsMaxDbs = 1000;

struct Options {
  std::vector<Database> dbs;
  std::vector<Discovery> discover;
  int rescan_ms = 60000;          // full rescan of every Discovery::dir
  S3Config s3;                    // for s3:// replicas (one store per database)
  int backoff_min_ms = 1000;      // first restart delay; doubles per failure
  int backoff_max_ms = 60000;
  int healthy_ms = 30000;         // a run this long (or a stored file) resets the backoff
  int drain_ms = 10000;           // shutdown: bound on draining in-flight files
  std::string metrics_file;       // Prometheus text, replaced atomically; empty: none
  int metrics_interval_ms = 5000;
  // Per-database series for at most this many databases, the worst first
  // (worse()); the totals by state and the largest lag cover all of them.
  size_t metrics_max_dbs = kMetricsMaxDbs;
  // Parking: a pipeline whose tail has copied nothing for park_after_ms
  // and whose every file is stored is stopped (drained); the database then
  // holds no thread, connection or descriptor, only a share of one inotify
  // watch on its directory. A change to its -wal wakes it. 0: never park.
  int park_after_ms = 5000;
  int max_active = 16;            // pipelines running at once; the others queue for a slot
  int slice_ms = 10000;           // a pipeline running this long yields its slot to a queued one
  // Readable when wait_stop has a stop to report (e.g. a signalfd): the
  // supervisor then waits on it and on its inotify descriptor together, so
  // that a wake-up is handled at once. -1: wait_stop(ms) is the wait.
  int stop_fd = -1;
  bool verbose = false;           // also log every stored file, wal-tail progress, parks and wake-ups
  // One event line for a database (name, event), e.g. ("app", "started at TXID 5").
  std::function<void(const std::string&, const std::string&)> log;
  // Called by the supervisor between ticks; may block up to ms milliseconds
  // (e.g. sigtimedwait). Returns true to shut down.
  std::function<bool(int ms)> wait_stop;
  // Called once, after every database's first check and before any
  // pipeline starts (e.g. to start the application: walsync watch -- CMD).
  std::function<void()> started;
  // A database missing at its first check (no file, no -wal) waits, parked,
  // until its -wal appears (the application created it in WAL mode and
  // wrote), instead of failing for good. Needs parking (park_after_ms > 0).
  bool await_missing = false;
  // One database failed for good: stop them all (drain the others) rather
  // than go on with the rest.
  bool stop_on_failure = false;
  // At a stop, the databases with commits whose pipeline has not started
  // (queued, or woken by a change the stop overtook) still run once and
  // drain, max_active at a time, within drain_ms: everything committed
  // before the stop is stored (walsync watch -- CMD, when CMD exits).
  bool drain_queued = false;
  // A listening socket (ltx/http.h listen_on): the supervisor's loop
  // answers GET /metrics (format_metrics) and GET /healthz (health) on it.
  // -1: none. Owned by the caller.
  int http_fd = -1;
};

struct Result {
  bool drained = true;  // false: some pipelines were abandoned after drain_ms
                        // (their threads still run: the caller must exit)
  int status = 0;       // exit status: 0; 1 a database failed permanently
                        // (or was abandoned); 3 one failed on data integrity
};
// Runs until wait_stop() returns true, or until every database has failed
// permanently; then stops every tail, lets the encoders and uploaders finish
// what is in the pipes (up to drain_ms), and returns.
Result run(const Options& o);

// Per-database metrics, as run() writes them to Options::metrics_file.
struct Metrics {
  std::string name;
  uint64_t txid = 0;              // acknowledged position
  double lag_s = 0;               // age of the oldest encoded transaction not yet stored
  uint64_t bytes = 0, files = 0, errors = 0, restarts = 0;
  int64_t last_success_ms = 0;    // last stored file (0: none yet)
  bool up = false;                // its pipeline runs, or it is parked (nothing to send)
  bool parked = false;            // parked: no pipeline, everything acknowledged
  bool queued = false;            // waiting for a pipeline slot (--max-active)
  bool failed = false;            // stopped for good (a permanent failure)
  bool retrying = false;          // waiting to restart after a failure (not in the text)
  std::string error;              // why it failed or is retrying (not in the text)
  // Object store requests of every run (CountingStore), by kRequestKinds.
  uint64_t requests[4] = {0, 0, 0, 0};
};
// What walsync status calls its state: "failed", "parked", "queued",
// "active" (its pipeline runs) or "down" (waiting to restart, or stopped).
const char* state_of(const Metrics& m);
constexpr const char* kStates[5] = {"active", "queued", "parked", "down", "failed"};
// The order of walsync status and of the per-database series: failed
// first, then the largest lag, then down, queued, active, parked, by name.
bool worse(const Metrics& a, const Metrics& b);
// The totals of a metrics file: every database, whether it has
// per-database series or not.
struct Totals {
  size_t dbs = 0;                 // watched
  size_t by_state[5] = {};        // by kStates
  size_t listed = 0;              // with per-database series
  double max_lag_s = 0;
  bool present = false;           // the file had them (parse_metrics)
};
// The kinds of Metrics::requests, as the label kind="..." names them.
constexpr const char* kRequestKinds[4] = {"put", "get", "list", "delete"};
// The totals, then per-database series for the worst max_dbs databases.
std::string format_metrics(std::vector<Metrics> m, size_t max_dbs = kMetricsMaxDbs);
// /healthz: true when every database replicates or is parked; else
// *text has one line per database that failed for good or is retrying,
// "NAME: failed: WHY" or "NAME: retrying: WHY".
bool health(const std::vector<Metrics>& m, std::string* text);
// Parses format_metrics() output (unknown lines are ignored), in its order.
std::vector<Metrics> parse_metrics(const std::string& text, Totals* totals = nullptr);

}  // namespace ltx::watch
