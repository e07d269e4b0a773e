// fuzz_walstream.cpp - libFuzzer target for the WAL stream reader and the
// transaction encoder behind it (`make fuzz`).
//
// A raw mutation of a WAL stream almost never gets past the record hash, so
// the input is a program that writes a stream: records with good hashes and
// (mostly) good SQLite checksums, any number of repeated records, and page
// numbers and commit sizes drawn towards the edges (0, 1, the lock page,
// 0xfffffffe, 0xffffffff). The stream is read to its end, then encoded to
// LTX twice: without state (no-checksum deltas) and with a page state that a
// resync may start. Every input must end in success or an ltx::Error: never
// a crash, a sanitizer report, a hang, an unbounded allocation, more than
// 64 MiB of LTX output, or more than 64 MiB of state on disk.
#define XXH_STATIC_LINKING_ONLY
#include <dirent.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "ltx/bytes.h"
#include "ltx/checksum.h"
#include "ltx/encode.h"
#include "ltx/error.h"
#include "ltx/io.h"
#include "ltx/state.h"
#include "ltx/wal.h"

namespace {

constexpr uint64_t kMaxOutput = 64u << 20;

// Reads the program: bytes, then zeros once it is exhausted.
struct Prog {
  const uint8_t* p;
  size_t n;
  bool more() const { return n > 0; }
  uint8_t u8() {
    if (!n) return 0;
    n--;
    return *p++;
  }
  uint32_t u32() {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v = v << 8 | u8();
    return v;
  }
  // A page number or size: mostly small, often at an edge.
  uint32_t pages(uint32_t ps) {
    switch (u8() % 8) {
      case 0: return 0;
      case 1: return 0xfffffffeu;
      case 2: return 0xffffffffu;
      case 3: return ltx::lock_pgno(ps) - 1 + u8() % 3;
      case 4: return u32();
      default: return 1 + u8() % 16;
    }
  }
};

struct Builder {
  std::string s;
  std::string last;
  uint32_t ps = 512;
  // position and chain
  uint32_t salt1 = 1, salt2 = 2, frames = 0, ck1 = 0, ck2 = 0;
  bool big = false;
  // resync
  uint32_t rs_next = 1, rs_count = 0;
  XXH3_state_t rh;

  void record(uint8_t type, const std::string& body) {
    std::string r(5, '\0');
    r[0] = char(type);
    ltx::put32(reinterpret_cast<uint8_t*>(&r[1]), uint32_t(body.size()));
    r += body;
    uint8_t h[8];
    ltx::put64(h, XXH3_64bits(r.data(), r.size()));
    r.append(reinterpret_cast<char*>(h), 8);
    s += r;
    last = r;
  }
  static void add32(std::string* b, uint32_t v) {
    uint8_t x[4];
    ltx::put32(x, v);
    b->append(reinterpret_cast<char*>(x), 4);
  }
  static void add64(std::string* b, uint64_t v) {
    uint8_t x[8];
    ltx::put64(x, v);
    b->append(reinterpret_cast<char*>(x), 8);
  }

  void header(uint32_t page_size) {
    std::string b = "WSTR";
    add32(&b, 1);
    add32(&b, page_size);
    add32(&b, 0);
    record('H', b);
  }
  void position(Prog& g) {
    salt1 = g.u8() % 3;
    salt2 = 7;
    frames = g.u8() % 4;
    ck1 = g.u32();
    ck2 = g.u32();
    big = g.u8() & 1;
    std::string b;
    for (uint32_t v : {salt1, salt2, 0u, frames, ck1, ck2, big ? 1u : 0u}) add32(&b, v);
    record('G', b);
  }
  void frame(Prog& g) {
    std::string f;
    const uint32_t pgno = g.pages(ps), commit = g.u8() & 1 ? g.pages(ps) : 0;
    add32(&f, pgno);
    add32(&f, commit);
    add32(&f, salt1);
    add32(&f, salt2);
    std::string page(ps, char(g.u8()));
    uint32_t c1 = ck1, c2 = ck2;
    ltx::wal::checksum(big, reinterpret_cast<const uint8_t*>(f.data()), 8, &c1, &c2);
    ltx::wal::checksum(big, reinterpret_cast<const uint8_t*>(page.data()), ps, &c1, &c2);
    if (g.u8() == 0xff) c1 ^= 1;  // now and then a broken chain
    add32(&f, c1);
    add32(&f, c2);
    std::string b;
    add32(&b, frames + 1);
    add64(&b, 1700000000000ull + frames);
    record('F', b + f + page);
    frames++;
    ck1 = c1;
    ck2 = c2;
  }
  void resync_begin(Prog& g) {
    std::string b;
    add32(&b, g.pages(ps));
    add64(&b, 1700000000000ull);
    record('B', b);
    rs_next = 1;
    rs_count = 0;
    XXH3_64bits_reset(&rh);
  }
  void resync_page(Prog& g) {
    if (rs_next == ltx::lock_pgno(ps)) rs_next++;
    std::string b;
    add32(&b, g.u8() == 0xff ? g.u32() : rs_next);
    b += std::string(ps, char(g.u8()));
    XXH3_64bits_update(&rh, b.data(), b.size());
    record('P', b);
    rs_next++;
    rs_count++;
  }
  void resync_end() {
    std::string b;
    add32(&b, rs_count);
    add64(&b, XXH3_64bits_digest(&rh));
    record('E', b);
  }
};

std::string build(const uint8_t* data, size_t size) {
  Prog g{data, size};
  Builder b;
  XXH3_64bits_reset(&b.rh);
  b.ps = 512u << (g.u8() % 2);
  b.header(b.ps);
  while (g.more() && b.s.size() < (4u << 20)) {
    switch (g.u8() % 9) {
      case 0: b.header(g.u8() == 0xff ? 1024 : b.ps); break;
      case 1: b.position(g); break;
      case 2: case 3: b.frame(g); break;
      case 4: b.resync_begin(g); break;
      case 5: b.resync_page(g); break;
      case 6: b.resync_end(); break;
      case 7: {  // repeat the last record up to 65,536 times (< 4 MiB)
        const size_t k = size_t(g.u8()) << 8 | g.u8();
        for (size_t i = 0; i < k && b.s.size() + b.last.size() < (4u << 20); i++) b.s += b.last;
        break;
      }
      default: {  // a few raw bytes: hostile lengths and types
        const size_t k = g.u8() % 16;
        for (size_t i = 0; i < k; i++) b.s += char(g.u8());
      }
    }
  }
  return b.s;
}

struct Bounded : ltx::Writer {
  uint64_t n = 0;
  void write(const void*, size_t k) override {
    n += k;
    if (n > kMaxOutput) {
      std::fprintf(stderr, "fuzz_walstream: more than %llu bytes of LTX\n", (unsigned long long)kMaxOutput);
      __builtin_trap();
    }
  }
};

uint64_t disk_usage(const std::string& dir) {
  uint64_t total = 0;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return 0;
  while (dirent* e = ::readdir(d)) {
    struct stat st {};
    if (::stat((dir + "/" + e->d_name).c_str(), &st) == 0 && S_ISREG(st.st_mode)) total += uint64_t(st.st_blocks) * 512;
  }
  ::closedir(d);
  return total;
}

void remove_dir(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return;
  while (dirent* e = ::readdir(d))
    if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, "..")) ::unlink((dir + "/" + e->d_name).c_str());
  ::closedir(d);
  ::rmdir(dir.c_str());
}

void drain(const std::string& s) {
  ltx::MemReader in(s.data(), s.size());
  try {
    ltx::wal::EventReader r(in);
    for (;;)
      if (r.next().type == ltx::wal::Event::End) break;
  } catch (const ltx::Error&) {
  }
}

void encode(const std::string& s, bool with_state) {
  // tmpfs when there is one: the state syncs every commit.
  char tmpl[] = "/dev/shm/fuzz_walstream.XXXXXX";
  char tmpl2[] = "/tmp/fuzz_walstream.XXXXXX";
  const char* made = ::mkdtemp(tmpl);
  if (!made) made = ::mkdtemp(tmpl2);
  if (!made) __builtin_trap();
  const std::string dir = made;
  try {
    ltx::MemReader in(s.data(), s.size());
    ltx::wal::EventReader r(in);
    Bounded out;
    ltx::EncodeOptions opt;
    opt.first_txid = with_state ? 0 : 2;
    std::unique_ptr<ltx::PageState> st;
    if (with_state) st = std::make_unique<ltx::PageState>(dir + "/state");
    ltx::TxnEncoder enc(out, st.get(), opt, dir);
    enc.run(r);
  } catch (const ltx::Error&) {
  }
  const uint64_t used = disk_usage(dir) + disk_usage(dir + "/state");
  if (used > kMaxOutput) {
    std::fprintf(stderr, "fuzz_walstream: %llu bytes of state and spool\n", (unsigned long long)used);
    __builtin_trap();
  }
  remove_dir(dir + "/state");
  remove_dir(dir);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string s = build(data, size);
  drain(s);
  encode(s, false);
  encode(s, true);
  return 0;
}
