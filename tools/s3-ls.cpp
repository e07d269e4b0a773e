// s3-ls - list a replica's files (name, size, time), or plain objects (--raw).
#include "cli.h"
#include "ltx/bytes.h"
#include "ltx/ltx.h"
#include "ltx/replica.h"
#include "s3common.h"

namespace {

struct Options {
  std::string url;
  int level = -1;
  bool json = false, raw = false;
  s3cli::Flags s3;
};

using cli::json_str;

int run(const Options& o) {
  ltx::Location loc = ltx::parse_url(o.url);
  ltx::S3Config cfg = s3cli::config(o.s3, loc);
  auto store = ltx::open_store(loc, cfg);
  ltx::FdWriter out(1);
  auto emit = [&](const std::string& s) { out.write(s.data(), s.size()); };
  if (o.json) emit("[");
  bool first = true;
  auto sep = [&] {
    if (o.json) emit(first ? "\n" : ",\n");
    first = false;
  };
  if (o.raw) {
    std::string prefix = loc.path.empty() ? "" : loc.path + "/";
    for (auto& ob : store->list(prefix)) {
      sep();
      std::string rel = ob.key.substr(prefix.size()), t = ltx::format_timestamp(ob.mtime_ms);
      if (o.json)
        emit("{\"key\":" + json_str(rel) + ",\"size\":" + std::to_string(ob.size) + ",\"time\":\"" + t + "\"}");
      else
        emit(rel + "\t" + std::to_string(ob.size) + "\t" + t + "\n");
    }
  } else {
    ltx::Replica rep(*store, loc);
    for (auto& f : rep.list(o.level)) {
      sep();
      std::string t = ltx::format_timestamp(f.mtime_ms);
      if (o.json)
        emit("{\"level\":" + std::to_string(f.level) + ",\"min_txid\":\"" + ltx::hex16(f.min_txid) +
             "\",\"max_txid\":\"" + ltx::hex16(f.max_txid) + "\",\"size\":" + std::to_string(f.size) +
             ",\"time\":\"" + t + "\",\"key\":" + json_str(f.key) + "}");
      else
        emit(f.name() + "\t" + std::to_string(f.size) + "\t" + t + "\n");
    }
  }
  if (o.json) emit(first ? "]\n" : "\n]\n");
  out.flush();
  return cli::kOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"List a replica's LTX files: LEVEL/MIN-MAX.ltx, size, time.", "s3-ls"};
  Options o;
  app.add_option("url", o.url, "s3://BUCKET/PREFIX or file:///DIR")->required();
  app.add_option("-l,--level", o.level, "only this level (0-9)")->check(CLI::Range(0, 9));
  app.add_flag("--json", o.json, "a JSON array of objects");
  app.add_flag("--raw", o.raw, "list every object under the prefix, not replica files");
  app.add_option("--max-keys", o.s3.max_keys, "ListObjectsV2 page size (default 1000)")->check(CLI::Range(1, 1000));
  s3cli::add_flags(app, o.s3);
  return cli::run(app, argc, argv, [&] { return run(o); });
}
