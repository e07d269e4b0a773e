// ltx-compact - test fixture helper: merge contiguous LTX files into one
// (the newest version of every page), as a compaction level would.
// usage: ltx-compact FILE... > OUT.ltx   (small inputs; pages held in memory)
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <map>
#include <vector>

#include "ltx/checksum.h"
#include "ltx/error.h"
#include "ltx/ltx.h"

int main(int argc, char** argv) {
  try {
    if (argc < 2) ltx::fail(ltx::Kind::Usage, "usage: ltx-compact FILE...");
    std::map<uint32_t, std::vector<uint8_t>> pages;
    ltx::Header first, last;
    ltx::Trailer lt;
    for (int i = 1; i < argc; i++) {
      int fd = ::open(argv[i], O_RDONLY);
      if (fd < 0) ltx::fail_errno(argv[i]);
      ltx::FdReader fr(fd);
      ltx::BufReader in(fr);
      ltx::Decoder d(in);
      if (!d.read_header()) ltx::fail_integrity(std::string(argv[i]) + ": empty");
      const ltx::Header& h = d.header();
      if (i > 1 && h.min_txid != last.max_txid + 1) ltx::fail_integrity(std::string(argv[i]) + ": not contiguous");
      std::vector<uint8_t> page(h.page_size);
      uint32_t pgno;
      while (d.next_page(&pgno, page.data())) pages[pgno] = page;
      lt = d.finish();
      if (i == 1) first = h;
      last = h;
      ::close(fd);
    }
    ltx::Header out = last;
    out.min_txid = first.min_txid;
    out.pre_apply = first.pre_apply;
    ltx::FdWriter w(1);
    ltx::Encoder e(w, out);
    for (auto& kv : pages)
      if (kv.first <= out.commit) e.page(kv.first, kv.second.data());
    e.finish(lt.post_apply);
    w.flush();
    return 0;
  } catch (const ltx::Error& e) {
    std::fprintf(stderr, "ltx-compact: %s\n", e.what());
    return int(e.kind());
  }
}
