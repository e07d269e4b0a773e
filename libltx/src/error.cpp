#include "ltx/error.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "ltx/bytes.h"

namespace ltx {

void fail(Kind k, const std::string& msg) { throw Error(k, msg); }

void fail_permanent(const std::string& msg) { throw Error(Kind::Runtime, msg, true); }

void fail_errno(const std::string& msg) {
  int e = errno;
  throw Error(Kind::Runtime, msg + ": " + std::strerror(e));
}

std::string hex16(uint64_t v) {
  char b[17];
  std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(v));
  return b;
}

std::string hex08(uint32_t v) {
  char b[9];
  std::snprintf(b, sizeof b, "%08x", v);
  return b;
}

bool parse_hex16(const std::string& s, uint64_t* out) {
  if (s.size() != 16) return false;
  uint64_t v = 0;
  for (char c : s) {
    int d;
    if (c >= '0' && c <= '9') d = c - '0';
    else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
    else return false;
    v = v << 4 | uint64_t(d);
  }
  *out = v;
  return true;
}

}  // namespace ltx
