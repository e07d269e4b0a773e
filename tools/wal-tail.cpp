// wal-tail - follow a live WAL-mode SQLite database and write its WAL stream
// (walstream(5)) to stdout. Policy only; the mechanism is ltx/tail.h.
#include <signal.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>

#include "cli.h"
#include "ltx/io.h"
#include "ltx/state.h"
#include "ltx/tail.h"

namespace {

volatile std::sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Follow a live WAL-mode SQLite database and write its WAL stream to stdout."};
  app.name("wal-tail");
  ltx::tail::Options o;
  std::string from;
  bool verbose = false;
  app.add_option("DB", o.db, "database file (WAL mode)")->required();
  app.add_flag("--snapshot", o.snapshot, "emit one consistent full-page resync and exit");
  app.add_option("--from", from, "resume after SALT1:SALT2:OFFSET when the WAL still holds it");
  app.add_option("--checkpoint-pages", o.checkpoint_pages,
                 "run a PASSIVE checkpoint once this many frames are copied but not backfilled (0: never)")
      ->capture_default_str();
  app.add_option("--idle-checkpoint", o.idle_ms, "checkpoint after this many quiet milliseconds")
      ->capture_default_str()->check(CLI::Range(1, 3600000));
  app.add_option("--poll", o.poll_ms, "poll every N milliseconds instead of using inotify")
      ->check(CLI::Range(1, 60000));
  app.add_option("--busy-timeout", o.busy_timeout_ms, "SQLite busy timeout in milliseconds")
      ->capture_default_str()->check(CLI::Range(0, 600000));
  app.add_option("--ack", o.ack_path,
                 "acknowledgement file (s3-put --ack): resume from it, and keep frames it does not cover");
  app.add_option("--ack-max-frames", o.ack_max_frames,
                 "stop holding unacknowledged frames beyond this many (a crash then costs a resync)")
      ->capture_default_str();
  app.add_option("--coalesce-us", o.coalesce_us,
                 "under a stream of commits, copy at most once per this many microseconds (0: after every commit)")
      ->capture_default_str()->check(CLI::Range(0, 1000000));
  app.add_flag("-v,--verbose", verbose, "progress on stderr");

  return cli::run(app, argc, argv, [&]() -> int {
    if (!from.empty()) {
      if (o.snapshot) {
        cli::error("--from and --snapshot are exclusive (see --help)");
        return cli::kUsage;
      }
      if (!ltx::tail::parse_position(from, &o.from_salt1, &o.from_salt2, &o.from_offset)) {
        cli::error("--from: expected SALT1:SALT2:OFFSET, got '" + from + "' (see --help)");
        return cli::kUsage;
      }
      o.have_from = true;
    }
    // One tail per acknowledgement: a second would hold frames for, and
    // resume from, a position that is not its own.
    std::unique_ptr<ltx::StateLock> lock;
    if (!o.ack_path.empty()) lock = std::make_unique<ltx::StateLock>(o.ack_path + ".lock");
    ltx::Position acked;
    if (from.empty() && !o.ack_path.empty() && !o.snapshot &&
        ltx::read_position_file(o.ack_path, &acked) && acked.wal_offset != 0) {
      o.have_from = true;
      o.from_salt1 = acked.wal_salt1;
      o.from_salt2 = acked.wal_salt2;
      o.from_offset = acked.wal_offset;
    }
    if (ltx::is_tty(STDOUT_FILENO)) {
      cli::error("refusing to write binary to a terminal");
      return cli::kUsage;
    }
    if (verbose) o.log = [](const std::string& m) { cli::error(m); };
    struct sigaction sa {};
    sa.sa_handler = on_signal;  // no SA_RESTART: poll() returns EINTR
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    o.stop = &g_stop;
    ltx::FdWriter out(STDOUT_FILENO);
    ltx::tail::run(o, out);
    out.flush();
    return cli::kOk;
  });
}
