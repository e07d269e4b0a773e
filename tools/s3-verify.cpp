// s3-verify - verify a whole replica: every file completely, and the chain
// across files and levels. Defects on stderr, one a line; summary on stdout.
#include <cstdlib>

#include "cli.h"
#include "ltx/bytes.h"
#include "ltx/ltx.h"
#include "ltx/replica.h"
#include "s3common.h"

namespace {

struct Options {
  std::string url;
  bool quiet = false;
  bool shallow = false;  // no replay: the restorable range as the files' checksums claim it
  std::string tmpdir;
  s3cli::Flags s3;
};

int run(const Options& o) {
  ltx::Location loc = ltx::parse_url(o.url);
  ltx::S3Config cfg = s3cli::config(o.s3, loc);  // also ignores SIGPIPE
  auto store = ltx::open_store(loc, cfg);
  ltx::Replica rep(*store, loc);
  ltx::VerifyOptions vo;
  vo.replay = !o.shallow;
  vo.tmpdir = cli::tmpdir(o.tmpdir);
  if (o.s3.verbose) vo.on_replay = [](const ltx::ReplicaFile& f) { cli::error("replay " + f.name()); };
  ltx::ReplicaReport r = ltx::with_context(o.url, [&] {
    return ltx::verify_replica(
        rep, [&](const ltx::ReplicaFile& f) {
          if (o.s3.verbose) cli::error("verify " + f.name());
        },
        vo);
  });
  for (auto& d : r.defects) cli::error(o.url + ": " + d);
  // Multipart uploads never completed nor aborted cost storage; one that is
  // still running (a watch uploading a snapshot) is listed as well.
  auto uploads = ltx::with_context(o.url, [&] { return store->list_uploads(loc.path.empty() ? "" : loc.path + "/"); });
  for (auto& u : uploads)
    cli::error(o.url + ": unfinished multipart upload of " + u.key + " (begun " + ltx::format_timestamp(u.initiated_ms) +
               ", upload id " + u.upload_id + ")");
  if (!o.quiet) {
    std::string s = "files\t" + std::to_string(r.files) + "\t" + std::to_string(r.bytes) + " bytes\t";
    bool first = true;
    for (int lv = 0; lv <= ltx::kMaxLevel; lv++) {
      if (!r.per_level[lv]) continue;
      s += std::string(first ? "" : ", ") + "level " + std::to_string(lv) + ": " + std::to_string(r.per_level[lv]);
      first = false;
    }
    s += "\nlatest\t" + ltx::hex16(r.latest) + "\n";
    if (r.restore_points)
      s += "restorable\t" + ltx::hex16(r.restore_min) + "-" + ltx::hex16(r.restore_max) + "\t" +
           std::to_string(r.restore_points) + " TXIDs\n";
    else
      s += "restorable\tnone\n";
    s += r.replayed ? "proof\treplayed\n" : "proof\tclaimed by the files' checksums (--shallow)\n";
    s += "defects\t" + std::to_string(r.defects.size()) + "\t" + std::to_string(r.bad_files) + " corrupt, " +
         std::to_string(r.gaps) + " gaps, " + std::to_string(r.orphans) + " orphans\n";
    if (!uploads.empty()) s += "uploads\t" + std::to_string(uploads.size()) + " unfinished multipart\n";
    ltx::FdWriter out(1);
    out.write(s.data(), s.size());
    out.flush();
  }
  return r.defects.empty() ? cli::kOk : cli::kIntegrity;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Verify every file of a replica and the chain across files and levels.", "s3-verify"};
  Options o;
  app.add_option("url", o.url, "s3://BUCKET/PREFIX or file:///DIR")->required();
  app.add_flag("-q,--quiet", o.quiet, "no summary on stdout (defects still go to stderr)");
  app.add_flag("--shallow", o.shallow,
               "do not replay the chain: the restorable range is what the files' checksums claim, not proven");
  app.add_option("--tmpdir", o.tmpdir, "directory of the replay's temporary database (default: $TMPDIR or /tmp)");
  app.add_option("--max-keys", o.s3.max_keys, "ListObjectsV2 page size (default 1000)")->check(CLI::Range(1, 1000));
  s3cli::add_flags(app, o.s3);
  return cli::run(app, argc, argv, [&] { return run(o); });
}
