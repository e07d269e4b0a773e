// watch.cpp - many backup pipelines in one process (see ltx/watch.h).
#include "ltx/watch.h"

#include <fcntl.h>
#include <fnmatch.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <sstream>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "ltx/bytes.h"
#include "ltx/discover.h"
#include "ltx/encode.h"
#include "ltx/error.h"
#include "ltx/http.h"
#include "ltx/pipeline.h"
#include "ltx/replica.h"
#include "ltx/state.h"
#include "ltx/tail.h"
#include "ltx/wal.h"

namespace ltx::watch {
namespace {

int64_t mono_ms() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

void on_wake(int) {}

struct Fd {
  int fd = -1;
  Fd() = default;
  explicit Fd(int f) : fd(f) {}
  Fd(Fd&& o) noexcept : fd(o.fd) { o.fd = -1; }
  Fd& operator=(Fd&& o) noexcept {
    std::swap(fd, o.fd);
    return *this;
  }
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// Encoded transactions not yet stored: (end offset in the LTX stream, time
// encoded). The lag is the age of the oldest; a failed run carries its
// oldest time over to the next run.
class LagTracker {
 public:
  void encoded(uint64_t end, int64_t ms) {
    std::lock_guard<std::mutex> l(mu_);
    if (q_.size() >= 256) {
      q_.back().first = end;  // bounded: merge into the newest (keeps the oldest time)
      return;
    }
    q_.push_back({end, ms});
  }
  void stored(uint64_t consumed) {
    std::lock_guard<std::mutex> l(mu_);
    while (!q_.empty() && q_.front().first <= consumed) q_.pop_front();
    carry_ = 0;
  }
  void restart() {
    std::lock_guard<std::mutex> l(mu_);
    if (!q_.empty() && (carry_ == 0 || q_.front().second < carry_)) carry_ = q_.front().second;
    q_.clear();
  }
  // A change seen while parked: pending from then until stored.
  void woken(int64_t ms) {
    std::lock_guard<std::mutex> l(mu_);
    if (carry_ == 0) carry_ = ms;
  }
  // Parked: everything committed is stored.
  void clear() {
    std::lock_guard<std::mutex> l(mu_);
    q_.clear();
    carry_ = 0;
  }
  // Encoded transactions not yet stored.
  bool pending() {
    std::lock_guard<std::mutex> l(mu_);
    return !q_.empty();
  }
  double lag_s(int64_t now) {
    std::lock_guard<std::mutex> l(mu_);
    int64_t t = carry_;
    if (!q_.empty() && (t == 0 || q_.front().second < t)) t = q_.front().second;
    return t == 0 ? 0.0 : double(now - t) / 1000.0;
  }

 private:
  std::mutex mu_;
  std::deque<std::pair<uint64_t, int64_t>> q_;
  int64_t carry_ = 0;
};

// Counts the bytes passing to w; reports the running total at each flush
// (the encoder flushes after every LTX file).
class TapWriter : public Writer {
 public:
  TapWriter(Writer& w, std::function<void(uint64_t)> cb) : w_(w), cb_(std::move(cb)) {}
  void write(const void* p, size_t n) override {
    w_.write(p, n);
    n_ += n;
  }
  void flush() override {
    w_.flush();
    if (n_ != last_) cb_(last_ = n_);
  }

 private:
  Writer& w_;
  std::function<void(uint64_t)> cb_;
  uint64_t n_ = 0, last_ = 0;
};

// What a parked database's files looked like when it was parked: if
// neither the database nor its -wal changed since (inode, size, ctime: any
// write moves ctime), nothing was committed since. Kept in the state
// directory ("parked") for the first check of the next start.
struct Stamp {
  struct File {
    bool exists = false;
    uint64_t dev = 0, ino = 0, size = 0;
    int64_t ctime_ns = 0;
    bool operator==(const File& o) const {
      return exists == o.exists && dev == o.dev && ino == o.ino && size == o.size && ctime_ns == o.ctime_ns;
    }
  } db, wal;
  bool valid = false;
  bool operator==(const Stamp& o) const { return valid && o.valid && db == o.db && wal == o.wal; }

  static Stamp of(const std::string& path) {
    Stamp s;
    auto take = [](const std::string& p, File* f) {
      struct stat st {};
      if (::stat(p.c_str(), &st) != 0) return errno == ENOENT;
      f->exists = true;
      f->dev = st.st_dev;
      f->ino = st.st_ino;
      f->size = uint64_t(st.st_size);
      f->ctime_ns = int64_t(st.st_ctim.tv_sec) * 1000000000 + st.st_ctim.tv_nsec;
      return true;
    };
    s.valid = take(path, &s.db) && s.db.exists && take(path + "-wal", &s.wal);
    return s;
  }
  std::string format() const {
    std::ostringstream o;
    for (const File* f : {&db, &wal})
      o << (f == &db ? "db " : "wal ") << f->exists << ' ' << f->dev << ' ' << f->ino << ' ' << f->size << ' '
        << f->ctime_ns << '\n';
    o << "end\n";
    return o.str();
  }
  static Stamp parse(const std::string& text) {
    Stamp s;
    std::istringstream in(text);
    std::string k1, k2, end;
    in >> k1 >> s.db.exists >> s.db.dev >> s.db.ino >> s.db.size >> s.db.ctime_ns >> k2 >> s.wal.exists >>
        s.wal.dev >> s.wal.ino >> s.wal.size >> s.wal.ctime_ns >> end;
    s.valid = in && k1 == "db" && k2 == "wal" && end == "end";
    return s;
  }
};

struct Db {
  Database cfg;
  // Queued: waits for a pipeline slot. Running: its pipeline runs (or
  // drains). Parked: no pipeline, everything acknowledged, a change to
  // its -wal wakes it. Waiting: restarts at next_ms after a failure.
  enum class Phase { Queued, Running, Parked, Waiting, Failed } phase = Phase::Queued;
  bool parking = false;                // stopped to park or to yield its slot: not a failure
  bool yielding = false;               // ... to yield its slot (queued again unless nothing new)
  bool wake = false;                   // its -wal changed while parking
  bool synced = false;                 // the acknowledgement is the remote's (we parked it cleanly)
  bool absent = false;                 // parked until it exists: no file, no -wal yet (Options::await_missing)
  int wal_wd = -1;                     // inotify watch of its -wal while parked (or parking)
  Stamp stamp;                         // its files when parked
  std::atomic<int64_t> active_ms{0};   // monotonic time of the tail's last output
  int notify_fd = -1;                  // written when its last stage ends (the supervisor's eventfd)
  bool woken_start = false;            // this start follows a park or a yield (logged with -v only)
  bool discovered = false;             // found under a Discovery::dir: forgotten when its file goes
  bool removed = false;                // its file is gone: forgotten once its pipeline is reaped
  volatile std::sig_atomic_t stop = 0;
  std::atomic<int> done{0};            // stages finished this run (3: all)
  std::atomic<bool> tail_started{false}, tail_done{false}, stored_this_run{false};
  pthread_t tail_handle{};
  std::thread up, enc, tail;           // up: set-up and upload; starts enc and tail
  std::mutex mu;
  std::string error;                   // the run's first failure (a permanent one first)
  bool error_permanent = false;        // retrying cannot cure it (Error::permanent)
  Kind error_kind = Kind::Runtime;
  bool failed = false;                 // stopped for good after a permanent failure
  Kind failed_kind = Kind::Runtime;
  int64_t started_ms = 0, next_ms = 0;
  int failures = 0;
  std::atomic<uint64_t> txid{0}, bytes{0}, files{0}, errors{0}, restarts{0};
  std::atomic<int64_t> last_success_ms{0};
  RequestCounts requests;              // of every run's store
  LagTracker lag;
  std::unique_ptr<StateLock> state_lock, ack_lock;  // held while its pipeline runs

  void fail(const std::string& stage, const std::string& what, bool permanent = false,
            Kind kind = Kind::Runtime) {
    std::lock_guard<std::mutex> l(mu);
    // The first failure names the cause (the others are its echoes: a
    // closed pipe, a stop); a permanent one wins over a transient one.
    if (error.empty() || (permanent && !error_permanent)) {
      error = stage + ": " + what;
      error_permanent = permanent;
      error_kind = kind;
    }
    stop = 1;
  }
  void fail(const std::string& stage, const std::exception& e) {
    auto* le = dynamic_cast<const Error*>(&e);
    fail(stage, e.what(), le && le->permanent(), le ? le->kind() : Kind::Runtime);
  }
  // n more stages of this run have ended; the last one tells the supervisor.
  void stages_done(int n) {
    if (done.fetch_add(n) + n == 3 && notify_fd >= 0) {
      uint64_t one = 1;
      ssize_t r = ::write(notify_fd, &one, sizeof one);
      (void)r;
    }
  }
};

void mkdirs(const std::string& dir) {
  for (size_t i = 1; i <= dir.size(); i++) {
    if (i < dir.size() && dir[i] != '/') continue;
    std::string p = dir.substr(0, i);
    if (::mkdir(p.c_str(), 0755) != 0 && errno != EEXIST) fail_errno("mkdir " + p);
  }
}

// The state directory remembers its replica: a state continued against
// another replica would break that replica's chain.
void bind_state(const std::string& dir, const std::string& url) {
  std::string path = dir + "/replica";
  FILE* f = std::fopen(path.c_str(), "r");
  if (f) {
    char buf[4096];
    size_t n = std::fread(buf, 1, sizeof buf - 1, f);
    std::fclose(f);
    std::string have(buf, n);
    while (!have.empty() && have.back() == '\n') have.pop_back();
    if (have != url)
      fail_integrity(dir + ": state belongs to replica " + have + ", not " + url +
                     " (remove the directory to start this replica afresh)");
    return;
  }
  AtomicFile a(path);
  std::string line = url + "\n";
  write_all(a.fd(), line.data(), line.size());
  a.commit();
}

void run_tail(Db& d, const Options& o, tail::Options to, Fd out) {
  try {
    FdWriter fw(out.fd, 8 * 1024);
    TapWriter w(fw, [&d](uint64_t) { d.active_ms = mono_ms(); });
    tail::run(to, w);
    w.flush();
    if (!d.stop) d.fail("wal-tail", "ended unexpectedly");
  } catch (const std::exception& e) {
    d.fail("wal-tail", e);
  }
  (void)o;
  Fd closed(std::move(out));
  d.tail_done = true;
}

// The encoder's state no longer checks out: its directory is gone, or its
// pages no longer fold to its position (PageState::check).
bool state_gone_or_damaged(const PageState& state, const std::string& dir) {
  struct stat st;
  if (::stat((dir + "/pages").c_str(), &st) != 0) return true;
  try {
    return !state.check().empty();
  } catch (const std::exception&) {
    return true;
  }
}

void run_encoder(Db& d, std::unique_ptr<PageState> state, const std::string& ack, const Position& adopt, Fd in,
                 Fd out) {
  try {
    FdReader fr(in.fd);
    BufReader br(fr, 8 * 1024);
    const uint8_t* peek;
    if (br.peek(&peek, 1) > 0) {  // nothing at all: the tail stopped first
      wal::EventReader events(br);
      FdWriter fw(out.fd, 8 * 1024);
      TapWriter tap(fw, [&d](uint64_t end) { d.lag.encoded(end, now_ms()); });
      EncodeOptions eo;
      eo.per_txn = true;
      eo.ack_path = ack;
      eo.adopt = adopt;
      eo.rebuild = true;
      // Group commit, as ltx-encode does: while more input is already
      // waiting, transactions share a file.
      const int infd = in.fd;
      eo.input_ready = [&br, infd](int wait_ms) {
        if (br.buffered() > 0) return true;
        pollfd p{infd, POLLIN, 0};
        return ::poll(&p, 1, wait_ms) > 0 && (p.revents & POLLIN);
      };
      TxnEncoder enc(tap, state.get(), eo, d.cfg.state_dir);
      enc.run(events);
      tap.flush();
    }
  } catch (const std::exception& e) {
    // A state damaged or removed under us ("state DIR: damaged: ..." is an
    // integrity error, hence permanent) is what the next run cures: it
    // checks the state and rebuilds it. So it is transient here; any other
    // failure keeps its kind (a real one comes back on the rebuilt state).
    if (state_gone_or_damaged(*state, d.cfg.state_dir)) d.fail("ltx-encode", e.what());
    else d.fail("ltx-encode", e);
  }
  Fd a(std::move(in)), b(std::move(out));
}

// The pipeline of one run: set-up (acknowledgement, state, pipes), then the
// tail and encoder threads, then the upload loop in this thread.
void run_pipeline(Db& d, const Options& o) {
  int stages = 1;  // this one; the others count themselves when started
  Fd up_in;
  try {
    Location loc = parse_url(d.cfg.url);
    std::unique_ptr<Store> raw = open_store(loc, o.s3);
    auto store = std::make_unique<CountingStore>(*raw, &d.requests);
    mkdirs(d.cfg.state_dir);
    const std::string ack = d.cfg.state_dir + "/ack";
    // Held while the pipeline runs (a parked database holds no descriptor).
    if (d.state_lock) d.state_lock->renew();  // the directory may have been removed under us
    else d.state_lock = lock_state_dir(d.cfg.state_dir);
    if (d.ack_lock) d.ack_lock->renew();
    else d.ack_lock = std::make_unique<StateLock>(ack + ".lock");
    bind_state(d.cfg.state_dir, d.cfg.url);
    // Woken after a clean park by this process: the acknowledgement is the
    // remote's latest already (no LIST per wake-up).
    const bool synced = d.synced;
    if (!synced) sync_ack(*store, loc, ack);
    d.synced = false;
    // The state is checked, never trusted: damaged, or gone while the
    // replica holds files (sync_ack brought the acknowledgement back), it is
    // rebuilt from the database and the replica (EncodeOptions::rebuild).
    auto state = std::make_unique<PageState>(d.cfg.state_dir);
    std::string damage = state->check();
    Position adopt;
    if (damage.empty()) {
      try {
        resume_from_ack(*state, ack, &adopt);
      } catch (const Error& e) {
        if (e.kind() != Kind::Integrity) throw;
        damage = e.what();
      }
    }
    if (!damage.empty()) {
      if (o.log) o.log(d.cfg.name, "damaged state: " + damage + "; rebuilding it from the database and the replica");
      state->reset();
      adopt = Position{};
      resume_from_ack(*state, ack, &adopt);
    }
    Position acked;
    bool have = read_position_file(ack, &acked);
    d.txid = have ? acked.txid : 0;

    tail::Options to;
    to.db = d.cfg.db;
    to.checkpoint_pages = d.cfg.checkpoint_pages;
    to.stop = &d.stop;
    // No idle checkpoint before parking: the WAL restarts only once every
    // frame is backfilled, so a parked database whose WAL still holds
    // frames keeps its WAL generation (and the acknowledged position in
    // it) until the application's own checkpoint (walsync(1), PARKING).
    if (o.park_after_ms > 0) to.idle_ms = o.park_after_ms + 1000;
    if (o.verbose && o.log) to.log = [&d, &o](const std::string& m) { o.log(d.cfg.name, "wal-tail: " + m); };
    std::string where = "no acknowledged position: full resync";
    if (adopt.txid) {
      where = "no local state: full resync, joining the replica or continuing it with every page";
    } else if (have && acked.wal_offset) {
      to.have_from = true;
      to.from_salt1 = acked.wal_salt1;
      to.from_salt2 = acked.wal_salt2;
      to.from_offset = acked.wal_offset;
      where = "WAL " + tail::format_position(acked.wal_salt1, acked.wal_salt2, acked.wal_offset);
    } else if (have) {
      where = "no WAL position: resync of changed pages";
    }
    if (o.log && (!d.woken_start || o.verbose))
      o.log(d.cfg.name, std::string(d.woken_start ? "woken: " : "") + "started at TXID " + hex16(d.txid) + ", " + where);

    int a[2], b[2];
    if (::pipe2(a, O_CLOEXEC) != 0) fail_errno("pipe");
    Fd ar(a[0]), aw(a[1]);
    if (::pipe2(b, O_CLOEXEC) != 0) fail_errno("pipe");
    Fd br(b[0]), bw(b[1]);
    up_in = std::move(br);
    d.enc = std::thread([&d, st = std::move(state), ack, adopt, r = std::move(ar), w = std::move(bw)]() mutable {
      run_encoder(d, std::move(st), ack, adopt, std::move(r), std::move(w));
      d.stages_done(1);
    });
    stages++;
    d.tail = std::thread([&d, &o, to, w = std::move(aw)]() mutable {
      run_tail(d, o, to, std::move(w));
      d.stages_done(1);
    });
    d.tail_handle = d.tail.native_handle();
    d.tail_started = true;
    stages++;

    FdReader in(up_in.fd);
    UploadOptions u;
    u.ack = ack;
    u.tmpdir = d.cfg.state_dir;
    u.spool_mem = 64 * 1024;
    u.read_buf = 8 * 1024;
    u.allow_empty = true;
    u.sync_interval_ms = d.cfg.sync_interval_ms;
    // Woken after a clean park: the remote's latest is the acknowledgement
    // (checked above against the page state), so the first file's chain
    // check needs no LIST and GET either (walsync(1), Parking).
    if (synced && have) u.remote_latest = acked;
    uint64_t consumed = 0;
    u.on_file = [&](const UploadedObject& x) {
      consumed += x.input_bytes;
      d.lag.stored(consumed);
      d.txid = x.header.max_txid;
      d.last_success_ms = now_ms();
      d.stored_this_run = true;
      if (x.stored) {
        d.files++;
        d.bytes += x.bytes;
      }
      if (o.verbose && o.log)
        o.log(d.cfg.name, x.key + (x.stored ? ": stored (" + std::to_string(x.bytes) + " bytes" +
                                                  (x.files > 1 ? ", " + std::to_string(x.files) + " files merged" : "") + ")"
                                            : ": already stored"));
    };
    upload_stream(in, *store, loc, u);
  } catch (const std::exception& e) {
    d.fail("upload", e);
  }
  { Fd closed(std::move(up_in)); }
  if (!d.tail_started) d.tail_done = true;
  d.stages_done(3 - stages + 1);
}

std::string escape_label(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '\\' || c == '"') o += '\\';
    if (c == '\n') {
      o += "\\n";
      continue;
    }
    o += c;
  }
  return o;
}

std::vector<Metrics> collect(std::vector<std::unique_ptr<Db>>& dbs, bool stopping) {
  std::vector<Metrics> m;
  int64_t now = now_ms();
  for (auto& d : dbs) {
    Metrics x;
    x.name = d->cfg.name;
    x.txid = d->txid;
    x.lag_s = d->lag.lag_s(now);
    x.bytes = d->bytes;
    x.files = d->files;
    x.errors = d->errors;
    x.restarts = d->restarts;
    x.last_success_ms = d->last_success_ms;
    x.up = (d->phase == Db::Phase::Running && !d->stop) || d->phase == Db::Phase::Parked;
    x.parked = d->phase == Db::Phase::Parked;
    x.queued = d->phase == Db::Phase::Queued && !stopping;
    x.failed = d->failed;
    x.retrying = d->phase == Db::Phase::Waiting;
    if (x.failed || x.retrying) {
      std::lock_guard<std::mutex> l(d->mu);
      x.error = d->error;
    }
    x.requests[0] = d->requests.put;
    x.requests[1] = d->requests.get;
    x.requests[2] = d->requests.list;
    x.requests[3] = d->requests.del;
    m.push_back(std::move(x));
  }
  return m;
}

void write_metrics(const Options& o, std::vector<std::unique_ptr<Db>>& dbs, bool stopping) {
  if (o.metrics_file.empty()) return;
  try {
    std::string text = format_metrics(collect(dbs, stopping), o.metrics_max_dbs);
    AtomicFile a(o.metrics_file);
    write_all(a.fd(), text.data(), text.size());
    a.commit();
  } catch (const std::exception& e) {
    if (o.log) o.log("metrics", e.what());
  }
}

void join(Db& d) {
  if (d.up.joinable()) d.up.join();
  if (d.enc.joinable()) d.enc.join();
  if (d.tail.joinable()) d.tail.join();
}

}  // namespace

const char* state_of(const Metrics& m) {
  return m.failed ? "failed" : m.parked ? "parked" : m.queued ? "queued" : m.up ? "active" : "down";
}

bool worse(const Metrics& a, const Metrics& b) {
  auto rank = [](const Metrics& m) { return m.failed ? 0 : m.parked ? 4 : m.queued ? 2 : m.up ? 3 : 1; };
  if (a.failed != b.failed) return a.failed;
  if (a.lag_s != b.lag_s) return a.lag_s > b.lag_s;
  if (rank(a) != rank(b)) return rank(a) < rank(b);
  return a.name < b.name;
}

std::string format_metrics(std::vector<Metrics> all, size_t max_dbs) {
  Totals tot;
  tot.dbs = all.size();
  for (const auto& x : all) {
    for (int k = 0; k < 5; k++) tot.by_state[k] += std::strcmp(state_of(x), kStates[k]) == 0;
    tot.max_lag_s = std::max(tot.max_lag_s, x.lag_s);
  }
  std::sort(all.begin(), all.end(), worse);
  if (all.size() > max_dbs) all.resize(max_dbs);
  const std::vector<Metrics>& m = all;
  std::ostringstream s;
  s << "# HELP walsync_databases Databases watched, by state (active, queued, parked, down, failed).\n"
       "# TYPE walsync_databases gauge\n";
  for (int k = 0; k < 5; k++) s << "walsync_databases{state=\"" << kStates[k] << "\"} " << tot.by_state[k] << '\n';
  char lag[64];
  std::snprintf(lag, sizeof lag, "%.3f", tot.max_lag_s);
  s << "# HELP walsync_lag_max_seconds The largest walsync_lag_seconds of all databases.\n"
       "# TYPE walsync_lag_max_seconds gauge\nwalsync_lag_max_seconds "
    << lag << "\n# HELP walsync_databases_with_series Databases with per-database series below (--metrics-databases, the worst first).\n"
       "# TYPE walsync_databases_with_series gauge\nwalsync_databases_with_series "
    << m.size() << '\n';
  struct Def {
    const char *name, *type, *help;
  };
  static const Def defs[] = {
      {"walsync_position_txid", "gauge", "Last TXID stored on the replica."},
      {"walsync_lag_seconds", "gauge", "Age of the oldest encoded transaction not yet stored (0: caught up)."},
      {"walsync_uploaded_bytes_total", "counter", "Bytes of LTX files stored."},
      {"walsync_uploaded_files_total", "counter", "LTX files stored."},
      {"walsync_errors_total", "counter", "Pipeline failures."},
      {"walsync_restarts_total", "counter", "Pipeline restarts after a failure."},
      {"walsync_last_success_timestamp_seconds", "gauge", "Unix time of the last stored file (0: none)."},
      {"walsync_up", "gauge", "1 while the pipeline runs or the database is parked."},
      {"walsync_failed", "gauge", "1 once the pipeline failed in a way retrying cannot cure; not restarted."},
      {"walsync_parked", "gauge", "1 while parked: no pipeline, everything committed is stored."},
      {"walsync_queued", "gauge", "1 while waiting for a pipeline slot (--max-active)."},
  };
  for (int i = 0; i < int(sizeof defs / sizeof defs[0]); i++) {
    s << "# HELP " << defs[i].name << ' ' << defs[i].help << "\n# TYPE " << defs[i].name << ' '
      << defs[i].type << '\n';
    for (const auto& x : m) {
      s << defs[i].name << "{db=\"" << escape_label(x.name) << "\"} ";
      char v[64];
      switch (i) {
        case 0: std::snprintf(v, sizeof v, "%llu", (unsigned long long)x.txid); break;
        case 1: std::snprintf(v, sizeof v, "%.3f", x.lag_s); break;
        case 2: std::snprintf(v, sizeof v, "%llu", (unsigned long long)x.bytes); break;
        case 3: std::snprintf(v, sizeof v, "%llu", (unsigned long long)x.files); break;
        case 4: std::snprintf(v, sizeof v, "%llu", (unsigned long long)x.errors); break;
        case 5: std::snprintf(v, sizeof v, "%llu", (unsigned long long)x.restarts); break;
        case 6: std::snprintf(v, sizeof v, "%.3f", double(x.last_success_ms) / 1000.0); break;
        case 7: std::snprintf(v, sizeof v, "%d", x.up ? 1 : 0); break;
        case 8: std::snprintf(v, sizeof v, "%d", x.failed ? 1 : 0); break;
        case 9: std::snprintf(v, sizeof v, "%d", x.parked ? 1 : 0); break;
        default: std::snprintf(v, sizeof v, "%d", x.queued ? 1 : 0); break;
      }
      s << v << '\n';
    }
  }
  s << "# HELP walsync_requests_total Object store requests by kind (get includes HEAD; a LIST per 1000 keys).\n"
       "# TYPE walsync_requests_total counter\n";
  for (const auto& x : m)
    for (int k = 0; k < 4; k++)
      s << "walsync_requests_total{db=\"" << escape_label(x.name) << "\",kind=\"" << kRequestKinds[k] << "\"} "
        << (unsigned long long)x.requests[k] << '\n';
  return s.str();
}

bool health(const std::vector<Metrics>& m, std::string* text) {
  text->clear();
  for (const auto& x : m)
    if (x.failed || x.retrying)
      *text += x.name + (x.failed ? ": failed: " : ": retrying: ") + (x.error.empty() ? "?" : x.error) + "\n";
  return text->empty();
}

std::vector<Metrics> parse_metrics(const std::string& text, Totals* totals) {
  std::vector<Metrics> out;
  std::unordered_map<std::string, size_t> index;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    if (totals) {
      auto value = [&] { return std::strtod(line.c_str() + line.rfind(' ') + 1, nullptr); };
      if (line.compare(0, 24, "walsync_databases{state=") == 0) {
        totals->present = true;
        for (int k = 0; k < 5; k++)
          if (line.compare(25, std::strlen(kStates[k]) + 2, std::string(kStates[k]) + "\"}") == 0) {
            totals->by_state[k] = size_t(value());
            totals->dbs += size_t(value());
          }
        continue;
      }
      if (line.compare(0, 24, "walsync_lag_max_seconds ") == 0) totals->max_lag_s = value();
      if (line.compare(0, 30, "walsync_databases_with_series ") == 0) totals->listed = size_t(value());
    }
    size_t b = line.find("{db=\""), e = line.rfind("\"} ");
    if (b == std::string::npos || e == std::string::npos || e < b + 5) continue;
    std::string metric = line.substr(0, b), name, kind;
    size_t i = b + 5;
    for (; i < e; i++) {
      if (line[i] == '\\' && i + 1 < e) {
        i++;
        name += line[i] == 'n' ? '\n' : line[i];
      } else if (line[i] == '"') {
        break;  // the db label ends and another follows
      } else {
        name += line[i];
      }
    }
    if (i < e && line.compare(i, 8, "\",kind=\"") == 0) kind = line.substr(i + 8, e - i - 8);
    std::string v = line.substr(e + 3);
    auto at = index.emplace(name, out.size());  // thousands of databases: no scan per line
    if (at.second) {
      out.push_back(Metrics{});
      out.back().name = name;
    }
    Metrics* x = &out[at.first->second];
    double d = std::strtod(v.c_str(), nullptr);
    if (metric == "walsync_position_txid") x->txid = std::strtoull(v.c_str(), nullptr, 10);
    else if (metric == "walsync_lag_seconds") x->lag_s = d;
    else if (metric == "walsync_uploaded_bytes_total") x->bytes = std::strtoull(v.c_str(), nullptr, 10);
    else if (metric == "walsync_uploaded_files_total") x->files = std::strtoull(v.c_str(), nullptr, 10);
    else if (metric == "walsync_errors_total") x->errors = std::strtoull(v.c_str(), nullptr, 10);
    else if (metric == "walsync_restarts_total") x->restarts = std::strtoull(v.c_str(), nullptr, 10);
    else if (metric == "walsync_last_success_timestamp_seconds") x->last_success_ms = int64_t(d * 1000);
    else if (metric == "walsync_up") x->up = d != 0;
    else if (metric == "walsync_failed") x->failed = d != 0;
    else if (metric == "walsync_parked") x->parked = d != 0;
    else if (metric == "walsync_queued") x->queued = d != 0;
    else if (metric == "walsync_requests_total")
      for (int k = 0; k < 4; k++)
        if (kind == kRequestKinds[k]) x->requests[k] = std::strtoull(v.c_str(), nullptr, 10);
  }
  return out;
}

namespace {

// Parked databases are woken through one inotify descriptor: a watch on
// each database directory (its -wal created, removed or renamed; the
// database itself replaced) and, while parked, one on its -wal (modified).
// The -wal watch is dropped while the pipeline runs, so that a busy
// writer pays no event per write(2) for us (wal-tail has its own).
constexpr uint32_t kDirMask = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_ONLYDIR;
constexpr uint32_t kWalMask = IN_MODIFY | IN_DELETE_SELF | IN_MOVE_SELF;

std::string dir_of(const std::string& p) {
  size_t s = p.rfind('/');
  return s == std::string::npos ? "." : s == 0 ? "/" : p.substr(0, s);
}
std::string base_of(const std::string& p) {
  size_t s = p.rfind('/');
  return s == std::string::npos ? p : p.substr(s + 1);
}

bool exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0 || errno != ENOENT; }

// A database file whose header says WAL mode.
bool in_wal_mode(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  uint8_t h[20];
  ssize_t n = ::pread(fd, h, sizeof h, 0);
  ::close(fd);
  return n == sizeof h && std::memcmp(h, "SQLite format 3", 16) == 0 && h[18] == 2 && h[19] == 2;
}

// A small file's text ("" if it cannot be read); at most 4 KiB.
std::string read_small(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  char buf[4096];
  ssize_t n = ::read(fd, buf, sizeof buf);
  ::close(fd);
  return n > 0 ? std::string(buf, size_t(n)) : "";
}

class Supervisor {
 public:
  explicit Supervisor(const Options& o) : o_(o), park_after_(o.park_after_ms) {}
  ~Supervisor() {
    if (ino_ >= 0) ::close(ino_);
    if (efd_ >= 0) ::close(efd_);
  }
  Result run();

 private:
  void log(const Db& d, const std::string& m) {
    if (o_.log) o_.log(d.cfg.name, m);
  }
  bool nothing_new(Db& d, bool use_stamp);
  bool watch_wal(Db& d);
  void unwatch_wal(Db& d);
  void first_check(Db& d);
  void park(Db& d);
  void enqueue(Db& d, bool woken);
  void start(Db& d, int64_t now);
  void reap(Db& d, int64_t now);
  void read_events();
  void changed(Db& d);
  void stop_to_park(Db& d);
  // Discovery (Options::discover).
  Db* add(const Database& cfg, bool discovered);
  void watch_dir(const std::string& dir);
  void scan(size_t k, const std::string& rel, bool log_new);
  void consider(size_t k, const std::string& rel, bool log_new);
  void rescan_dirty(int64_t now);
  void gone(Db& d);
  void forget(Db& d);

  const Options& o_;
  int park_after_;
  std::vector<std::unique_ptr<Db>> dbs_;
  int ino_ = -1, efd_ = -1;
  std::unordered_map<int, Db*> wal_wd_;
  std::unordered_map<int, std::string> dir_wd_;
  std::unordered_map<std::string, int> dirs_;
  std::unordered_map<std::string, Db*> by_path_;  // directory + "/" + file name
  std::unordered_set<std::string> names_;          // of every database (replica names are unique)
  // Discovery: the directories it watches (path -> Options::discover index
  // and the path relative to its dir), those whose events ask for a rescan,
  // and the files ignored (logged once).
  std::unordered_map<std::string, std::pair<size_t, std::string>> disc_dirs_;
  std::unordered_set<std::string> dirty_;
  bool rescan_all_ = false;
  int64_t next_rescan_ = 0;
  std::unordered_map<std::string, std::string> ignored_;
  std::deque<Db*> queue_;
  std::vector<Db*> running_, waiting_;
  std::unique_ptr<http::Server> http_;
  bool stopping_ = false;
  Result res_;
};

// Nothing committed since the acknowledged position: the files are as
// parked (use_stamp), or the WAL holds nothing after that position.
bool Supervisor::nothing_new(Db& d, bool use_stamp) {
  Position ack;
  try {
    if (!read_position_file(d.cfg.state_dir + "/ack", &ack)) return false;
  } catch (const std::exception&) {
    return false;
  }
  d.txid = ack.txid;
  if (use_stamp && d.stamp == Stamp::of(d.cfg.db)) return true;
  return tail::nothing_after(d.cfg.db, ack.wal_salt1, ack.wal_salt2, ack.wal_offset);
}

bool Supervisor::watch_wal(Db& d) {
  if (ino_ < 0) return false;
  if (d.wal_wd >= 0) return true;
  int wd = inotify_add_watch(ino_, (d.cfg.db + "-wal").c_str(), kWalMask);
  if (wd < 0) return false;
  auto it = wal_wd_.find(wd);
  if (it != wal_wd_.end() && it->second != &d) {  // the same file as another database's -wal
    return false;
  }
  d.wal_wd = wd;
  wal_wd_[wd] = &d;
  return true;
}

void Supervisor::unwatch_wal(Db& d) {
  if (d.wal_wd < 0) return;
  inotify_rm_watch(ino_, d.wal_wd);
  wal_wd_.erase(d.wal_wd);
  d.wal_wd = -1;
}

// The first check of a database: cheap (its acknowledgement, the stamp of
// its last park, its WAL header), no SQLite connection. One that may have
// changed queues for a pipeline; the others park at once.
void Supervisor::first_check(Db& d) {
  mkdirs(d.cfg.state_dir);
  // A second watcher of this database refuses at once (not only when its
  // pipeline would start): the locks are taken here, then let go.
  d.state_lock = lock_state_dir(d.cfg.state_dir);
  d.ack_lock = std::make_unique<StateLock>(d.cfg.state_dir + "/ack.lock");
  d.stamp = Stamp::parse(read_small(d.cfg.state_dir + "/parked"));
  // The watch first: a write after it wakes the database; one before it
  // shows in the check.
  // A state of another replica (or none) is for the pipeline to refuse.
  bool bound = false;
  try {
    bind_state(d.cfg.state_dir, d.cfg.url);
    bound = true;
  } catch (const std::exception&) {
  }
  if (bound && park_after_ > 0 && o_.await_missing && !exists(d.cfg.db) && !exists(d.cfg.db + "-wal")) {
    // Its directory's watch sees the database and its -wal come and go;
    // it starts once it is in WAL mode (a new file alone may be empty).
    d.absent = true;
    d.phase = Db::Phase::Parked;
    log(d, "no database yet: waiting for " + d.cfg.db + "-wal");
  } else if (bound && park_after_ > 0 && watch_wal(d) && nothing_new(d, true)) {
    d.phase = Db::Phase::Parked;
    d.woken_start = true;
  } else {
    unwatch_wal(d);
    d.phase = Db::Phase::Queued;
    queue_.push_back(&d);
  }
  d.state_lock.reset();
  d.ack_lock.reset();
}

// Parks a database whose pipeline drained cleanly (or that needed none).
void Supervisor::park(Db& d) {
  d.phase = Db::Phase::Parked;
  d.lag.clear();
  d.synced = true;
  d.woken_start = true;
  d.state_lock.reset();
  d.ack_lock.reset();
  // For the next start's first check; only a hint (a torn or stale stamp
  // never matches the files), so not synced.
  std::string path = d.cfg.state_dir + "/parked", text = d.stamp.format();
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd >= 0) {
    ssize_t n = ::write(fd, text.data(), text.size());
    (void)n;
    ::close(fd);
  }
  if (o_.verbose) log(d, "parked at TXID " + hex16(d.txid));
}

void Supervisor::enqueue(Db& d, bool woken) {
  unwatch_wal(d);
  d.phase = Db::Phase::Queued;
  d.woken_start = true;
  if (woken) d.lag.woken(now_ms());
  queue_.push_back(&d);
}

void Supervisor::start(Db& d, int64_t now) {
  d.stop = 0;
  d.done = 0;
  d.parking = d.wake = false;
  d.tail_started = d.tail_done = d.stored_this_run = false;
  d.active_ms = 0;
  {
    std::lock_guard<std::mutex> l(d.mu);
    d.error.clear();
  }
  d.phase = Db::Phase::Running;
  d.started_ms = now;
  d.notify_fd = efd_;
  running_.push_back(&d);
  const Options& o = o_;
  d.up = std::thread([&d, &o] { run_pipeline(d, o); });
}

// A database's -wal changed (or was created, removed or renamed).
void Supervisor::changed(Db& d) {
  if (d.phase == Db::Phase::Running && d.parking) {
    d.wake = true;
  } else if (d.phase == Db::Phase::Parked && d.absent) {
    if (!exists(d.cfg.db + "-wal") && !in_wal_mode(d.cfg.db)) return;
    d.absent = false;
    enqueue(d, true);
    d.woken_start = false;  // its first start: logged
  } else if (d.phase == Db::Phase::Parked) {
    if (d.wal_wd >= 0 && nothing_new(d, false)) return;  // e.g. a rolled-back transaction's frames
    enqueue(d, true);
  }
}

void Supervisor::read_events() {
  if (ino_ < 0) return;
  alignas(inotify_event) char buf[16384];
  ssize_t k;
  while ((k = ::read(ino_, buf, sizeof buf)) > 0) {
    for (char* p = buf; p < buf + k;) {
      auto* ev = reinterpret_cast<inotify_event*>(p);
      p += sizeof(inotify_event) + ev->len;
      auto w = wal_wd_.find(ev->wd);
      if (w != wal_wd_.end()) {
        Db& d = *w->second;
        if (ev->mask & IN_IGNORED) {  // the -wal is gone: so is its watch
          wal_wd_.erase(w);
          d.wal_wd = -1;
        }
        changed(d);
        continue;
      }
      if (ev->mask & IN_Q_OVERFLOW) {  // events were lost: look at everything again
        rescan_all_ = true;
        for (auto& dp : dbs_)
          if (dp->phase == Db::Phase::Parked) changed(*dp);
        continue;
      }
      auto dw = dir_wd_.find(ev->wd);
      if (dw == dir_wd_.end()) continue;
      const std::string dir = dw->second;
      if (ev->mask & IN_IGNORED) {  // the directory is gone: so is its watch
        dir_wd_.erase(dw);
        dirs_.erase(dir);
        disc_dirs_.erase(dir);
        continue;
      }
      if (ev->len == 0) continue;
      std::string name(ev->name), base = name;
      bool side = false;
      for (const char* sfx : {"-wal", "-shm", "-journal"}) {
        size_t n = std::strlen(sfx);
        if (base.size() > n && base.compare(base.size() - n, n, sfx) == 0) {
          base.resize(base.size() - n);
          side = true;
          break;
        }
      }
      auto db = by_path_.find(dir + "/" + base);
      if (db != by_path_.end()) {
        Db& d = *db->second;
        if (!side && d.discovered && (ev->mask & (IN_DELETE | IN_MOVED_FROM))) gone(d);
        else if (!side || std::strcmp(name.c_str() + base.size(), "-wal") == 0) changed(d);
        continue;
      }
      // In a directory of a Discovery: a new database (or one that became
      // a WAL database: its -wal appears), a new directory, one gone.
      auto dd = disc_dirs_.find(dir);
      if (dd == disc_dirs_.end()) continue;
      const size_t k = dd->second.first;
      const std::string rel = dd->second.second.empty() ? base : dd->second.second + "/" + base;
      if ((ev->mask & IN_ISDIR) && !side) {
        if (ev->mask & (IN_CREATE | IN_MOVED_TO)) {
          scan(k, rel, true);
        } else {  // removed or moved away: what was found under it
          const std::string sub = dir + "/" + base;
          for (auto it = disc_dirs_.begin(); it != disc_dirs_.end();) {
            if (it->first == sub || it->first.compare(0, sub.size() + 1, sub + "/") == 0) {
              auto w = dirs_.find(it->first);
              if (w != dirs_.end()) {
                if (w->second >= 0) inotify_rm_watch(ino_, w->second), dir_wd_.erase(w->second);
                dirs_.erase(w);
              }
              it = disc_dirs_.erase(it);
            } else {
              ++it;
            }
          }
          std::vector<Db*> under;
          for (auto& dp : dbs_)
            if (dp->discovered && dp->cfg.db.compare(0, sub.size() + 1, sub + "/") == 0) under.push_back(dp.get());
          for (Db* d : under) gone(*d);
        }
      } else if (ev->mask & (IN_CREATE | IN_MOVED_TO | IN_MODIFY | IN_DELETE)) {
        consider(k, rel, true);
      }
    }
  }
}

// ---- discovery ----

// A database to watch from now on (not yet checked).
Db* Supervisor::add(const Database& cfg, bool discovered) {
  dbs_.push_back(std::make_unique<Db>());
  Db& d = *dbs_.back();
  d.cfg = cfg;
  d.discovered = discovered;
  d.phase = Db::Phase::Waiting;  // not in any list until first_check
  std::string dir = dir_of(d.cfg.db);
  by_path_[dir + "/" + base_of(d.cfg.db)] = &d;
  names_.insert(d.cfg.name);
  watch_dir(dir);
  return &d;
}

void Supervisor::watch_dir(const std::string& dir) {
  if (ino_ < 0 || dirs_.count(dir)) return;
  int wd = inotify_add_watch(ino_, dir.c_str(), kDirMask);
  if (wd < 0 && errno == ENOSPC && o_.log)
    o_.log("watch", dir + ": inotify watch limit reached (fs.inotify.max_user_watches): found by the rescan only");
  dirs_[dir] = wd;
  if (wd >= 0) dir_wd_[wd] = dir;
}

// Walks discover[k].dir/rel: every directory that can hold a match is
// watched, every match considered.
void Supervisor::scan(size_t k, const std::string& rel, bool log_new) {
  const Discovery& x = o_.discover[k];
  discover::walk(
      x.dir, rel, x.pattern,
      [&](const std::string& r) {
        std::string dir = r.empty() ? x.dir : x.dir + "/" + r;
        watch_dir(dir);
        disc_dirs_[dir] = {k, r};
      },
      [&](const std::string& r) { consider(k, r, log_new); },
      [&](const std::string& r, int err) {
        std::string dir = r.empty() ? x.dir : x.dir + "/" + r;
        if (err != ENOENT && ignored_.emplace(dir, std::strerror(err)).second && o_.log)
          o_.log("watch", dir + ": " + std::strerror(err) + ": not searched");
      });
}

// A path under discover[k].dir that may match: watched if it is a WAL
// database; otherwise said once (a file being created is looked at again
// on its next event).
void Supervisor::consider(size_t k, const std::string& rel, bool log_new) {
  const Discovery& x = o_.discover[k];
  const std::string path = x.dir + "/" + rel;
  if (by_path_.count(dir_of(path) + "/" + base_of(path))) return;
  if (::fnmatch(x.pattern.c_str(), rel.c_str(), FNM_PATHNAME) != 0) return;
  std::string why;
  discover::Kind kind = discover::classify(path, &why);
  if (kind != discover::Kind::Wal) {
    if (kind == discover::Kind::NotYet || (kind == discover::Kind::Skipped && why == std::strerror(ENOENT))) {
      ignored_.erase(path);
      return;
    }
    auto it = ignored_.find(path);
    if ((it == ignored_.end() || it->second != why) && o_.log) o_.log("watch", path + ": " + why + ": ignored");
    ignored_[path] = why;
    return;
  }
  ignored_.erase(path);
  Database cfg = x.make(path, rel);
  if (names_.count(cfg.name)) {
    if (ignored_.emplace(path, "name").second && o_.log)
      o_.log("watch", path + ": replica name '" + cfg.name + "' is taken by another database: ignored");
    return;
  }
  Db* d = add(cfg, true);
  if (log_new) log(*d, "found " + path);
  try {
    first_check(*d);
  } catch (const std::exception& e) {
    d->state_lock.reset();
    d->ack_lock.reset();
    d->failed = true;
    d->phase = Db::Phase::Failed;
    d->errors++;
    log(*d, std::string("failed: ") + e.what() + "; not restarting");
  }
}

// Its file may be gone: forgotten if it is.
void Supervisor::gone(Db& d) {
  struct stat st {};
  if (::lstat(d.cfg.db.c_str(), &st) == 0 && S_ISREG(st.st_mode)) return;
  if (d.removed) return;
  d.removed = true;
  log(d, d.cfg.db + " is gone: stopped; its replica stays");
  if (d.phase == Db::Phase::Running) {
    d.stop = 1;  // forgotten when reaped
    return;
  }
  forget(d);
}

// Drops a database that runs no pipeline.
void Supervisor::forget(Db& d) {
  unwatch_wal(d);
  d.state_lock.reset();
  d.ack_lock.reset();
  queue_.erase(std::remove(queue_.begin(), queue_.end(), &d), queue_.end());
  waiting_.erase(std::remove(waiting_.begin(), waiting_.end(), &d), waiting_.end());
  by_path_.erase(dir_of(d.cfg.db) + "/" + base_of(d.cfg.db));
  names_.erase(d.cfg.name);
  dbs_.erase(std::find_if(dbs_.begin(), dbs_.end(), [&](const std::unique_ptr<Db>& p) { return p.get() == &d; }));
}

// The safety net: every Discovery walked again, every database found
// checked for its file.
void Supervisor::rescan_dirty(int64_t now) {
  if (o_.discover.empty() || (!rescan_all_ && now < next_rescan_)) return;
  rescan_all_ = false;
  next_rescan_ = now + o_.rescan_ms;
  std::vector<Db*> found;
  for (auto& dp : dbs_)
    if (dp->discovered && !dp->removed) found.push_back(dp.get());
  for (Db* d : found) gone(*d);
  for (size_t k = 0; k < o_.discover.size(); k++) scan(k, "", true);
}

// Quiet and caught up (or its slot is wanted): stop the pipeline; it
// drains (the tail copies every committed frame first) and parks. The -wal
// watch is set before the stop, so a commit the tail's last copy missed
// shows as an event (d.wake) before the park is decided.
void Supervisor::stop_to_park(Db& d) {
  if (!watch_wal(d)) return;  // no watch, no wake-up: keep running
  d.parking = true;
  d.wake = false;
  d.stop = 1;
}

void Supervisor::reap(Db& d, int64_t now) {
  join(d);
  running_.erase(std::find(running_.begin(), running_.end(), &d));
  if (d.removed) {  // its file is gone (gone()): whatever the run's end said
    forget(d);
    return;
  }
  std::string err;
  bool permanent;
  Kind kind;
  {
    std::lock_guard<std::mutex> l(d.mu);
    err = d.error;
    permanent = d.error_permanent;
    kind = d.error_kind;
  }
  if (permanent) {
    // Retrying cannot cure it (not in WAL mode, no such file, a state of
    // another replica, damaged data): stop this database, say why once;
    // the others go on.
    unwatch_wal(d);
    d.state_lock.reset();
    d.ack_lock.reset();
    d.errors++;
    d.failed = true;
    d.phase = Db::Phase::Failed;
    d.failed_kind = kind;
    if (kind == Kind::Integrity) res_.status = 3;
    else if (res_.status == 0) res_.status = 1;
    d.lag.restart();
    log(d, "failed: " + err + "; not restarting");
  } else if (stopping_) {
    unwatch_wal(d);
    d.phase = Db::Phase::Queued;  // not restarted: we are shutting down
    log(d, err.empty() ? "drained at TXID " + hex16(d.txid) : "stopped at TXID " + hex16(d.txid) + " after " + err);
  } else if (err.empty() && d.parking) {
    // Drained: everything the tail copied is stored. Parked, unless a
    // change arrived after the -wal watch was set (then queued again, at
    // the back: a yielded slot goes to the databases that waited).
    d.stamp = Stamp::of(d.cfg.db);  // before the events: a later write moves it
    read_events();
    d.failures = 0;
    if (!d.wake || nothing_new(d, false)) {
      park(d);
    } else {
      d.synced = true;
      enqueue(d, true);
    }
  } else {
    unwatch_wal(d);
    d.state_lock.reset();
    d.ack_lock.reset();
    if (err.empty()) err = "pipeline ended";
    d.errors++;
    d.restarts++;
    d.woken_start = false;
    if (d.stored_this_run || now - d.started_ms >= o_.healthy_ms) d.failures = 0;
    int64_t delay = o_.backoff_min_ms;
    for (int i = 0; i < d.failures && delay < o_.backoff_max_ms; i++) delay *= 2;
    if (delay > o_.backoff_max_ms) delay = o_.backoff_max_ms;
    d.failures++;
    d.next_ms = now + delay;
    d.phase = Db::Phase::Waiting;
    waiting_.push_back(&d);
    d.lag.restart();
    log(d, "failed: " + err + "; restarting in " + std::to_string(delay) + " ms");
  }
}

Result Supervisor::run() {
  efd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (efd_ < 0) fail_errno("eventfd");
  if (park_after_ > 0 || !o_.discover.empty()) {
    ino_ = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (ino_ < 0) {
      if (o_.log)
        o_.log("watch", std::string("inotify: ") + std::strerror(errno) +
                            ": databases are not parked, new ones found by the rescan only");
      park_after_ = 0;
    }
  }
  for (const auto& c : o_.dbs) add(c, false);
  // One watcher per database; the first check of each, cheap, before any
  // pipeline starts (so 10,000 databases do not all open SQLite at once).
  const int64_t t0 = mono_ms();
  for (auto& dp : dbs_) first_check(*dp);
  // Then the databases of each Discovery (checked as they are found).
  next_rescan_ = t0 + o_.rescan_ms;
  for (size_t k = 0; k < o_.discover.size(); k++) scan(k, "", false);
  size_t parked = 0;
  for (auto& dp : dbs_) parked += dp->phase == Db::Phase::Parked;
  if (o_.log)
    o_.log("watch", std::to_string(dbs_.size()) + " database" + (dbs_.size() == 1 ? "" : "s") + " checked in " +
                        std::to_string(mono_ms() - t0) + " ms: " + std::to_string(parked) +
                        " parked (nothing new since their acknowledgement), " + std::to_string(queue_.size()) +
                        " to start");
  if (o_.started) o_.started();
  if (o_.http_fd >= 0)
    http_ = std::make_unique<http::Server>(o_.http_fd, [this](const std::string& path) {
      http::Response r;
      if (path == "/metrics") {
        r.content_type = "text/plain; version=0.0.4; charset=utf-8";
        r.body = format_metrics(collect(dbs_, stopping_), o_.metrics_max_dbs);
      } else if (path == "/healthz") {
        r.status = health(collect(dbs_, stopping_), &r.body) ? 200 : 503;
        if (r.status == 200) r.body = "ok\n";
      } else {
        r.status = 404;
        r.body = "not found (/metrics, /healthz)\n";
      }
      return r;
    });
  int64_t next_metrics = 0, deadline = 0;
  std::vector<pollfd> fds;
  for (;;) {
    int64_t now = mono_ms();
    read_events();
    if (!stopping_) rescan_dirty(now);
    for (size_t i = 0; i < running_.size();) {
      Db* d = running_[i];
      if (d->done == 3) {
        reap(*d, now);  // erases it from running_
        continue;
      }
      if (d->stop && d->tail_started && !d->tail_done) pthread_kill(d->tail_handle, SIGUSR1);
      i++;
    }
    for (size_t i = 0; i < waiting_.size();) {
      Db* d = waiting_[i];
      if (stopping_ || now < d->next_ms) {
        i++;
        continue;
      }
      waiting_.erase(waiting_.begin() + long(i));
      d->phase = Db::Phase::Queued;
      queue_.push_back(d);
    }
    if (stopping_ && o_.drain_queued) {
      // Each runs once: its tail copies everything committed, then stops.
      while (int(running_.size()) < std::max(1, o_.max_active) && !queue_.empty()) {
        Db* d = queue_.front();
        queue_.pop_front();
        if (d->phase != Db::Phase::Queued) continue;
        start(*d, now);
        d->stop = 1;
      }
    }
    if (!stopping_) {
      // Park the quiet ones; when databases wait for a slot, the one that
      // has run longest (past its slice) yields.
      Db* oldest = nullptr;
      for (Db* d : running_) {
        if (d->stop) continue;
        int64_t quiet = std::max<int64_t>(d->active_ms, d->started_ms);
        if (park_after_ > 0 && d->tail_started && now - quiet >= park_after_ && !d->lag.pending())
          stop_to_park(*d);
        else if (!oldest || d->started_ms < oldest->started_ms)
          oldest = d;
      }
      if (!queue_.empty() && int(running_.size()) >= o_.max_active && oldest && ino_ >= 0 &&
          now - oldest->started_ms >= o_.slice_ms) {
        oldest->yielding = true;
        stop_to_park(*oldest);
      }
      while (int(running_.size()) < std::max(1, o_.max_active) && !queue_.empty()) {
        Db* d = queue_.front();
        queue_.pop_front();
        if (d->phase == Db::Phase::Queued) start(*d, now);
      }
    }
    if (now >= next_metrics) {
      write_metrics(o_, dbs_, stopping_);
      next_metrics = now + o_.metrics_interval_ms;
    }
    size_t failed = 0;
    for (auto& dp : dbs_) failed += dp->failed;
    if (!stopping_ && failed > 0 &&
        ((failed == dbs_.size() && o_.discover.empty()) || o_.stop_on_failure)) {
      stopping_ = true;  // nothing left to back up (nor to be found), or not all of it
      deadline = now + o_.drain_ms;
      for (Db* d : running_) d->stop = 1;
    }
    if (stopping_) {
      bool to_drain = false;
      for (Db* d : queue_) to_drain = to_drain || (o_.drain_queued && d->phase == Db::Phase::Queued);
      if (running_.empty() && !to_drain) {
        write_metrics(o_, dbs_, stopping_);
        return res_;
      }
      if (now >= deadline) {
        for (Db* d : running_) log(*d, "not drained within " + std::to_string(o_.drain_ms) + " ms");
        write_metrics(o_, dbs_, stopping_);
        res_.drained = false;  // their threads still run: run() leaves us to them, the caller exits
        if (res_.status == 0) res_.status = 1;
        return res_;
      }
    }
    // Wait for an event, a pipeline's end, a stop, or the next deadline.
    bool kicking = false;
    for (Db* d : running_) kicking = kicking || (d->stop && !d->tail_done);
    int64_t timeout = kicking ? 20 : !running_.empty() ? 250 : 1000;
    timeout = std::min<int64_t>(timeout, std::max<int64_t>(0, next_metrics - now));
    for (Db* d : waiting_) timeout = std::min<int64_t>(timeout, std::max<int64_t>(0, d->next_ms - now));
    fds.assign({{efd_, POLLIN, 0}, {ino_, POLLIN, 0}, {o_.stop_fd, POLLIN, 0}});  // poll skips fds < 0
    if (http_) {
      http_->pollfds(&fds);
      int t = http_->timeout_ms(now);
      if (t >= 0) timeout = std::min<int64_t>(timeout, t);
    }
    int ready = ::poll(fds.data(), fds.size(), int(timeout));
    if (ready > 0 && (fds[0].revents & POLLIN)) {
      uint64_t v;
      ssize_t r = ::read(efd_, &v, sizeof v);
      (void)r;
    }
    if (http_) http_->step(fds.data() + 3, fds.size() - 3, mono_ms());
    // Also while stopping: a signal left pending would keep stop_fd
    // readable, and poll() would not wait until the drain ends.
    if (o_.wait_stop && o_.wait_stop(0) && !stopping_) {
      stopping_ = true;
      deadline = mono_ms() + o_.drain_ms;
      for (Db* d : running_) d->stop = 1;
      if (o_.drain_queued) read_events();  // changes the stop overtook: queued, to drain
    }
  }
}

}  // namespace

Result run(const Options& o) {
  struct sigaction sa {};
  sa.sa_handler = on_wake;  // no SA_RESTART: the tail's poll() returns EINTR
  sigemptyset(&sa.sa_mask);
  sigaction(SIGUSR1, &sa, nullptr);
  // Owned past the return when pipelines were abandoned (Result::drained).
  auto* s = new Supervisor(o);
  Result r = s->run();
  if (r.drained) delete s;
  return r;
}

}  // namespace ltx::watch
