// ltx-verify - fully verify LTX files: header rules, every page frame, the
// page index, the file checksum and (for snapshots) the post-apply checksum.
#include <fcntl.h>
#include <unistd.h>

#include "cli.h"
#include "ltx/ltx.h"

namespace {

struct Options {
  std::vector<std::string> files;
  bool verbose = false;
  std::string max_size_text;
  uint64_t max_size = 0;
};

// Verify one input. A named file holds exactly one LTX file; "-" reads a
// concatenated LTX stream from stdin.
void verify_input(const std::string& path, bool verbose, uint64_t max_size) {
  bool is_stdin = path == "-";
  int fd = is_stdin ? 0 : ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) ltx::fail_errno("open " + path);
  struct Closer {
    int fd;
    bool own;
    ~Closer() {
      if (own) ::close(fd);
    }
  } closer{fd, !is_stdin};
  ltx::FdReader fr(fd);
  ltx::BufReader in(fr);
  int n = 0;
  for (;; n++) {
    ltx::Header h;
    ltx::Decoder d(in);
    bool any = ltx::with_context(path, [&] { return d.read_header(); });
    if (!any) break;
    ltx::with_context(path, [&] {
      ltx::check_max_size(d.header(), max_size);
      std::vector<uint8_t> page(d.header().page_size);
      uint32_t pgno;
      while (d.next_page(&pgno, page.data())) {
      }
      d.finish();
    });
    if (verbose)
      std::fprintf(stderr, "ltx-verify: %s: %s ok (%u pages)\n", path.c_str(),
                   ltx::format_filename(d.header().min_txid, d.header().max_txid).c_str(),
                   d.page_count());
    if (!is_stdin) {
      uint8_t extra;
      if (in.read(&extra, 1) != 0) ltx::fail_integrity(path + ": bytes after the trailer");
      n++;
      break;
    }
  }
  if (n == 0) ltx::fail_integrity(path + ": decode header: empty input");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Verify LTX files: frames, page index, file and database checksums.", "ltx-verify"};
  Options o;
  app.add_option("files", o.files, "LTX files; - reads a concatenated LTX stream from stdin")
      ->required();
  app.add_flag("-v,--verbose", o.verbose, "report each verified file on stderr");
  app.add_option("--max-size", o.max_size_text, "reject files that make a database larger, as ltx-apply --max-size does");
  return cli::run(app, argc, argv, [&] {
    if (!o.max_size_text.empty() && (o.max_size = cli::parse_size(o.max_size_text)) == 0) {
      cli::error("--max-size: not a size: " + o.max_size_text);
      return int(cli::kUsage);
    }
    int worst = cli::kOk;
    for (const auto& f : o.files) {
      try {
        verify_input(f, o.verbose, o.max_size);
      } catch (const ltx::Error& e) {
        cli::error(e.what());
        worst = std::max(worst, int(e.kind()));
      }
    }
    return worst;
  });
}
