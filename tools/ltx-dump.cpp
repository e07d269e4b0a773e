// ltx-dump - show an LTX file's header, page frames, index and trailer.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>

#include "cli.h"
#include "ltx/bytes.h"
#include "ltx/ltx.h"

namespace {

std::string q(const std::string& s) { return "\"" + s + "\""; }

void print_header(const ltx::Header& h, bool json) {
  if (json) {
    std::printf(
        "{\"header\":{\"flags\":%u,\"page_size\":%u,\"commit\":%u,\"min_txid\":%s,\"max_txid\":%s,"
        "\"timestamp\":%s,\"pre_apply_checksum\":%s,\"wal_offset\":%lld,\"wal_size\":%lld,"
        "\"wal_salt1\":%u,\"wal_salt2\":%u,\"node_id\":%llu},\"pages\":[",
        h.flags, h.page_size, h.commit, q(ltx::hex16(h.min_txid)).c_str(),
        q(ltx::hex16(h.max_txid)).c_str(), q(ltx::format_timestamp(h.timestamp)).c_str(),
        q(ltx::hex16(h.pre_apply)).c_str(), (long long)h.wal_offset, (long long)h.wal_size,
        h.wal_salt1, h.wal_salt2, (unsigned long long)h.node_id);
    return;
  }
  std::printf("# HEADER\n");
  std::printf("Version:    3\nFlags:      0x%08x%s\nPage size:  %u\nCommit:     %u\n", h.flags,
              h.no_checksum() ? " (no checksum)" : "", h.page_size, h.commit);
  std::printf("Min TXID:   %s (%llu)\nMax TXID:   %s (%llu)\n", ltx::hex16(h.min_txid).c_str(),
              (unsigned long long)h.min_txid, ltx::hex16(h.max_txid).c_str(),
              (unsigned long long)h.max_txid);
  std::printf("Timestamp:  %s (%lld)\nPre-apply:  %s\n", ltx::format_timestamp(h.timestamp).c_str(),
              (long long)h.timestamp, ltx::hex16(h.pre_apply).c_str());
  std::printf("WAL offset: %lld\nWAL size:   %lld\nWAL salt:   %08x %08x\nNode ID:    %llu\n\n",
              (long long)h.wal_offset, (long long)h.wal_size, h.wal_salt1, h.wal_salt2,
              (unsigned long long)h.node_id);
  std::printf("# PAGES\n");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Show an LTX file: header, page frames, page index and trailer.", "ltx-dump"};
  std::string path;
  bool json = false;
  app.add_option("file", path, "LTX file, or - for stdin")->required();
  app.add_flag("--json", json, "print one JSON object");
  return cli::run(app, argc, argv, [&] {
    int fd = path == "-" ? 0 : ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) ltx::fail_errno("open " + path);
    ltx::FdReader fr(fd);
    ltx::BufReader in(fr);
    ltx::Decoder d(in);
    return ltx::with_context(path, [&] {
      if (!d.read_header()) ltx::fail_integrity("decode header: empty input");
      const ltx::Header& h = d.header();
      print_header(h, json);
      std::vector<uint8_t> page(h.page_size);
      uint32_t pgno;
      int n = 0;
      while (d.next_page(&pgno, page.data())) {
        uint64_t ck = ltx::page_checksum(pgno, page.data(), h.page_size);
        if (json)
          std::printf("%s{\"pgno\":%u,\"offset\":%llu,\"size\":%llu,\"checksum\":%s%s}", n ? "," : "",
                      pgno, (unsigned long long)d.frame_offset(), (unsigned long long)d.frame_size(),
                      q(ltx::hex16(ck)).c_str(), d.frame_legacy() ? ",\"legacy\":true" : "");
        else
          std::printf("Frame %-6d pgno=%-10u offset=%-10llu size=%-6llu checksum=%s%s\n", n + 1, pgno,
                      (unsigned long long)d.frame_offset(), (unsigned long long)d.frame_size(),
                      ltx::hex16(ck).c_str(), d.frame_legacy() ? " (legacy lz4 frame)" : "");
        n++;
      }
      std::fflush(stdout);
      const ltx::Trailer& t = d.finish();
      if (json) {
        std::printf("],\"trailer\":{\"post_apply_checksum\":%s,\"file_checksum\":%s},\"size\":%llu}\n",
                    q(ltx::hex16(t.post_apply)).c_str(), q(ltx::hex16(t.file_checksum)).c_str(),
                    (unsigned long long)d.offset());
      } else {
        std::printf("\n# PAGE INDEX\n%d entries (verified against the frames)\n\n", n);
        std::printf("# TRAILER\nPost-apply:    %s\nFile checksum: %s\nFile size:     %llu\n",
                    ltx::hex16(t.post_apply).c_str(), ltx::hex16(t.file_checksum).c_str(),
                    (unsigned long long)d.offset());
      }
      uint8_t extra;
      if (path != "-" && in.read(&extra, 1) != 0) ltx::fail_integrity("bytes after the trailer");
      if (std::fflush(stdout) != 0 || std::ferror(stdout)) ltx::fail_errno("write stdout");
      return cli::kOk;
    });
  });
}
