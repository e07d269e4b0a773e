// ltx-checksum - print the LTX database checksum of SQLite database files.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "cli.h"
#include "ltx/bytes.h"
#include "ltx/checksum.h"
#include "ltx/io.h"
#include "ltx/ltx.h"

int main(int argc, char** argv) {
  CLI::App app{"Print the LTX database checksum (CRC-64 fold, lock page excluded) of each file.",
               "ltx-checksum"};
  std::vector<std::string> files;
  app.add_option("files", files, "database files")->required();
  return cli::run(app, argc, argv, [&] {
    for (const auto& f : files) {
      int fd = ::open(f.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) ltx::fail_errno("open " + f);
      struct stat st {};
      if (::fstat(fd, &st) != 0) ltx::fail_errno("stat " + f);
      uint64_t ck = ltx::kChecksumFlag;
      if (st.st_size > 0) {
        uint8_t h[100];
        if (ltx::pread_full(fd, h, 100, 0) != 100 || std::memcmp(h, "SQLite format 3", 16) != 0)
          ltx::fail_integrity(f + ": not a SQLite database");
        uint32_t ps = ltx::get16(h + 16);
        if (ps == 1) ps = 65536;
        if (!ltx::valid_page_size(ps) || uint64_t(st.st_size) % ps != 0)
          ltx::fail_integrity(f + ": size is not a multiple of the page size");
        ck = ltx::db_checksum_fd(fd, ps, uint64_t(st.st_size) / ps);
      }
      ::close(fd);
      std::printf(files.size() > 1 ? "%s  %s\n" : "%s\n", ltx::hex16(ck).c_str(), f.c_str());
    }
    if (std::fflush(stdout) != 0) ltx::fail_errno("write stdout");
    return cli::kOk;
  });
}
