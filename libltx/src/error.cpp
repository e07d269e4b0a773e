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

std::string printable(const std::string& s) {
  static const char* d = "0123456789abcdef";
  std::string o;
  o.reserve(s.size());
  auto esc = [&](unsigned char c) {
    o += "\\x";
    o += d[c >> 4];
    o += d[c & 15];
  };
  for (size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      if (c < 0x20 || c == 0x7f) esc(c);
      else o += char(c);
      i++;
      continue;
    }
    // One well-formed UTF-8 sequence (no overlong form, no surrogate, no C1).
    size_t n = c >= 0xf0 && c <= 0xf4 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c < 0xe0 ? 2 : 0;
    if (c >= 0xf5) n = 0;
    uint32_t cp = n == 2 ? c & 0x1f : n == 3 ? c & 0x0f : c & 0x07;
    bool ok = n > 0 && i + n <= s.size();
    for (size_t k = 1; ok && k < n; k++) {
      auto b = static_cast<unsigned char>(s[i + k]);
      if ((b & 0xc0) != 0x80) ok = false;
      cp = cp << 6 | (b & 0x3f);
    }
    if (ok && ((n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp < 0xe000))) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
               (cp >= 0x80 && cp < 0xa0)))
      ok = false;
    if (!ok) {
      esc(c);
      i++;
      continue;
    }
    o.append(s, i, n);
    i += n;
  }
  return o;
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
