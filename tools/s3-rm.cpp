// s3-rm - delete replica files (LEVEL/MIN-MAX.ltx, as s3-ls prints them) or,
// with --raw, plain objects under the URL; DeleteObjects in batches of 1000.
#include <iostream>

#include "cli.h"
#include "ltx/ltx.h"
#include "ltx/replica.h"
#include "s3common.h"

namespace {

struct Options {
  std::string url;
  std::vector<std::string> names;
  bool raw = false;
  s3cli::Flags s3;
};

int run(Options& o) {
  ltx::Location loc = ltx::parse_url(o.url);
  std::vector<std::string> names;
  for (auto& n : o.names) {
    if (n != "-") {
      names.push_back(n);
      continue;
    }
    std::string line;
    while (std::getline(std::cin, line)) {
      std::string first = line.substr(0, line.find_first_of(" \t"));
      if (!first.empty()) names.push_back(o.raw ? line.substr(0, line.find('\t')) : first);
    }
  }
  ltx::S3Config cfg = s3cli::config(o.s3, loc);
  auto store = ltx::open_store(loc, cfg);
  ltx::Replica rep(*store, loc);
  std::vector<std::string> keys;
  for (auto& n : names) {
    if (o.raw) {
      if (n.empty()) ltx::fail(ltx::Kind::Usage, "empty key");
      keys.push_back(ltx::join_key(loc.path, n));
      continue;
    }
    int level;
    uint64_t lo, hi;
    if (!ltx::parse_replica_name(n, &level, &lo, &hi))
      ltx::fail(ltx::Kind::Usage, n + ": want LEVEL/MINTXID-MAXTXID.ltx (as s3-ls prints)");
    keys.push_back(rep.key(level, lo, hi));
  }
  store->remove(keys);
  if (o.s3.verbose) cli::error("deleted " + std::to_string(keys.size()) + " objects");
  return cli::kOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Delete replica files (for retention), in batches.", "s3-rm"};
  Options o;
  app.add_option("url", o.url, "s3://BUCKET/PREFIX or file:///DIR")->required();
  app.add_option("names", o.names, "LEVEL/MIN-MAX.ltx names; - reads them from stdin (first field a line)");
  app.add_flag("--raw", o.raw, "names are plain keys under URL");
  s3cli::add_flags(app, o.s3);
  return cli::run(app, argc, argv, [&] { return run(o); });
}
