// bytes.h - big-endian integers byte by byte, and LEB128 varints.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace ltx {

inline uint16_t get16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }
inline uint32_t get32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | uint32_t(p[3]);
}
inline uint64_t get64(const uint8_t* p) { return uint64_t(get32(p)) << 32 | get32(p + 4); }
inline void put16(uint8_t* p, uint16_t v) { p[0] = uint8_t(v >> 8); p[1] = uint8_t(v); }
inline void put32(uint8_t* p, uint32_t v) {
  p[0] = uint8_t(v >> 24); p[1] = uint8_t(v >> 16); p[2] = uint8_t(v >> 8); p[3] = uint8_t(v);
}
inline void put64(uint8_t* p, uint64_t v) { put32(p, uint32_t(v >> 32)); put32(p + 4, uint32_t(v)); }

// Unsigned LEB128 (Go's binary.AppendUvarint). Returns bytes written (<= 10).
inline size_t put_uvarint(uint8_t* p, uint64_t v) {
  size_t n = 0;
  while (v >= 0x80) { p[n++] = uint8_t(v) | 0x80; v >>= 7; }
  p[n++] = uint8_t(v);
  return n;
}

std::string hex16(uint64_t v);  // "%016x"
std::string hex08(uint32_t v);  // "%08x"
// Parse exactly 16 hex digits (either case). False on anything else.
bool parse_hex16(const std::string& s, uint64_t* out);

}  // namespace ltx
