// ltx-apply - apply LTX files to a database, all or nothing; or, with --live,
// file by file to a replica that readers query meanwhile.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "ltx/apply.h"
#include "ltx/bytes.h"
#include "ltx/live.h"

namespace {

// --live: each file one atomic step for readers; position kept beside DB.
cli::Exit run_live(const std::string& db, const std::vector<std::string>& files, int busy_ms, bool verbose,
                   uint64_t max_size) {
  ltx::LiveReplica rep(db, busy_ms);
  rep.set_max_size(max_size);
  int total = 0;
  for (const auto& f : files) {
    int fd = f == "-" ? 0 : ::open(f.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) ltx::fail_errno("open " + f);
    ltx::FdReader fr(fd);
    ltx::BufReader in(fr);
    int n = rep.apply_stream(in, f == "-" ? "stdin" : f, [&](const ltx::LiveEvent& e) {
      if (!verbose) return;
      std::fprintf(stderr, "ltx-apply: %s: %s %s, txid %s, %u pages, locked %.1f ms\n", db.c_str(),
                   e.applied ? "applied" : "skipped",
                   ltx::format_filename(e.header.min_txid, e.header.max_txid).c_str(),
                   ltx::hex16(rep.position().txid).c_str(), e.header.commit, e.lock_ms);
    });
    if (fd != 0) ::close(fd);
    if (f != "-" && n != 1) ltx::fail_integrity(f + (n ? ": more than one LTX file" : ": no LTX data"));
    total += n;
  }
  return cli::kOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Apply LTX files (or a concatenated LTX stream on stdin) to a database.",
               "ltx-apply"};
  std::string db, max_size_text;
  std::vector<std::string> files;
  bool verbose = false, force = false, live = false, position = false;
  int busy_ms = 60000;
  app.add_option("db", db, "database to create or update")->required();
  app.add_option("files", files, "LTX files in order; none or - reads stdin");
  app.add_flag("-v,--verbose", verbose, "report the resulting position on stderr");
  app.add_flag("-f,--force", force, "apply even if DB-wal exists");
  app.add_flag("--live", live, "apply file by file to a replica that readers use meanwhile");
  app.add_option("--max-size", max_size_text, "refuse files that make the database larger (e.g. 10G)");
  app.add_flag("--position", position, "print the live replica's recorded TXID and exit");
  app.add_option("--busy-timeout", busy_ms, "milliseconds to wait for SQLite's locks (default 60000)")
      ->check(CLI::NonNegativeNumber);
  return cli::run(app, argc, argv, [&] {
    if (position) {
      if (live || !files.empty()) {
        cli::error("--position takes only DB (see --help)");
        return cli::kUsage;
      }
      ltx::LivePosition p;
      bool have = ltx::read_live_position(db, &p);
      std::printf("%s\n", ltx::hex16(have ? p.txid : 0).c_str());
      if (std::fflush(stdout) != 0 || std::ferror(stdout)) ltx::fail_errno("write stdout");
      return cli::kOk;
    }
    uint64_t max_size = 0;
    if (!max_size_text.empty() && (max_size = cli::parse_size(max_size_text)) == 0) {
      cli::error("--max-size: not a size: " + max_size_text);
      return cli::kUsage;
    }
    if (files.empty()) files.push_back("-");
    for (const auto& f : files)
      if (f == "-" && ltx::is_tty(0)) {
        cli::error("refusing to read LTX from a terminal");
        return cli::kUsage;
      }
    struct stat st {};
    if (!force && ::stat((db + "-wal").c_str(), &st) == 0 && st.st_size > 0) {
      cli::error(db + "-wal exists: the database is in use or was not checkpointed (use -f)");
      return cli::kRuntime;
    }
    ltx::settle_journal(db, busy_ms);
    ltx::install_cleanup_handlers();
    if (live) return run_live(db, files, busy_ms, verbose, max_size);
    ltx::Applier ap(db);
    ap.set_max_size(max_size);
    int total = 0;
    for (const auto& f : files) {
      int fd = f == "-" ? 0 : ::open(f.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) ltx::fail_errno("open " + f);
      ltx::FdReader fr(fd);
      ltx::BufReader in(fr);
      int n = ap.apply_stream(in, f == "-" ? "stdin" : f);
      if (fd != 0) ::close(fd);
      if (n == 0) ltx::fail_integrity((f == "-" ? "stdin" : f) + ": no LTX data");
      if (f != "-" && n != 1) ltx::fail_integrity(f + ": more than one LTX file");
      total += n;
    }
    auto r = ap.commit();
    if (verbose)
      std::fprintf(stderr, "ltx-apply: %s: %d files, txid %s, checksum %s, %u pages\n", db.c_str(),
                   total, ltx::hex16(r.txid).c_str(), ltx::hex16(r.checksum).c_str(), r.commit);
    return cli::kOk;
  });
}
