// ls3-get - restore a Litestream v0.3 replica (generations/...) as an LTX
// stream: the generation's snapshot, then one LTX file per WAL index, for
// ltx-apply. Lets Litestream users move to walsync.
#include <cstdlib>

#include "cli.h"
#include "ltx/bytes.h"
#include "ltx/litestream3.h"
#include "ltx/ltx.h"
#include "s3common.h"

namespace {

struct Options {
  std::string url, generation, index, timestamp, tmpdir;
  bool dry_run = false;
  s3cli::Flags s3;
};

int run(const Options& o) {
  ltx::Location loc = ltx::parse_url(o.url);
  ltx::Ls3Target t;
  t.generation = o.generation;
  if (!o.generation.empty() && (o.generation.size() != 16 || o.generation.find_first_not_of("0123456789abcdef") != std::string::npos))
    ltx::fail(ltx::Kind::Usage, "--generation " + o.generation + ": want 16 lowercase hex digits");
  if (!o.index.empty()) {
    char* end = nullptr;
    unsigned long v = std::strtoul(o.index.c_str(), &end, 16);
    if (o.index.size() > 8 || *end || end == o.index.c_str())
      ltx::fail(ltx::Kind::Usage, "--index " + o.index + ": want up to 8 hex digits");
    t.has_index = true, t.index = uint32_t(v);
  }
  if (!o.timestamp.empty()) {
    t.has_time = true;
    if (!ltx::parse_timestamp(o.timestamp, &t.time_ms))
      ltx::fail(ltx::Kind::Usage, "--timestamp " + o.timestamp + ": want RFC 3339, e.g. 2024-01-02T03:04:05Z");
  }
  if (!o.dry_run && ltx::is_tty(1))
    ltx::fail(ltx::Kind::Usage, "refusing to write binary data to a terminal (redirect stdout)");
  ltx::S3Config cfg = s3cli::config(o.s3, loc);
  auto store = ltx::open_store(loc, cfg);
  // file:// replicas of Litestream keep generations/ right under the directory
  ltx::Ls3Plan p = ltx::with_context(o.url, [&] { return ltx::plan_ls3(*store, loc.path, t); });
  ltx::FdWriter out(1);
  if (o.dry_run) {
    std::string s = "generation\t" + p.generation + "\nsnapshot\t" + ltx::hex08(p.snapshot_index) + "\t" +
                    std::to_string(p.snapshot.size) + "\n";
    for (auto& w : p.wal)
      s += "wal\t" + ltx::hex08(w.index) + "_" + ltx::hex08(uint32_t(w.offset)) + "\t" + std::to_string(w.obj.size) + "\n";
    out.write(s.data(), s.size());
    out.flush();
    return cli::kOk;
  }
  std::string tmp = cli::tmpdir(o.tmpdir);
  std::function<void(const std::string&)> log;
  if (o.s3.verbose) log = [](const std::string& m) { cli::error(m); };
  ltx::with_context(o.url, [&] { ltx::stream_ls3(*store, p, out, tmp, log); });
  return cli::kOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Restore a Litestream v0.3 replica (generations/...) as an LTX stream on stdout.", "ls3-get"};
  Options o;
  app.add_option("url", o.url, "s3://BUCKET/PATH or file:///DIR: the Litestream replica path")->required();
  app.add_option("--generation", o.generation, "restore this generation (default: the one updated last)");
  auto* ix = app.add_option("--index", o.index, "restore up to and including this WAL index (hex)");
  app.add_option("--timestamp", o.timestamp, "restore from snapshots and WAL segments written at or before this time")
      ->excludes(ix);
  app.add_flag("-n,--dry-run", o.dry_run, "print the plan instead of data");
  app.add_option("--tmpdir", o.tmpdir, "directory for temp files (default $TMPDIR or /tmp)");
  app.add_option("--max-keys", o.s3.max_keys, "ListObjectsV2 page size (default 1000)")->check(CLI::Range(1, 1000));
  s3cli::add_flags(app, o.s3);
  return cli::run(app, argc, argv, [&] { return run(o); });
}
