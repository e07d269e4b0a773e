// s3-get - plan a restore from a replica (newest snapshot at or before the
// target, then the fewest files that reach it) and stream it to stdout as
// one concatenated LTX stream; or fetch one plain object (--raw). With
// --follow, keep polling and stream each new file as it appears.
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>

#include "cli.h"
#include "ltx/bytes.h"
#include "ltx/fetch.h"
#include "ltx/follow.h"
#include "ltx/ltx.h"
#include "ltx/replica.h"
#include "s3common.h"

namespace {

struct Options {
  std::string url, txid, timestamp, interval = "1s", max_interval = "30s", after;
  std::vector<std::string> exclude;  // LEVEL/MIN-MAX.ltx names the plan must not use
  bool dry_run = false, raw = false, follow = false;
  int parallel = 8;  // concurrent GETs of a restore
  s3cli::Flags s3;
};

uint64_t parse_txid(const std::string& s) {
  std::string h = s.compare(0, 2, "0x") == 0 ? s.substr(2) : s;
  if (h.empty() || h.size() > 16 || h.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos)
    ltx::fail(ltx::Kind::Usage, "--txid " + s + ": want up to 16 hex digits");
  uint64_t v = std::strtoull(h.c_str(), nullptr, 16);
  if (v == 0) ltx::fail(ltx::Kind::Usage, "--txid " + s + ": TXIDs start at 1");
  return v;
}

volatile std::sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

// Unbuffered stdout that names a departed reader (EPIPE) plainly.
class Stdout : public ltx::Writer {
 public:
  void write(const void* p, size_t n) override {
    auto* b = static_cast<const char*>(p);
    while (n) {
      ssize_t k = ::write(1, b, n);
      if (k < 0 && errno == EINTR) continue;
      if (k < 0 && errno == EPIPE) ltx::fail_runtime("standard output: the reader has gone (EPIPE)");
      if (k < 0) ltx::fail_errno("standard output");
      b += k, n -= size_t(k);
    }
  }
};

// Sleeps up to ms; false on SIGTERM/SIGINT or when stdout's reader is gone.
bool wait_for(int64_t ms) {
  struct pollfd p = {1, 0, 0};  // a pipe's write end reports POLLERR once no reader is left
  int rc = ::poll(&p, 1, int(ms));
  if (g_stop) return false;
  if (rc > 0 && (p.revents & (POLLERR | POLLHUP)))
    ltx::fail_runtime("standard output: the reader has gone");
  return true;
}

int follow(const Options& o, ltx::Store& store, const ltx::Location& loc) {
  ltx::FollowOptions fo;
  fo.interval_ms = cli::duration_ms("--interval", o.interval, ltx::kFollowIntervalMinMs, ltx::kFollowIntervalMaxMs);
  fo.max_interval_ms = cli::duration_ms("--max-interval", o.max_interval, 0, ltx::kFollowIntervalMaxMs);
  if (!o.after.empty()) {
    fo.has_after = true;
    if (!ltx::parse_hex16(o.after, &fo.after) && o.after != "0")
      fo.after = parse_txid(o.after);  // shorter hex
  }
  struct sigaction sa = {};
  sa.sa_handler = on_signal;  // no SA_RESTART: poll() wakes up
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);
  fo.wait = wait_for;
  fo.stop = [] { return g_stop != 0; };
  if (o.s3.verbose) fo.log = [](const std::string& m) { cli::error(m); };
  Stdout out;
  ltx::Replica rep(store, loc);
  ltx::Follower f(rep, out, fo);
  ltx::with_context(o.url, [&] { f.run(); });
  if (o.s3.verbose) {
    auto& st = f.stats();
    cli::error("stopped at TXID " + ltx::hex16(st.position) + ": " + std::to_string(st.files) + " files, " +
               std::to_string(st.polls) + " polls, " + std::to_string(st.full_lists) + " full listings");
  }
  return cli::kOk;
}


int run(const Options& o) {
  ltx::Location loc = ltx::parse_url(o.url);
  ltx::RestoreTarget target;
  if (!o.txid.empty()) target.has_txid = true, target.txid = parse_txid(o.txid);
  if (!o.timestamp.empty()) {
    target.has_time = true;
    if (!ltx::parse_timestamp(o.timestamp, &target.time_ms))
      ltx::fail(ltx::Kind::Usage, "--timestamp " + o.timestamp + ": want RFC 3339, e.g. 2024-01-02T03:04:05Z");
  }
  if (!o.dry_run && ltx::is_tty(1))
    ltx::fail(ltx::Kind::Usage, "refusing to write binary data to a terminal (redirect stdout)");
  ltx::S3Config cfg = s3cli::config(o.s3, loc);
  auto store = ltx::open_store(loc, cfg);
  if (o.follow) return follow(o, *store, loc);
  ltx::FdWriter out(1);
  if (o.raw) {
    if (loc.path.empty()) ltx::fail(ltx::Kind::Usage, o.url + ": --raw needs a key");
    try {
      store->get(loc.path, out);
    } catch (const ltx::Error&) {
      out.flush();  // what was verified before the failure (age chunks are authenticated one by one)
      throw;
    }
    out.flush();
    return cli::kOk;
  }
  ltx::Replica rep(*store, loc);
  auto files = ltx::with_context(o.url, [&] { return rep.list(); });
  if (files.empty()) ltx::fail_integrity(o.url + ": no replica files");
  files.erase(std::remove_if(files.begin(), files.end(),
                             [&](const ltx::ReplicaFile& f) {
                               return std::find(o.exclude.begin(), o.exclude.end(), f.name()) != o.exclude.end();
                             }),
              files.end());
  ltx::RestorePlan plan = ltx::with_context(o.url, [&] { return ltx::plan_restore(rep, files, target); });
  if (o.dry_run) {
    for (auto& f : plan.files)
      out.write((f.name() + "\t" + std::to_string(f.size) + "\n").data(), f.name().size() + std::to_string(f.size).size() + 2);
    out.flush();
    return cli::kOk;
  }
  // Up to --parallel GETs at once (ranged for big files), delivered in
  // plan order; one connection each, so one store each.
  // An encrypted object is split by its payload (plaintext) size, which its
  // age header gives (one small GET), so only objects above a part need
  // it: a smaller one is fetched whole, as before. Fetched whole, a big one
  // reached ltx-apply only once all of it had arrived.
  ltx::PlanCheckWriter check(out);
  ltx::FetchOptions fo;
  fo.parallel = o.parallel;
  fo.tmpdir = cfg.tmpdir;
  std::vector<ltx::FetchObject> objs;
  for (auto& f : plan.files) {
    bool split = store->sealed() && f.size > fo.part_size;
    objs.push_back({f.key, split ? store->payload_size(f.key, f.size) : f.size});
  }
  ltx::fetch_ordered(
      objs, [&] { return ltx::open_store(loc, cfg); }, fo, check, [&](size_t i) { check.begin(plan.files[i]); },
      [&](size_t i, uint64_t n) {
        const auto& f = plan.files[i];
        if (!store->sealed() && n != f.size)
          ltx::fail_integrity(f.key + ": got " + std::to_string(n) + " bytes, listed " + std::to_string(f.size));
        check.end();
        if (o.s3.verbose) cli::error(f.key + ": sent " + std::to_string(n) + " bytes");
      });
  out.flush();
  return cli::kOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Plan a restore from a replica and stream it to stdout as one LTX stream.", "s3-get"};
  Options o;
  app.add_option("url", o.url, "s3://BUCKET/PREFIX or file:///DIR (with --raw: the object)")->required();
  auto* tx = app.add_option("--txid", o.txid, "restore up to this TXID (hex)");
  app.add_option("--timestamp", o.timestamp, "restore to the last file at or before this RFC 3339 time")->excludes(tx);
  app.add_flag("-n,--dry-run", o.dry_run, "print the plan (one replica file a line) instead of data");
  auto* raw = app.add_flag("--raw", o.raw, "write one plain object to stdout")->excludes(tx);
  auto* fl = app.add_flag("-f,--follow", o.follow, "after the restore, poll and stream each new file")
                 ->excludes(tx)->excludes(raw);
  app.get_option("--timestamp")->excludes(fl);
  app.get_option("--dry-run")->excludes(fl);
  app.add_option("--interval", o.interval, "--follow: poll every DUR (default 1s; 500ms, 2m, ...)")->needs(fl);
  app.add_option("--max-interval", o.max_interval, "--follow: while idle, double the poll period up to DUR (default 30s; 0: no backoff)")->needs(fl);
  app.add_option("--after", o.after, "--follow: start after this TXID (hex) instead of restoring")->needs(fl);
  app.add_option("--exclude", o.exclude, "plan without this replica file (LEVEL/MIN-MAX.ltx, as --dry-run prints it); repeatable")
      ->excludes(raw)->excludes(fl);
  app.add_option("--parallel", o.parallel, "restore: download up to N objects or 4 MiB parts at once (default 8)")
      ->check(CLI::Range(1, ltx::kMaxParallel))->excludes(raw)->excludes(fl);
  app.add_option("--max-keys", o.s3.max_keys, "ListObjectsV2 page size (default 1000)")->check(CLI::Range(1, 1000));
  s3cli::add_flags(app, o.s3);
  return cli::run(app, argc, argv, [&] { return run(o); });
}
