// walsync - the porcelain: back up many databases from one process (watch),
// and restore, follow, snapshot, compact, retain, verify, list and report on
// replicas by composing the plumbing tools. Policy only: the in-process
// pipelines are ltx/watch.h, the protocol ltx/pipeline.h.
#include <limits.h>
#include <curl/curl.h>
#include <malloc.h>
#include <signal.h>
#include <sqlite3.h>
#include <poll.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "cli.h"
#include "ltx/apply.h"
#include "ltx/bytes.h"
#include "ltx/discover.h"
#include "ltx/encode.h"
#include "ltx/fetch.h"
#include "ltx/follow.h"
#include "ltx/http.h"
#include "ltx/replica.h"
#include "ltx/watch.h"
#include "s3common.h"
#include "walsync-config.h"

namespace {

using Argv = std::vector<std::string>;

// A plumbing tool: beside this executable if it is there, else on PATH.
std::string tool(const std::string& name) {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n > 0) {
    std::string p(buf, size_t(n));
    p = p.substr(0, p.rfind('/') + 1) + name;
    if (::access(p.c_str(), X_OK) == 0) return p;
  }
  return name;
}
bool have_tool(const std::string& name) {
  std::string p = tool(name);
  if (p.find('/') != std::string::npos) return true;
  std::string path = std::getenv("PATH") ? std::getenv("PATH") : "";
  std::stringstream ss(path);
  std::string d;
  while (std::getline(ss, d, ':'))
    if (!d.empty() && ::access((d + "/" + name).c_str(), X_OK) == 0) return true;
  return false;
}

volatile std::sig_atomic_t g_stop = 0;
pid_t g_children[4];
int g_nchildren = 0;
void on_stop(int) {
  g_stop = 1;
  for (int i = 0; i < g_nchildren; i++) ::kill(g_children[i], SIGTERM);
}

Argv operator+(Argv a, const Argv& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

int wait_status(pid_t pid) {
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

// In a child between fork and exec: it gets `deathsig` when we die (checked
// against our dying before prctl: `parent` is our pid from before the
// fork), no blocked signal, and the default action for SIGPIPE, SIGINT,
// SIGTERM and, with `hup` (the application, to which we forward it),
// SIGHUP: an ignored signal stays ignored across exec, and a shell starts
// background jobs with SIGINT ignored.
void in_child(pid_t parent, int deathsig, bool hup) {
  ::prctl(PR_SET_PDEATHSIG, deathsig);
  if (::getppid() != parent) ::_exit(128 + deathsig);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  for (int sig : {SIGPIPE, SIGINT, SIGTERM}) ::signal(sig, SIG_DFL);
  if (hup) ::signal(SIGHUP, SIG_DFL);
}

// Runs cmds as a pipeline (stdin of the first and stdout of the last are
// ours, or out_fd). Each stage dies with us (PR_SET_PDEATHSIG). With
// start_on_data, a stage starts only once the previous one has written
// something: a producer that fails before its first byte is reported alone,
// not by a second, misleading line from its reader ("no LTX data").
// Returns the status of the first stage that failed (128+N for signal N;
// a usage or integrity status before a runtime one), passing over stages
// killed by SIGPIPE when another failed: those only saw their reader go away. err_fd: the stages' standard error.
int run_pipeline(const std::vector<Argv>& cmds, int out_fd = 1, bool start_on_data = false, int err_fd = 2) {
  std::vector<pid_t> pids;
  std::vector<int> done;  // statuses collected early, by pid index (-1: not yet)
  const pid_t self = ::getpid();
  int in = 0;
  for (size_t i = 0; i < cmds.size(); i++) {
    if (i > 0 && start_on_data) {
      struct pollfd pf = {in, POLLIN, 0};
      while (::poll(&pf, 1, -1) < 0 && errno == EINTR) {
      }
      int avail = 0;
      if (::ioctl(in, FIONREAD, &avail) == 0 && avail == 0) {  // EOF before any data
        done.resize(pids.size(), -1);
        done.back() = wait_status(pids.back());
        if (done.back() != 0) break;  // its own line said why; no reader to add another
      }
    }
    int p[2] = {-1, 1};
    if (i + 1 < cmds.size() && ::pipe(p) != 0) ltx::fail_errno("pipe");
    pid_t pid = ::fork();
    if (pid < 0) ltx::fail_errno("fork");
    if (pid == 0) {
      in_child(self, SIGTERM, false);
      if (in != 0) ::dup2(in, 0), ::close(in);
      int out = i + 1 < cmds.size() ? p[1] : out_fd;
      if (out != 1) ::dup2(out, 1);
      if (err_fd != 2) ::dup2(err_fd, 2);
      if (i + 1 < cmds.size()) ::close(p[0]), ::close(p[1]);
      std::vector<char*> av;
      std::string exe = tool(cmds[i][0]);
      av.push_back(const_cast<char*>(exe.c_str()));
      for (size_t k = 1; k < cmds[i].size(); k++) av.push_back(const_cast<char*>(cmds[i][k].c_str()));
      av.push_back(nullptr);
      ::execvp(av[0], av.data());
      std::fprintf(stderr, "walsync: exec %s: %s\n", av[0], std::strerror(errno));
      ::_exit(127);
    }
    pids.push_back(pid);
    if (g_nchildren < 4) g_children[g_nchildren++] = pid;
    if (in != 0) ::close(in);
    in = 0;
    if (i + 1 < cmds.size()) ::close(p[1]), in = p[0];
  }
  if (in != 0) ::close(in);
  done.resize(pids.size(), -1);
  int rc = 0, piped = 0;
  for (size_t i = 0; i < pids.size(); i++) {
    int r = done[i] >= 0 ? done[i] : wait_status(pids[i]);
    // A usage or integrity failure of any stage names the cause better
    // than the runtime failure it leaves its neighbour with.
    bool meaningful = r == cli::kUsage || r == cli::kIntegrity;
    if (r == 128 + SIGPIPE) {
      if (piped == 0) piped = r;
    } else if (rc == 0 || (meaningful && rc != cli::kUsage && rc != cli::kIntegrity)) {
      rc = r;
    }
  }
  g_nchildren = 0;
  return rc ? rc : piped;
}

// The first line of one command's stdout, trimmed; quiet: its stderr dropped.
std::string capture(const Argv& cmd, int* rc, bool quiet = false) {
  char tmpl[] = "/tmp/walsync-XXXXXX";
  int fd = ::mkstemp(tmpl);
  if (fd < 0) ltx::fail_errno("mkstemp");
  ::unlink(tmpl);
  int null = quiet ? ::open("/dev/null", O_WRONLY | O_CLOEXEC) : -1;
  *rc = run_pipeline({cmd}, fd, false, null >= 0 ? null : 2);
  if (null >= 0) ::close(null);
  std::string out(256, '\0');
  ssize_t n = ::pread(fd, &out[0], out.size(), 0);
  ::close(fd);
  out.resize(n > 0 ? size_t(n) : 0);
  return wscfg::trim(out.substr(0, out.find('\n')));
}

// Exports S3 flags to the environment of the plumbing we run.
void export_s3(const s3cli::Flags& f) {
  if (!f.endpoint.empty()) ::setenv("AWS_ENDPOINT_URL_S3", f.endpoint.c_str(), 1);
  if (!f.region.empty()) ::setenv("AWS_REGION", f.region.c_str(), 1);
  if (!f.access_key.empty()) ::setenv("AWS_ACCESS_KEY_ID", f.access_key.c_str(), 1);
  if (!f.secret_key.empty()) ::setenv("AWS_SECRET_ACCESS_KEY", f.secret_key.c_str(), 1);
  if (!f.session_token.empty()) ::setenv("AWS_SESSION_TOKEN", f.session_token.c_str(), 1);
  if (!f.ca_bundle.empty()) ::setenv("AWS_CA_BUNDLE", f.ca_bundle.c_str(), 1);
  if (!f.age_identity.empty()) ::setenv("WALSYNC_AGE_IDENTITY_FILE", f.age_identity.c_str(), 1);
  if (!f.age_recipients_file.empty()) ::setenv("WALSYNC_AGE_RECIPIENTS_FILE", f.age_recipients_file.c_str(), 1);
  if (!f.age_passphrase_file.empty()) ::setenv("WALSYNC_AGE_PASSPHRASE_FILE", f.age_passphrase_file.c_str(), 1);
  std::string recips;
  for (const auto& r : f.age_recipients) recips += (recips.empty() ? "" : ",") + r;
  if (!recips.empty()) ::setenv("WALSYNC_AGE_RECIPIENT", recips.c_str(), 1);
}

// The S3 flags that are not in the environment, for the plumbing we run
// (every tool that talks to a replica takes them; see s3cli::add_flags).
Argv s3_args(const s3cli::Flags& f) {
  Argv a = {"--retries", std::to_string(f.retries), "--connect-timeout", std::to_string(f.connect_timeout),
            "--timeout", std::to_string(f.timeout), "--addressing", f.addressing};
  if (f.verbose) a.push_back("-v");
  return a;
}
// cmd, then the S3 flags, then args.
Argv s3_cmd(const std::string& cmd, const s3cli::Flags& f, const Argv& args) { return Argv{cmd} + s3_args(f) + args; }

std::string join_url(std::string base, const std::string& name) {
  while (!base.empty() && base.back() == '/') base.pop_back();
  return base + "/" + name;
}

struct Common {
  std::string config, bucket;
  s3cli::Flags s3;
  wscfg::Config cfg;
  void load() {
    if (!config.empty()) cfg = wscfg::parse_file(config);
    if (bucket.empty()) bucket = cfg.url;
    if (s3.endpoint.empty()) s3.endpoint = cfg.endpoint;
    if (s3.region.empty()) s3.region = cfg.region;
    if (s3.age_recipients_file.empty()) s3.age_recipients_file = cfg.age_recipients_file;
    if (s3.age_identity.empty()) s3.age_identity = cfg.age_identity;
    export_s3(s3);
  }
  // NAME (a database name, a configured database, or a database path) or URL.
  std::string resolve(const std::string& arg) {
    if (arg.find("://") != std::string::npos) return arg;
    for (const auto& d : cfg.dbs)
      for (const auto& p : wscfg::expand(d.path)) {
        std::string n = d.name.empty() ? wscfg::name_of(p) : d.name;
        if (n == arg || p == arg) return !d.url.empty() ? d.url : join_url(need_bucket(), n);
      }
    // A database found under the configuration's dir, or the replica name
    // of one found under a --dir ("t1/app": a '/' and no file by that name).
    struct stat st {};
    std::string dir = cfg.dir;
    while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
    if (!dir.empty() && arg.size() > dir.size() + 1 && arg.compare(0, dir.size() + 1, dir + "/") == 0)
      return join_url(need_bucket(), wscfg::name_under(arg.substr(dir.size() + 1)));
    if (arg.find('/') != std::string::npos && wscfg::name_of(arg) == arg.substr(arg.rfind('/') + 1) &&
        ::stat(arg.c_str(), &st) != 0)
      return join_url(need_bucket(), arg);
    return join_url(need_bucket(), wscfg::name_of(arg));
  }
  std::string need_bucket() {
    if (bucket.empty()) ltx::fail(ltx::Kind::Usage, "no replica URL: give -b URL (or url = in the config)");
    return bucket;
  }
};

void add_common(CLI::App* c, Common& o) {
  c->add_option("-c,--config", o.config, "configuration file (see walsync(1), CONFIGURATION)");
  c->add_option("-b,--bucket", o.bucket, "replica base URL: database NAME replicates to URL/NAME");
  s3cli::add_flags(*c, o.s3);
}

long long duration_or(const std::string& s, long long dflt, const char* what) {
  if (s.empty()) return dflt;
  return cli::duration_ms(what, s, 0, INT32_MAX);  // milliseconds in an int
}

void log_line(const std::string& name, const std::string& event) {
  std::fprintf(stderr, "walsync: %s: %s\n", name.c_str(), event.c_str());
}

// ---- restore, replicate, snapshot ----
struct Restore {
  std::string target, out, txid, timestamp;
  bool if_not_exists = false, litestream_v3 = false;
  int parallel = 0;  // s3-get --parallel (0: its default)
};

// The restore pipeline into r.out: s3-get (ls3-get for a Litestream v0.3
// replica) | ltx-apply, falling back to older snapshots.
int restore_into(Common& c, Restore& r, const std::string& url, Argv args) {
  Argv apply = {"ltx-apply", r.out};
  if (c.s3.verbose) apply.insert(apply.begin() + 1, "-v");
  if (r.litestream_v3) return run_pipeline({s3_cmd("ls3-get", c.s3, args + Argv{url}), apply}, 1, true);
  if (r.parallel) args.insert(args.end(), {"--parallel", std::to_string(r.parallel)});
  // A damaged file (status 3) in the plan: plan again without its snapshot,
  // so that an older snapshot and the files after it can restore; every
  // result is checked file by file all the same (post-apply checksums).
  for (int attempt = 0;; attempt++) {
    int rc = run_pipeline({s3_cmd("s3-get", c.s3, args + Argv{url}), apply}, 1, true);
    if (rc != cli::kIntegrity || attempt == 3) return rc;
    int prc = 0;
    std::string snap = capture(s3_cmd("s3-get", c.s3, args + Argv{"--dry-run", url}), &prc, true);
    snap = snap.substr(0, snap.find('\t'));
    if (prc != 0 || snap.empty()) return rc;  // no plan: s3-get said why
    Argv older = args + Argv{"--exclude", snap};
    capture(s3_cmd("s3-get", c.s3, older + Argv{"--dry-run", url}), &prc, true);
    if (prc != 0) return rc;  // no other way to the target
    log_line(url, "restore from snapshot " + snap + " failed; trying an older snapshot");
    args = older;
  }
}

// ---- watch -- CMD: the application as our child ----
struct App {
  Argv cmd;
  pid_t pid = -1;
  int status = 0;  // once reaped: its exit status, 128+N if signal N killed it

  // Started from the thread that runs the supervisor (the main thread,
  // which lives as long as we do): PR_SET_PDEATHSIG is bound to the thread
  // that forked. SIGKILL: an application that handles SIGTERM slowly or
  // not at all must not outlive us either.
  void start() {
    std::vector<char*> av;
    for (auto& a : cmd) av.push_back(const_cast<char*>(a.c_str()));
    av.push_back(nullptr);
    const pid_t self = ::getpid();
    pid = ::fork();
    if (pid < 0) ltx::fail_errno("fork");
    if (pid == 0) {
      in_child(self, SIGKILL, true);
      ::execvp(av[0], av.data());
      std::fprintf(stderr, "walsync: exec %s: %s\n", av[0], std::strerror(errno));
      ::_exit(127);
    }
    log_line("watch", "started " + cmd[0] + " (pid " + std::to_string(pid) + ")");
  }
  bool running() const { return pid > 0; }
  // Collects its status if it has exited; true then.
  bool reap(bool block = false) {
    if (pid <= 0) return true;
    int st = 0;
    pid_t r;
    while ((r = ::waitpid(pid, &st, block ? 0 : WNOHANG)) < 0 && errno == EINTR) {
    }
    if (r != pid) return false;
    status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    pid = -1;
    log_line("watch", cmd[0] + (WIFEXITED(st) ? " exited with status " + std::to_string(status)
                                              : std::string(" killed by ") + ::strsignal(WTERMSIG(st))));
    return true;
  }
  // SIGTERM, then SIGKILL after grace_ms; waits for it (SIGCHLD is blocked).
  void stop(int grace_ms) {
    if (pid <= 0) return;
    log_line("watch", "stopping " + cmd[0] + " (SIGTERM, SIGKILL after " + std::to_string(grace_ms) + " ms)");
    ::kill(pid, SIGTERM);
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    for (int64_t end = ltx::now_ms() + grace_ms; !reap();) {
      if (ltx::now_ms() >= end) {
        ::kill(pid, SIGKILL);
        reap(true);
        return;
      }
      struct timespec ts{0, 100 * 1000000};
      sigtimedwait(&chld, nullptr, &ts);
    }
  }
};

const char* signame(int sig) { return sig == SIGINT ? "SIGINT" : sig == SIGHUP ? "SIGHUP" : "SIGTERM"; }

// A database that is not there is restored from its replica before the
// application starts; a replica with no files is a first boot (the
// application creates the database). Status: 0, or the restore's.
int restore_missing(Common& c, const ltx::watch::Database& d, const ltx::S3Config& s3) {
  struct stat st {};
  if (::stat(d.db.c_str(), &st) == 0 || errno != ENOENT) return cli::kOk;
  // A -wal without its database is a dead database's: SQLite would replay
  // it into the new one (and ltx-apply refuses to restore beside it).
  for (const char* ext : {"-wal", "-shm"})
    if (::unlink((d.db + ext).c_str()) == 0) log_line(d.name, std::string("no database: removed its stale ") + ext);
  ltx::Location loc = ltx::parse_url(d.url);
  auto store = ltx::open_store(loc, s3);
  ltx::Replica rep(*store, loc);
  if (rep.list().empty()) {
    log_line(d.name, "no database and no replica at " + d.url + ": starting empty");
    return cli::kOk;
  }
  log_line(d.name, "no database: restoring it from " + d.url);
  ltx::settle_journal(d.db, 60000);
  Restore r;
  r.out = d.db;
  int rc = restore_into(c, r, d.url, {});
  if (rc != cli::kOk) {
    ::unlink(d.db.c_str());
    log_line(d.name, "restore failed (status " + std::to_string(rc) + "); not starting the application");
  }
  return rc == cli::kIntegrity || rc == cli::kUsage ? rc : rc ? cli::kRuntime : cli::kOk;
}

// ---- watch ----
struct Watch {
  std::vector<std::string> dbs;
  Argv exec;  // after --: the application
  std::string dir, pattern;  // --dir, --pattern
  std::string state_dir, metrics_file, metrics_addr, metrics_interval, drain, backoff_max, sync_interval, park_after;
  long checkpoint_pages = -1, max_active = -1, metrics_databases = -1;  // -1: not given (the flags take no negative value)
};

int watch(Common& c, Watch& w) {
  c.load();
  ltx::watch::Options o;
  // name: the replica name (wscfg::name_of, or name_under for --dir).
  auto make = [&](const std::string& path, const std::string& name, const wscfg::DbEntry* e, size_t matches) {
    ltx::watch::Database d;
    d.db = path;
    d.name = e && !e->name.empty() && matches == 1 ? e->name : name;
    d.url = e && !e->url.empty() && matches == 1 ? e->url : join_url(c.need_bucket(), d.name);
    std::string base = !w.state_dir.empty() ? w.state_dir : c.cfg.state_dir;
    d.state_dir = e && !e->state_dir.empty() && matches == 1 ? e->state_dir
                  : !base.empty()                           ? join_url(base, d.name)
                                                            : path + "-walsync";
    long cp = e && e->checkpoint_pages >= 0 ? e->checkpoint_pages
              : w.checkpoint_pages >= 0     ? w.checkpoint_pages
              : c.cfg.checkpoint_pages >= 0 ? c.cfg.checkpoint_pages
                                            : 1000;
    d.checkpoint_pages = uint32_t(cp);
    d.sync_interval_ms = duration_or(e && !e->sync_interval.empty()  ? e->sync_interval
                                     : !w.sync_interval.empty()     ? w.sync_interval
                                                                    : c.cfg.sync_interval,
                                     1000, "--sync-interval");
    if (d.sync_interval_ms > 3600000) ltx::fail(ltx::Kind::Usage, "--sync-interval: at most 1h");
    return d;
  };
  auto add = [&](const std::string& path, const wscfg::DbEntry* e, size_t matches) {
    ltx::watch::Database d = make(path, wscfg::name_of(path), e, matches);
    for (const auto& x : o.dbs)
      if (x.name == d.name) ltx::fail(ltx::Kind::Usage, path + ": name '" + d.name + "' is taken by " + x.db + " (set name = in the config)");
    o.dbs.push_back(d);
  };
  for (const auto& e : c.cfg.dbs) {
    auto paths = wscfg::expand(e.path);
    if (paths.size() > 1 && (!e.name.empty() || !e.url.empty() || !e.state_dir.empty()))
      ltx::fail(ltx::Kind::Usage, c.config + ": [" + e.path + "] matches " + std::to_string(paths.size()) + " files: name, url and state-dir need one");
    for (const auto& p : paths) add(p, &e, paths.size());
  }
  for (const auto& pat : w.dbs)
    for (const auto& p : wscfg::expand(pat)) add(p, nullptr, 1);
  std::string dir = !w.dir.empty() ? w.dir : c.cfg.dir;
  if (!dir.empty()) {
    while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
    std::string pattern = !w.pattern.empty() ? w.pattern : !c.cfg.pattern.empty() ? c.cfg.pattern : "*.db";
    std::string bad = ltx::discover::check_pattern(pattern);
    if (!bad.empty()) ltx::fail(ltx::Kind::Usage, "--pattern " + pattern + ": " + bad);
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0) ltx::fail_errno(dir);
    if (!S_ISDIR(st.st_mode)) ltx::fail(ltx::Kind::Usage, "--dir " + dir + ": not a directory");
    make(dir + "/x.db", "x", nullptr, 1);  // the settings every database found will take: checked now
    o.discover.push_back({dir, pattern, [make](const std::string& path, const std::string& rel) {
                            return make(path, wscfg::name_under(rel), nullptr, 1);
                          }});
  } else if (!w.pattern.empty()) {
    ltx::fail(ltx::Kind::Usage, "--pattern needs --dir");
  }
  if (o.dbs.empty() && o.discover.empty())
    ltx::fail(ltx::Kind::Usage, "no databases to watch (give DB..., --dir DIR, or a config with [DB] sections)");

  ltx::Location loc = ltx::parse_url(o.dbs.empty() ? c.need_bucket() : o.dbs.front().url);
  for (const auto& d : o.dbs)
    if (ltx::parse_url(d.url).scheme == ltx::Location::Scheme::S3) loc = ltx::parse_url(d.url);
  o.s3 = s3cli::config(c.s3, loc);
  o.metrics_file = !w.metrics_file.empty() ? w.metrics_file : c.cfg.metrics_file;
  o.metrics_max_dbs = size_t(w.metrics_databases >= 0 ? w.metrics_databases
                             : c.cfg.metrics_databases >= 0 ? c.cfg.metrics_databases
                                                           : long(ltx::watch::kMetricsMaxDbs));
  o.metrics_interval_ms = int(duration_or(!w.metrics_interval.empty() ? w.metrics_interval : c.cfg.metrics_interval, 5000, "--metrics-interval"));
  o.drain_ms = int(duration_or(!w.drain.empty() ? w.drain : c.cfg.drain_timeout, 10000, "--drain-timeout"));
  o.backoff_max_ms = int(duration_or(!w.backoff_max.empty() ? w.backoff_max : c.cfg.backoff_max, 60000, "--backoff-max"));
  if (o.backoff_min_ms > o.backoff_max_ms) o.backoff_min_ms = o.backoff_max_ms;
  o.park_after_ms = int(duration_or(!w.park_after.empty() ? w.park_after : c.cfg.park_after, 5000, "--park-after"));
  if (o.park_after_ms > 86400000) ltx::fail(ltx::Kind::Usage, "--park-after: at most 1d");
  // Both checked when parsed (CLI::Range, the configuration's number()).
  o.max_active = int(w.max_active > 0 ? w.max_active : c.cfg.max_active > 0 ? c.cfg.max_active : 16);
  o.verbose = c.s3.verbose;
  o.log = log_line;
  App app;
  app.cmd = !w.exec.empty() ? w.exec : c.cfg.exec;
  const bool exec = !app.cmd.empty();
  if (exec) {
    o.await_missing = true;    // a first boot: the application creates it
    o.stop_on_failure = true;  // the application does not run without its backup
    o.drain_queued = true;     // its last commits are stored, whichever database took them
    o.started = [&app] { app.start(); };
  }

  // Small footprint for many databases: no per-connection lookaside, page
  // caches bounded process-wide, few malloc arenas, big blocks mmapped (and
  // so returned) rather than kept on the heap.
  sqlite3_config(SQLITE_CONFIG_LOOKASIDE, 0, 0);
  sqlite3_config(SQLITE_CONFIG_PAGECACHE, nullptr, 0, 0);  // no bulk page-cache preallocation
  sqlite3_soft_heap_limit64(4 << 20);
  mallopt(M_ARENA_MAX, 2);
  mallopt(M_MMAP_THRESHOLD, 128 * 1024);
  mallopt(M_TRIM_THRESHOLD, 256 * 1024);

  // Refused before anything starts: a busy or malformed address.
  std::string addr = !w.metrics_addr.empty() ? w.metrics_addr : c.cfg.metrics_addr;
  if (!addr.empty()) {
    o.http_fd = ltx::with_context("--metrics-addr", [&] { return ltx::http::listen_on(addr); });
    log_line("watch", "metrics at http://" + ltx::http::local_address(o.http_fd) + "/metrics and /healthz");
  }
  curl_global_init(CURL_GLOBAL_DEFAULT);  // once, before any thread uses curl
  if (exec)
    for (const auto& d : o.dbs)
      if (int rc = restore_missing(c, d, o.s3)) return rc;

  // Signals arrive only where we wait for them (every thread inherits the mask).
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  if (exec) sigaddset(&set, SIGCHLD);  // the application's end wakes the supervisor too
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  // Readable while a signal is pending: the supervisor waits on it with its
  // inotify descriptor; wait_stop then takes the signal.
  o.stop_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  // With an application, a stop signal is its (forwarded); its end is ours.
  o.wait_stop = [&set, &app](int ms) {
    struct timespec ts{ms / 1000, long(ms % 1000) * 1000000};
    siginfo_t si{};
    int sig = sigtimedwait(&set, &si, &ts);
    if (sig == SIGCHLD) return app.reap();
    if (sig <= 0) return false;
    if (app.running()) {
      // One from the terminal reached the whole process group: the application has its own.
      if (si.si_code != SI_KERNEL) ::kill(app.pid, sig);
      log_line("watch", std::string(signame(sig)) + ": forwarded to " + app.cmd[0]);
      return false;
    }
    log_line("watch", std::string(signame(sig)) + ": draining");
    return true;
  };
  // Status 1 or 3 once a database failed for good, even after a SIGTERM:
  // systemd's Restart=on-failure and the operator must hear of it.
  ltx::watch::Result res;
  try {
    res = ltx::watch::run(o);
  } catch (...) {
    app.stop(o.drain_ms);
    throw;
  }
  app.stop(o.drain_ms);  // still running: the backup stopped first (a database failed for good)
  if (!res.drained) {
    std::fflush(stderr);
    ::_exit(res.status);  // pipelines still running: do not wait for them
  }
  if (exec && res.status != cli::kOk) log_line("watch", "backup failed: exit status " + std::to_string(res.status) + ", not " + app.cmd[0] + "'s");
  return exec && res.status == cli::kOk ? app.status : res.status;
}

int restore(Common& c, Restore& r) {
  c.load();
  struct stat st {};
  if (::stat(r.out.c_str(), &st) == 0) {
    if (r.if_not_exists) return cli::kOk;
    ltx::fail_runtime(r.out + ": exists (remove it, or give --if-not-exists)");
  }
  // Before anything is fetched: a hot journal beside OUTPUT (ltx-apply
  // would refuse it too, after the first bytes arrived).
  ltx::settle_journal(r.out, 60000);
  // A Litestream v0.3 replica (generations/...) is read by ls3-get, so users
  // of Litestream can move over; --txid then means the WAL index.
  Argv args;
  if (!r.txid.empty()) args.insert(args.end(), {r.litestream_v3 ? "--index" : "--txid", r.txid});
  if (!r.timestamp.empty()) args.insert(args.end(), {"--timestamp", r.timestamp});
  const std::string url = c.resolve(r.target);
  int rc = restore_into(c, r, url, args);
  // OUTPUT did not exist: a failed restore leaves none behind (ltx-apply
  // commits file by file, so a source that fails mid-plan would otherwise
  // leave an older state under the name asked for).
  if (rc != cli::kOk) ::unlink(r.out.c_str());
  return rc;
}

struct Replicate {
  std::string target, local, interval = "1s", max_interval = "30s";
};

// A replica these keys cannot read (encrypted and no --age-identity, or a
// wrong one) fails the same way on every run: say so once, exit 1, instead
// of restarting the pipeline forever. Other errors are the pipeline's.
void check_keys(Common& c, const std::string& url) {
  try {
    ltx::Location loc = ltx::parse_url(url);
    auto store = ltx::open_store(loc, s3cli::config(c.s3, loc));
    ltx::Replica rep(*store, loc);
    auto files = rep.list();
    if (!files.empty()) rep.header(files.back());
  } catch (const ltx::Error& e) {
    if (e.permanent() && e.kind() == ltx::Kind::Runtime) throw e.wrap(url);
  }
}

int replicate(Common& c, Replicate& r) {
  c.load();
  cli::duration_ms("--interval", r.interval, ltx::kFollowIntervalMinMs, ltx::kFollowIntervalMaxMs);  // as s3-get checks it
  cli::duration_ms("--max-interval", r.max_interval, 0, ltx::kFollowIntervalMaxMs);
  std::string url = c.resolve(r.target);
  struct sigaction sa {};
  sa.sa_handler = on_stop;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  struct stat st0 {};
  const bool existed = ::stat(r.local.c_str(), &st0) == 0;
  int failures = 0;
  while (!g_stop) {
    check_keys(c, url);
    int rc = 0;
    std::string pos = capture({"ltx-apply", "--position", r.local}, &rc);
    Argv args = {"--follow", "--interval", r.interval, "--max-interval", r.max_interval};
    bool after = rc == 0 && !pos.empty() && pos.find_first_not_of('0') != std::string::npos;
    if (after) args.insert(args.end(), {"--after", pos});
    args.push_back(url);
    Argv get = s3_cmd("s3-get", c.s3, args);
    log_line(r.local, "following " + url + (after ? " after TXID " + pos : ""));
    auto t0 = ltx::now_ms();
    rc = run_pipeline({get, {"ltx-apply", "--live", r.local}});
    if (g_stop) break;
    // A usage or integrity error (status 2, 3) or a missing tool (126,
    // 127) comes back on every retry: stop with its status, once.
    if (rc == cli::kUsage || rc == cli::kIntegrity || rc == 126 || rc == 127) {
      struct stat st {};
      if (!existed && ::stat(r.local.c_str(), &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 0)
        ::unlink(r.local.c_str());  // the empty file this run created
      log_line(r.local, "pipeline exited with status " + std::to_string(rc) + "; not restarting");
      return rc == cli::kIntegrity ? cli::kIntegrity : rc == cli::kUsage ? cli::kUsage : cli::kRuntime;
    }
    if (ltx::now_ms() - t0 > 60000) failures = 0;
    int delay = std::min(60000, 1000 << std::min(failures++, 6));
    log_line(r.local, "pipeline exited with status " + std::to_string(rc) + "; restarting in " + std::to_string(delay) + " ms");
    for (int i = 0; i < delay / 50 && !g_stop; i++) ::usleep(50000);
  }
  log_line(r.local, "stopped");
  return cli::kOk;
}

struct Snapshot {
  std::string db, tmpdir;
};

int snapshot(Common& c, Snapshot& s) {
  c.load();
  std::string url = c.resolve(s.db);
  if (have_tool("s3-compact")) return run_pipeline({s3_cmd("s3-compact", c.s3, {"--level", "9", "--interval", "0", url})});
  // Without the compactor: rebuild the replica's latest state in a temp
  // database and store it as a snapshot at that TXID (never reads the live DB).
  ltx::Location loc = ltx::parse_url(url);
  auto store = ltx::open_store(loc, s3cli::config(c.s3, loc));
  ltx::Replica rep(*store, loc);
  auto files = rep.list();
  if (files.empty()) ltx::fail_runtime(url + ": empty replica (run walsync watch first)");
  auto plan = ltx::plan_restore(rep, files, {});
  int64_t ts = rep.header(plan.files.back()).timestamp;
  std::string dir = cli::tmpdir(s.tmpdir);
  std::string tmpl = dir + "/walsync-snapshot-XXXXXX";
  if (!::mkdtemp(&tmpl[0])) ltx::fail_errno("mkdtemp in " + dir);
  std::string txid = ltx::hex16(plan.txid), tmpdb = tmpl + "/db";
  int rc = run_pipeline({s3_cmd("s3-get", c.s3, {"--txid", txid, url}), {"ltx-apply", tmpdb}}, 1, true);
  if (rc == 0)
    rc = run_pipeline({{"ltx-encode", "--db", tmpdb, "--txid", txid, "--timestamp", ltx::format_timestamp(ts)},
                       s3_cmd("s3-put", c.s3, {"--level", "9", url})});
  ::unlink(tmpdb.c_str());
  ::rmdir(tmpl.c_str());
  return rc;
}

// ---- ls ----
// s3-ls, but a replica with no files is an error, not an empty listing.
int list(Common& c, const std::string& url) {
  char tmpl[] = "/tmp/walsync-ls-XXXXXX";
  int fd = ::mkstemp(tmpl);
  if (fd < 0) ltx::fail_errno("mkstemp");
  ::unlink(tmpl);
  int rc = run_pipeline({s3_cmd("s3-ls", c.s3, {url})}, fd);
  off_t n = ::lseek(fd, 0, SEEK_END);
  if (rc == 0 && n == 0) {
    ::close(fd);
    ltx::fail_runtime(url + ": no replica files");
  }
  std::vector<char> buf(64 * 1024);
  ltx::FdWriter out(1);
  for (off_t off = 0; off < n;) {
    size_t k = ltx::pread_full(fd, buf.data(), buf.size(), uint64_t(off));
    if (k == 0) break;
    out.write(buf.data(), k);
    off += off_t(k);
  }
  ::close(fd);
  out.flush();
  return rc;
}

// ---- status ----
int status(Common& c, const std::string& metrics_file, bool json) {
  c.load();
  std::string path = !metrics_file.empty() ? metrics_file : c.cfg.metrics_file;
  if (path.empty()) ltx::fail(ltx::Kind::Usage, "no metrics file: give --metrics-file (or metrics-file = in the config)");
  std::ifstream in(path);
  if (!in) ltx::fail_errno(path);
  std::stringstream ss;
  ss << in.rdbuf();
  ltx::watch::Totals tot;
  auto ms = ltx::watch::parse_metrics(ss.str(), &tot);
  std::sort(ms.begin(), ms.end(), ltx::watch::worse);
  if (json) {  // as s3-ls --json: an array, one object a line
    std::printf("[");
    for (size_t i = 0; i < ms.size(); i++) {
      const auto& m = ms[i];
      std::printf("%s\n{\"name\":%s,\"state\":\"%s\",\"txid\":\"%s\",\"lag_seconds\":%.3f,\"last_success\":%s,"
                  "\"errors\":%llu,\"restarts\":%llu,\"files\":%llu,\"bytes\":%llu,"
                  "\"requests\":{\"put\":%llu,\"get\":%llu,\"list\":%llu,\"delete\":%llu}}",
                  i ? "," : "", cli::json_str(m.name).c_str(), ltx::watch::state_of(m), ltx::hex16(m.txid).c_str(),
                  m.lag_s,
                  m.last_success_ms ? ("\"" + ltx::format_timestamp(m.last_success_ms / 1000 * 1000) + "\"").c_str() : "null",
                  (unsigned long long)m.errors, (unsigned long long)m.restarts, (unsigned long long)m.files,
                  (unsigned long long)m.bytes, (unsigned long long)m.requests[0], (unsigned long long)m.requests[1],
                  (unsigned long long)m.requests[2], (unsigned long long)m.requests[3]);
    }
    std::printf(ms.empty() ? "]\n" : "\n]\n");
    return cli::kOk;
  }
  // The summary first: with thousands of databases, the table below is
  // worst first (failed, then by lag) and may hold only the worst
  // --metrics-databases of them.
  if (!tot.present) {  // a file without totals: count the rows
    for (const auto& m : ms) {
      for (int k = 0; k < 5; k++) tot.by_state[k] += std::strcmp(ltx::watch::state_of(m), ltx::watch::kStates[k]) == 0;
      tot.max_lag_s = std::max(tot.max_lag_s, m.lag_s);
    }
    tot.dbs = tot.listed = ms.size();
  }
  std::printf("%zu database%s: %zu active, %zu queued, %zu parked, %zu down, %zu failed; max lag %.1fs", tot.dbs,
              tot.dbs == 1 ? "" : "s", tot.by_state[0], tot.by_state[1], tot.by_state[2], tot.by_state[3],
              tot.by_state[4], tot.max_lag_s);
  if (ms.size() < tot.dbs) std::printf("; the worst %zu below", ms.size());
  std::printf("\n");
  std::printf("%-20s %-16s %9s %-20s %6s %8s %8s %8s %8s %-6s\n", "NAME", "TXID", "LAG", "LAST-SUCCESS", "ERRORS",
              "PUT", "GET", "LIST", "DELETE", "STATE");
  for (const auto& m : ms)
    std::printf("%-20s %-16s %8.1fs %-20s %6llu %8llu %8llu %8llu %8llu %-6s\n", m.name.c_str(),
                ltx::hex16(m.txid).c_str(), m.lag_s,
                m.last_success_ms ? ltx::format_timestamp(m.last_success_ms / 1000 * 1000).c_str() : "-",
                (unsigned long long)m.errors, (unsigned long long)m.requests[0], (unsigned long long)m.requests[1],
                (unsigned long long)m.requests[2], (unsigned long long)m.requests[3],
                ltx::watch::state_of(m));
  return cli::kOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Back up and restore live SQLite databases (porcelain over the walsync tools).", "walsync"};
  app.require_subcommand(1);
  Common c;
  Watch w;
  auto* wa = app.add_subcommand("watch", "back up databases continuously, one supervised in-process pipeline each; "
                                         "with -- CMD [ARGS] (last), restore missing databases, run CMD and exit with it");
  add_common(wa, c);
  wa->add_option("DB", w.dbs, "databases (WAL mode) or globs");
  wa->add_option("--dir", w.dir, "also every database under DIR matching --pattern, as they come and go; replica name: its path under DIR");
  wa->add_option("--pattern", w.pattern, "with --dir: a glob of the path under DIR, '/' between levels (default *.db)");
  wa->add_option("--state-dir", w.state_dir, "state of database NAME in DIR/NAME (default: DB-walsync beside DB)");
  wa->add_option("--metrics-file", w.metrics_file, "write Prometheus metrics to this file");
  wa->add_option("--metrics-addr", w.metrics_addr, "serve GET /metrics and /healthz over HTTP on HOST:PORT (e.g. 127.0.0.1:9090)");
  wa->add_option("--metrics-interval", w.metrics_interval, "metrics period (default 5s)");
  wa->add_option("--metrics-databases", w.metrics_databases, "per-database series for at most N databases, the worst first (default 1000); totals for all")
      ->check(CLI::Range(0L, wscfg::kMaxMetricsDatabases));
  wa->add_option("--checkpoint-pages", w.checkpoint_pages, "PASSIVE checkpoint at this many frames (default 1000; 0: never)")
      ->check(CLI::Range(0L, wscfg::kMaxCheckpointPages));
  wa->add_option("--sync-interval", w.sync_interval, "at most one object per database per DUR; commits arriving sooner are merged (default 1s; 0: one object per file)");
  wa->add_option("--drain-timeout", w.drain, "on SIGTERM/SIGINT, wait this long for in-flight files (default 10s)");
  wa->add_option("--backoff-max", w.backoff_max, "longest delay between restarts of a failing pipeline (default 60s)");
  wa->add_option("--park-after", w.park_after, "park a database quiet this long with everything stored: no thread, connection or descriptor until its -wal changes (default 5s; 0: never)");
  wa->add_option("--max-active", w.max_active, "pipelines running at once; other databases queue for a slot (default 16)")
      ->check(CLI::Range(1L, wscfg::kMaxActive));

  Restore r;
  auto* re = app.add_subcommand("restore", "restore a replica (NAME under -b URL, or URL) to a new database");
  add_common(re, c);
  re->add_option("target", r.target, "replica NAME or URL")->required();
  re->add_option("-o,--output", r.out, "database to create")->required();
  auto* tx = re->add_option("--txid", r.txid, "restore up to this TXID (hex)");
  re->add_option("--timestamp", r.timestamp, "restore to the last file at or before this RFC 3339 time")->excludes(tx);
  re->add_flag("--litestream-v3", r.litestream_v3, "the replica was written by Litestream v0.3 (generations/ layout; --txid is its WAL index)");
  re->add_flag("--if-not-exists", r.if_not_exists, "do nothing (exit 0) if OUTPUT exists");
  re->add_option("--parallel", r.parallel, "download up to N objects or 4 MiB parts at once (default 8)")
      ->check(CLI::Range(1, ltx::kMaxParallel))->excludes(re->get_option("--litestream-v3"));

  Replicate rp;
  auto* rpc = app.add_subcommand("replicate", "keep a live read replica that follows a replica");
  add_common(rpc, c);
  rpc->add_option("target", rp.target, "replica NAME or URL")->required();
  rpc->add_option("--local", rp.local, "the replica database")->required();
  rpc->add_option("--interval", rp.interval, "poll period (default 1s)");
  rpc->add_option("--max-interval", rp.max_interval, "while the replica is idle, double the poll period up to DUR (default 30s)");

  Snapshot sn;
  auto* sc = app.add_subcommand("snapshot", "store a level-9 snapshot of a database's replica");
  add_common(sc, c);
  sc->add_option("DB", sn.db, "database path, NAME or URL")->required();
  sc->add_option("--tmpdir", sn.tmpdir, "temporary space (without s3-compact: one database copy)");

  std::string target, metrics;
  Argv extra;
  auto* ve = app.add_subcommand("verify", "check a replica's files and chain");
  auto* ls = app.add_subcommand("ls", "list a replica's files");
  auto* co = app.add_subcommand("compact", "compact a replica (levels 1-3, then a snapshot)");
  auto* rt = app.add_subcommand("retain", "delete replica files retention no longer needs (s3-retain options follow)");
  for (auto* s : {ve, ls, co, rt}) {
    add_common(s, c);
    s->add_option("target", target, "replica NAME or URL")->required();
  }
  rt->allow_extras();
  auto* st = app.add_subcommand("status", "each watched database's position and lag, from the metrics file");
  add_common(st, c);
  st->add_option("--metrics-file", metrics, "the metrics file of walsync watch");
  bool json = false;
  st->add_flag("--json", json, "one JSON object per database (an array, one a line)");

  // walsync watch [options] DB... -- CMD [ARGS]: CMD's words are not ours.
  if (argc > 1 && std::strcmp(argv[1], "watch") == 0)
    for (int i = 2; i < argc; i++)
      if (std::strcmp(argv[i], "--") == 0) {
        w.exec.assign(argv + i + 1, argv + argc);
        if (w.exec.empty()) {
          cli::error("watch: -- needs a command (walsync watch DB... -- CMD [ARGS])");
          return cli::kUsage;
        }
        argc = i;
        break;
      }
  if (argc > 1 && argv[1][0] != '-') {  // CLI11 would only say "A subcommand is required"
    std::string names;
    bool known = false;
    for (auto* s : app.get_subcommands([](CLI::App*) { return true; })) {
      known = known || s->get_name() == argv[1];
      names += (names.empty() ? "" : ", ") + s->get_name();
    }
    if (!known) {
      cli::error(std::string("unknown subcommand '") + argv[1] + "' (" + names + "; see --help)");
      return cli::kUsage;
    }
  }
  return cli::run(app, argc, argv, [&]() -> int {
    if (wa->parsed()) return watch(c, w);
    if (re->parsed()) return restore(c, r);
    if (rpc->parsed()) return replicate(c, rp);
    if (sc->parsed()) return snapshot(c, sn);
    if (st->parsed()) return status(c, metrics, json);
    c.load();
    std::string url = c.resolve(target);
    if (ls->parsed()) return list(c, url);
    if (ve->parsed()) {
      if (have_tool("s3-verify")) return run_pipeline({s3_cmd("s3-verify", c.s3, {url})});
      return run_pipeline({s3_cmd("s3-get", c.s3, {url}), {"ltx-verify", "-"}}, 1, true);
    }
    if (co->parsed()) {
      if (!have_tool("s3-compact")) {
        cli::error("compact: not yet implemented (needs s3-compact)");
        return cli::kRuntime;
      }
      for (const char* l : {"1", "2", "3", "9"}) {
        int rc = run_pipeline({s3_cmd("s3-compact", c.s3, {"--level", l, url})});
        if (rc != 0) return rc;
      }
      return cli::kOk;
    }
    if (!have_tool("s3-retain")) {
      cli::error("retain: not yet implemented (needs s3-retain)");
      return cli::kRuntime;
    }
    Argv args = rt->remaining();
    args.push_back(url);
    return run_pipeline({s3_cmd("s3-retain", c.s3, args)});
  });
}
