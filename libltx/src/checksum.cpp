// CRC-64/GO-ISO with slicing-by-16 tables, and the LTX database checksum.
#include "ltx/checksum.h"

#include <cstring>
#include <vector>

#include "ltx/bytes.h"
#include "ltx/error.h"
#include "ltx/io.h"

namespace ltx {

namespace {

constexpr uint64_t kPoly = 0xD800000000000000ull;  // 0x1B reflected

struct Tables {
  uint64_t t[16][256];
  Tables() {
    for (int i = 0; i < 256; i++) {
      uint64_t c = uint64_t(i);
      for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ kPoly : c >> 1;
      t[0][i] = c;
    }
    for (int i = 0; i < 256; i++)
      for (int s = 1; s < 16; s++) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xff];
  }
};

const Tables& tables() {
  static const Tables tb;
  return tb;
}

inline uint64_t le64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  v = __builtin_bswap64(v);
#endif
  return v;
}

}  // namespace

uint64_t crc64_update(uint64_t crc, const void* data, size_t n) {
  const auto& T = tables().t;
  auto* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
  while (n >= 16) {
    uint64_t a = le64(p) ^ crc;
    uint64_t b = le64(p + 8);
    crc = T[15][a & 0xff] ^ T[14][(a >> 8) & 0xff] ^ T[13][(a >> 16) & 0xff] ^
          T[12][(a >> 24) & 0xff] ^ T[11][(a >> 32) & 0xff] ^ T[10][(a >> 40) & 0xff] ^
          T[9][(a >> 48) & 0xff] ^ T[8][a >> 56] ^ T[7][b & 0xff] ^ T[6][(b >> 8) & 0xff] ^
          T[5][(b >> 16) & 0xff] ^ T[4][(b >> 24) & 0xff] ^ T[3][(b >> 32) & 0xff] ^
          T[2][(b >> 40) & 0xff] ^ T[1][(b >> 48) & 0xff] ^ T[0][b >> 56];
    p += 16;
    n -= 16;
  }
  while (n--) crc = T[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
  return ~crc;
}

uint64_t page_checksum(uint32_t pgno, const uint8_t* data, size_t page_size) {
  uint8_t b[4];
  put32(b, pgno);
  return kChecksumFlag | crc64_update(crc64_update(0, b, 4), data, page_size);
}

uint64_t db_checksum_fd(int fd, uint32_t page_size, uint64_t n_pages) {
  const size_t chunk_pages = std::max<size_t>(1, (1u << 20) / page_size);
  std::vector<uint8_t> buf(chunk_pages * page_size);
  const uint32_t lock = lock_pgno(page_size);
  uint64_t ck = kChecksumFlag;
  for (uint64_t first = 1; first <= n_pages; first += chunk_pages) {
    size_t k = size_t(std::min<uint64_t>(chunk_pages, n_pages - first + 1));
    size_t want = k * page_size;
    if (pread_full(fd, buf.data(), want, (first - 1) * page_size) != want)
      fail_integrity("read page " + std::to_string(first) + ": unexpected EOF");
    for (size_t i = 0; i < k; i++) {
      uint32_t pgno = uint32_t(first + i);
      if (pgno == lock) continue;
      ck = fold(ck, page_checksum(pgno, buf.data() + i * page_size, page_size));
    }
  }
  return ck;
}

}  // namespace ltx
