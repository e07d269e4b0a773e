// ltx-merge - merge contiguous LTX files into one (compaction), streaming.
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>

#include "cli.h"
#include "ltx/bytes.h"
#include "ltx/merge.h"

int main(int argc, char** argv) {
  CLI::App app{"Merge contiguous LTX files into one: the newest version of every page.",
               "ltx-merge"};
  std::vector<std::string> files;
  std::string out_path, tmpdir, max_size_text;
  bool overlap = false, verbose = false;
  app.add_option("files", files, "LTX files, oldest first")->required();
  app.add_option("-o,--output", out_path, "write atomically to this file (recommended); - is stdout");
  app.add_flag("--allow-overlap", overlap, "accept overlapping TXID ranges (min <= previous max + 1)");
  app.add_option("--tmpdir", tmpdir, "directory for the page index spool (default: $TMPDIR or /tmp)");
  app.add_option("--max-size", max_size_text, "refuse a result whose database would be larger (e.g. 10G)");
  app.add_flag("-v,--verbose", verbose, "report the merged file on stderr");
  return cli::run(app, argc, argv, [&]() -> int {
    for (const auto& f : files)
      if (f == "-") {
        cli::error("inputs must be files, not -");
        return cli::kUsage;
      }
    uint64_t max_size = 0;
    if (!max_size_text.empty() && (max_size = cli::parse_size(max_size_text)) == 0) {
      cli::error("--max-size: not a size: " + max_size_text);
      return cli::kUsage;
    }
    const bool to_stdout = out_path.empty() || out_path == "-";
    if (to_stdout && ltx::is_tty(1)) {
      cli::error("refusing to write LTX to a terminal (use -o FILE)");
      return cli::kUsage;
    }
    tmpdir = cli::tmpdir(tmpdir);
    ltx::install_cleanup_handlers();

    // One fd, reader and buffer per input, all open at once.
    struct Src {
      int fd;
      std::unique_ptr<ltx::FdReader> fr;
      std::unique_ptr<ltx::BufReader> br;
      ~Src() { ::close(fd); }
    };
    std::vector<std::unique_ptr<Src>> srcs;
    std::vector<ltx::MergeInput> inputs;
    for (const auto& f : files) {
      int fd = ::open(f.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) ltx::fail_errno("open " + f);
      auto s = std::make_unique<Src>();
      s->fd = fd;
      s->fr = std::make_unique<ltx::FdReader>(fd);
      s->br = std::make_unique<ltx::BufReader>(*s->fr, 32 * 1024);
      inputs.push_back({s->br.get(), f});
      srcs.push_back(std::move(s));
    }

    std::unique_ptr<ltx::AtomicFile> af;
    if (!to_stdout) af = std::make_unique<ltx::AtomicFile>(out_path);
    ltx::FdWriter w(af ? af->fd() : 1);
    ltx::MergeOptions opt;
    opt.allow_overlap = overlap;
    opt.spool_dir = tmpdir;
    opt.max_size = max_size;
    opt.room_fd = af ? af->fd() : 1;  // a pipe on stdout has no room to measure
    auto r = ltx::merge(inputs, w, opt);
    w.flush();
    if (af) af->commit();
    if (verbose)
      std::fprintf(stderr, "ltx-merge: %zu files -> %s %s: commit %u, %u pages (%u zero), post-apply %s\n",
                   files.size(), r.header.snapshot() ? "snapshot" : "delta",
                   ltx::format_filename(r.header.min_txid, r.header.max_txid).c_str(), r.header.commit,
                   r.pages, r.zero_pages, ltx::hex16(r.trailer.post_apply).c_str());
    return cli::kOk;
  });
}
