// ltx-apply - apply LTX files to a database, all or nothing.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "ltx/apply.h"
#include "ltx/bytes.h"

int main(int argc, char** argv) {
  CLI::App app{"Apply LTX files (or a concatenated LTX stream on stdin) to a database.",
               "ltx-apply"};
  std::string db;
  std::vector<std::string> files;
  bool verbose = false, force = false;
  app.add_option("db", db, "database to create or update")->required();
  app.add_option("files", files, "LTX files in order; none or - reads stdin");
  app.add_flag("-v,--verbose", verbose, "report the resulting position on stderr");
  app.add_flag("-f,--force", force, "apply even if DB-wal exists");
  return cli::run(app, argc, argv, [&] {
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
    ltx::install_cleanup_handlers();
    ltx::Applier ap(db);
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
