// CRC-64/GO-ISO, and the LTX database checksum.
//
// Two implementations of one function: carry-less multiplication folding
// (PCLMULQDQ, ~16 GB/s here) where the CPU has it, slicing-by-16 tables
// (~3 GB/s) elsewhere. Folding keeps four 128-bit accumulators congruent to
// the message modulo P; a 64-bit half at distance D bits ahead is folded
// with the constant reflect(x^(D+63) mod P) (low half) or reflect(x^(D-1)
// mod P) (high half); the final 16 bytes go through the tables.
#include "ltx/checksum.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
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

uint64_t raw_bytes(uint64_t crc, const uint8_t* p, size_t n) {
  const auto& T = tables().t;
  while (n--) crc = T[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
  return crc;
}

#if defined(__x86_64__)
// x^e mod P, P = x^64 + x^4 + x^3 + x + 1, then bit-reflected.
uint64_t reflected_xpow(int e) {
  uint64_t r = 1;
  for (int i = 0; i < e; i++) r = (r & (uint64_t(1) << 63)) ? (r << 1) ^ 0x1B : r << 1;
  uint64_t out = 0;
  for (int i = 0; i < 64; i++)
    if (r >> i & 1) out |= uint64_t(1) << (63 - i);
  return out;
}

__attribute__((target("pclmul,sse2"))) inline __m128i fold(__m128i x, __m128i k, __m128i b) {
  return _mm_xor_si128(
      _mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00), _mm_clmulepi64_si128(x, k, 0x11)), b);
}

__attribute__((target("pclmul,sse2"))) uint64_t crc64_clmul(uint64_t crc, const uint8_t* p,
                                                            size_t n) {
  static const __m128i k128 = _mm_set_epi64x(int64_t(reflected_xpow(127)), int64_t(reflected_xpow(191)));
  static const __m128i k512 = _mm_set_epi64x(int64_t(reflected_xpow(511)), int64_t(reflected_xpow(575)));
  auto load = [](const uint8_t* q) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(q)); };
  crc = ~crc;
  if (n >= 128) {
    __m128i x0 = _mm_xor_si128(load(p), _mm_cvtsi64_si128(int64_t(crc)));
    __m128i x1 = load(p + 16), x2 = load(p + 32), x3 = load(p + 48);
    p += 64;
    n -= 64;
    while (n >= 64) {
      x0 = fold(x0, k512, load(p));
      x1 = fold(x1, k512, load(p + 16));
      x2 = fold(x2, k512, load(p + 32));
      x3 = fold(x3, k512, load(p + 48));
      p += 64;
      n -= 64;
    }
    x3 = fold(fold(fold(x0, k128, x1), k128, x2), k128, x3);
    for (; n >= 16; p += 16, n -= 16) x3 = fold(x3, k128, load(p));
    uint8_t b[16];
    _mm_storeu_si128(reinterpret_cast<__m128i*>(b), x3);
    crc = raw_bytes(0, b, 16);
  }
  return ~raw_bytes(crc, p, n);
}

const bool kHaveClmul = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse2");
#endif

}  // namespace

uint64_t crc64_update(uint64_t crc, const void* data, size_t n) {
#if defined(__x86_64__)
  if (kHaveClmul) return crc64_clmul(crc, static_cast<const uint8_t*>(data), n);
#endif
  return crc64_update_tables(crc, data, n);
}

uint64_t crc64_update_tables(uint64_t crc, const void* data, size_t n) {
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

namespace {
// XOR of the integers 0..n.
uint64_t xor_upto(uint64_t n) {
  switch (n & 3) {
    case 0: return n;
    case 1: return 1;
    case 2: return n + 1;
    default: return 0;
  }
}
}  // namespace

uint64_t fold_zero_pages(uint64_t acc, uint64_t first, uint64_t last, uint32_t page_size) {
  if (first == 0) first = 1;
  if (last > kMaxPageCount) fail(Kind::Usage, "fold_zero_pages: page " + std::to_string(last) + " out of range");
  if (first > last) return acc;
  uint64_t n = last - first + 1;
  uint64_t x = xor_upto(last) ^ xor_upto(first - 1);
  const uint64_t lock = lock_pgno(page_size);
  if (lock >= first && lock <= last) {
    n--;
    x ^= lock;
  }
  if (n == 0) return acc;
  static const uint8_t zero[65536] = {};
  if (page_size > sizeof zero) fail(Kind::Usage, "fold_zero_pages: page size " + std::to_string(page_size));
  uint64_t z = page_checksum(uint32_t(x), zero, page_size);
  if (n % 2 == 0) z ^= page_checksum(0, zero, page_size);
  return kChecksumFlag | (acc ^ z);
}

void DbChecksum::write(uint32_t pgno, const uint8_t* old, const uint8_t* data) {
  uint64_t was = 0;
  if (had(pgno)) {
    was = page_checksum(pgno, old, ps_);
  } else {
    end_at(uint64_t(pgno) - 1);
    next_zero_ = uint64_t(pgno) + 1;
  }
  replace(was, page_checksum(pgno, data, ps_));
}

void DbChecksum::end_at(uint64_t n) {
  if (next_zero_ <= n) ck_ = fold_zero_pages(ck_, next_zero_, n, ps_);
  next_zero_ = std::max(next_zero_, n + 1);
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
