// s3-get - plan a restore from a replica (newest snapshot at or before the
// target, then the fewest files that reach it) and stream it to stdout as
// one concatenated LTX stream; or fetch one plain object (--raw).
#include <unistd.h>

#include "cli.h"
#include "ltx/ltx.h"
#include "ltx/replica.h"
#include "s3common.h"

namespace {

struct Options {
  std::string url, txid, timestamp;
  bool dry_run = false, raw = false;
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
  ltx::FdWriter out(1);
  if (o.raw) {
    if (loc.path.empty()) ltx::fail(ltx::Kind::Usage, o.url + ": --raw needs a key");
    store->get(loc.path, out);
    out.flush();
    return cli::kOk;
  }
  ltx::Replica rep(*store, loc);
  auto files = ltx::with_context(o.url, [&] { return rep.list(); });
  if (files.empty()) ltx::fail_integrity(o.url + ": no replica files");
  ltx::RestorePlan plan = ltx::with_context(o.url, [&] { return ltx::plan_restore(rep, files, target); });
  if (o.dry_run) {
    for (auto& f : plan.files)
      out.write((f.name() + "\t" + std::to_string(f.size) + "\n").data(), f.name().size() + std::to_string(f.size).size() + 2);
    out.flush();
    return cli::kOk;
  }
  ltx::PlanCheckWriter check(out);
  for (auto& f : plan.files) {
    check.begin(f);
    uint64_t n = store->get(f.key, check);
    if (n != f.size) ltx::fail_integrity(f.key + ": got " + std::to_string(n) + " bytes, listed " + std::to_string(f.size));
    check.end();
    if (o.s3.verbose) cli::error(f.key + ": sent " + std::to_string(n) + " bytes");
  }
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
  app.add_flag("--raw", o.raw, "write one plain object to stdout")->excludes(tx);
  app.add_option("--max-keys", o.s3.max_keys, "ListObjectsV2 page size (default 1000)")->check(CLI::Range(1, 1000));
  s3cli::add_flags(app, o.s3);
  return cli::run(app, argc, argv, [&] { return run(o); });
}
