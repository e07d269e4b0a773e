// watch.cpp - many backup pipelines in one process (see ltx/watch.h).
#include "ltx/watch.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <memory>
#include <mutex>
#include <sstream>
#include <thread>
#include <utility>

#include "ltx/bytes.h"
#include "ltx/encode.h"
#include "ltx/error.h"
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

struct Db {
  Database cfg;
  volatile std::sig_atomic_t stop = 0;
  std::atomic<int> done{0};            // stages finished this run (3: all)
  std::atomic<bool> tail_started{false}, tail_done{false}, stored_this_run{false};
  pthread_t tail_handle{};
  std::thread up, enc, tail;           // up: set-up and upload; starts enc and tail
  std::mutex mu;
  std::string error;                   // the run's first failure (a permanent one first)
  bool error_permanent = false;        // retrying cannot cure it (Error::permanent)
  Kind error_kind = Kind::Runtime;
  bool running = false;
  bool failed = false;                 // stopped for good after a permanent failure
  Kind failed_kind = Kind::Runtime;
  int64_t started_ms = 0, next_ms = 0;
  int failures = 0;
  std::atomic<uint64_t> txid{0}, bytes{0}, files{0}, errors{0}, restarts{0};
  std::atomic<int64_t> last_success_ms{0};
  RequestCounts requests;              // of every run's store
  LagTracker lag;
  std::unique_ptr<StateLock> state_lock, ack_lock;  // held for the whole watch

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
    FdWriter w(out.fd, 8 * 1024);
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
    d.state_lock->renew();  // the directory may have been removed under us
    d.ack_lock->renew();
    bind_state(d.cfg.state_dir, d.cfg.url);
    sync_ack(*store, loc, ack);
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
    if (o.log) o.log(d.cfg.name, "started at TXID " + hex16(d.txid) + ", " + where);

    int a[2], b[2];
    if (::pipe2(a, O_CLOEXEC) != 0) fail_errno("pipe");
    Fd ar(a[0]), aw(a[1]);
    if (::pipe2(b, O_CLOEXEC) != 0) fail_errno("pipe");
    Fd br(b[0]), bw(b[1]);
    up_in = std::move(br);
    d.enc = std::thread([&d, st = std::move(state), ack, adopt, r = std::move(ar), w = std::move(bw)]() mutable {
      run_encoder(d, std::move(st), ack, adopt, std::move(r), std::move(w));
      d.done++;
    });
    stages++;
    d.tail = std::thread([&d, &o, to, w = std::move(aw)]() mutable {
      run_tail(d, o, to, std::move(w));
      d.done++;
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
  d.done += 3 - stages + 1;
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

void write_metrics(const Options& o, std::vector<std::unique_ptr<Db>>& dbs) {
  if (o.metrics_file.empty()) return;
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
    x.up = d->running && !d->stop;
    x.failed = d->failed;
    x.requests[0] = d->requests.put;
    x.requests[1] = d->requests.get;
    x.requests[2] = d->requests.list;
    x.requests[3] = d->requests.del;
    m.push_back(x);
  }
  try {
    std::string text = format_metrics(m);
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
  d.running = false;
}

}  // namespace

std::string format_metrics(const std::vector<Metrics>& m) {
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
      {"walsync_up", "gauge", "1 while the pipeline runs."},
      {"walsync_failed", "gauge", "1 once the pipeline failed in a way retrying cannot cure; not restarted."},
  };
  std::ostringstream s;
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
        default: std::snprintf(v, sizeof v, "%d", x.failed ? 1 : 0); break;
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

std::vector<Metrics> parse_metrics(const std::string& text) {
  std::vector<Metrics> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
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
    Metrics* x = nullptr;
    for (auto& m : out)
      if (m.name == name) x = &m;
    if (!x) {
      out.push_back(Metrics{});
      x = &out.back();
      x->name = name;
    }
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
    else if (metric == "walsync_requests_total")
      for (int k = 0; k < 4; k++)
        if (kind == kRequestKinds[k]) x->requests[k] = std::strtoull(v.c_str(), nullptr, 10);
  }
  return out;
}

Result run(const Options& o) {
  struct sigaction sa {};
  sa.sa_handler = on_wake;  // no SA_RESTART: the tail's poll() returns EINTR
  sigemptyset(&sa.sa_mask);
  sigaction(SIGUSR1, &sa, nullptr);

  std::vector<std::unique_ptr<Db>> dbs;
  for (const auto& c : o.dbs) {
    dbs.push_back(std::make_unique<Db>());
    dbs.back()->cfg = c;
  }
  // One watcher per database: the state directory and its acknowledgement
  // are locked for the whole run (a second watch, wal-tail --ack or
  // ltx-encode --state on them refuses, naming this pid).
  for (auto& d : dbs) {
    mkdirs(d->cfg.state_dir);
    d->state_lock = lock_state_dir(d->cfg.state_dir);
    d->ack_lock = std::make_unique<StateLock>(d->cfg.state_dir + "/ack.lock");
  }
  if (o.log) o.log("watch", std::to_string(dbs.size()) + " database" + (dbs.size() == 1 ? "" : "s"));
  int64_t next_metrics = 0, deadline = 0;
  bool stopping = false;
  Result res;
  for (;;) {
    int64_t now = mono_ms();
    bool any_running = false, all_failed = true;
    for (auto& dp : dbs) {
      Db& d = *dp;
      if (d.running && d.done == 3) {
        join(d);
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
          // Retrying cannot cure it (not in WAL mode, no such file, a
          // state of another replica, damaged data): stop this database,
          // say why once; the others go on.
          d.errors++;
          d.failed = true;
          d.failed_kind = kind;
          if (kind == Kind::Integrity) res.status = 3;
          else if (res.status == 0) res.status = 1;
          d.lag.restart();
          if (o.log) o.log(d.cfg.name, "failed: " + err + "; not restarting");
        } else if (stopping) {
          if (o.log) o.log(d.cfg.name, err.empty() ? "drained at TXID " + hex16(d.txid)
                                                   : "stopped at TXID " + hex16(d.txid) + " after " + err);
        } else {
          if (err.empty()) err = "pipeline ended";
          d.errors++;
          d.restarts++;
          if (d.stored_this_run || now - d.started_ms >= o.healthy_ms) d.failures = 0;
          int64_t delay = o.backoff_min_ms;
          for (int i = 0; i < d.failures && delay < o.backoff_max_ms; i++) delay *= 2;
          if (delay > o.backoff_max_ms) delay = o.backoff_max_ms;
          d.failures++;
          d.next_ms = now + delay;
          d.lag.restart();
          if (o.log) o.log(d.cfg.name, "failed: " + err + "; restarting in " + std::to_string(delay) + " ms");
        }
      }
      if (d.running && d.stop && d.tail_started && !d.tail_done) pthread_kill(d.tail_handle, SIGUSR1);
      if (!stopping && !d.running && !d.failed && now >= d.next_ms) {
        d.stop = 0;
        d.done = 0;
        d.tail_started = d.tail_done = d.stored_this_run = false;
        {
          std::lock_guard<std::mutex> l(d.mu);
          d.error.clear();
        }
        d.running = true;
        d.started_ms = now;
        d.up = std::thread([&d, &o] { run_pipeline(d, o); });
      }
      any_running = any_running || d.running;
      all_failed = all_failed && d.failed;
    }
    if (now >= next_metrics) {
      write_metrics(o, dbs);
      next_metrics = now + o.metrics_interval_ms;
    }
    if (all_failed && !dbs.empty()) stopping = true;  // nothing left to back up
    if (stopping) {
      if (!any_running) {
        write_metrics(o, dbs);
        return res;
      }
      if (now >= deadline) {
        for (auto& dp : dbs)
          if (dp->running && o.log) o.log(dp->cfg.name, "not drained within " + std::to_string(o.drain_ms) + " ms");
        write_metrics(o, dbs);
        for (auto& dp : dbs)
          if (dp->running) dp.release();  // its threads still run: the caller exits
        res.drained = false;
        if (res.status == 0) res.status = 1;
        return res;
      }
      struct timespec ts{0, 20 * 1000000};
      nanosleep(&ts, nullptr);
      continue;
    }
    if (o.wait_stop && o.wait_stop(200)) {
      stopping = true;
      deadline = mono_ms() + o.drain_ms;
      for (auto& dp : dbs) dp->stop = 1;
    }
  }
}

}  // namespace ltx::watch
