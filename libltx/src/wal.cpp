// wal.cpp - SQLite WAL parsing, the WAL checksum, and the WAL stream
// (man/walstream.5): EventReader for both inputs, StreamWriter for wal-tail.
#include "ltx/wal.h"

#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include <cstring>
#include <string>

#include "ltx/bytes.h"
#include "ltx/checksum.h"
#include "ltx/error.h"

namespace ltx::wal {

namespace {

constexpr uint32_t kWalVersion = 3007000;

inline uint32_t bswap32(uint32_t v) { return __builtin_bswap32(v); }

template <bool Swap>
inline void checksum_impl(const uint8_t* p, size_t n, uint32_t* s1, uint32_t* s2) {
  uint32_t a = *s1, b = *s2;
  const uint8_t* end = p + n;
  // Serial by definition (each word feeds the next); unrolled to keep the
  // loads ahead of the adds.
  while (end - p >= 32) {
    uint32_t w[8];
    std::memcpy(w, p, 32);
    if (Swap)
      for (auto& x : w) x = bswap32(x);
    a += w[0] + b; b += w[1] + a;
    a += w[2] + b; b += w[3] + a;
    a += w[4] + b; b += w[5] + a;
    a += w[6] + b; b += w[7] + a;
    p += 32;
  }
  while (p < end) {
    uint32_t w[2];
    std::memcpy(w, p, 8);
    if (Swap) { w[0] = bswap32(w[0]); w[1] = bswap32(w[1]); }
    a += w[0] + b; b += w[1] + a;
    p += 8;
  }
  *s1 = a;
  *s2 = b;
}

constexpr bool kHostBig = __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__;

std::string num(uint64_t v) { return std::to_string(v); }

// A WAL frame header's page number and commit size fit SQLite's limit;
// otherwise what is wrong.
std::string size_defect(const uint8_t* f) {
  if (get32(f) > kMaxPageCount)
    return "page number " + num(get32(f)) + " exceeds SQLite's maximum page count " + num(kMaxPageCount);
  if (get32(f + 4) > kMaxPageCount)
    return "commit size " + num(get32(f + 4)) + " exceeds SQLite's maximum page count " + num(kMaxPageCount);
  return "";
}

uint64_t record_hash(uint8_t type, uint32_t len, const uint8_t* body) {
  uint8_t h[5];
  h[0] = type;
  put32(h + 1, len);
  XXH3_state_t st;
  XXH3_64bits_reset(&st);
  XXH3_64bits_update(&st, h, 5);
  XXH3_64bits_update(&st, body, len);
  return XXH3_64bits_digest(&st);
}

}  // namespace

void checksum(bool big_endian, const uint8_t* p, size_t n, uint32_t* s1, uint32_t* s2) {
  if (big_endian == kHostBig)
    checksum_impl<false>(p, n, s1, s2);
  else
    checksum_impl<true>(p, n, s1, s2);
}

WalHeader WalHeader::parse(const uint8_t in[kWalHeaderSize]) {
  WalHeader h;
  h.magic = get32(in);
  h.version = get32(in + 4);
  h.page_size = get32(in + 8);
  h.ckpt_seq = get32(in + 12);
  h.salt1 = get32(in + 16);
  h.salt2 = get32(in + 20);
  h.ck1 = get32(in + 24);
  h.ck2 = get32(in + 28);
  if (h.magic != kMagicLE && h.magic != kMagicBE) fail_integrity("not a WAL file: bad magic");
  if (h.version != kWalVersion) fail_integrity("unsupported WAL version " + num(h.version));
  uint32_t ps = h.page_size;
  if (ps < 512 || ps > 65536 || (ps & (ps - 1)) != 0)
    fail_integrity("invalid WAL page size " + num(ps));
  uint32_t s1 = 0, s2 = 0;
  checksum(h.big_endian(), in, 24, &s1, &s2);
  if (s1 != h.ck1 || s2 != h.ck2) fail_integrity("WAL header checksum mismatch");
  return h;
}

// ---------------------------------------------------------------- reader

struct EventReader::Impl {
  explicit Impl(Reader& r) : in(r) {}
  BufReader in;
  bool sniffed = false, stream = false, done = false;
  uint32_t page_size = 0;
  std::vector<uint8_t> buf;
  uint64_t off = 0;  // bytes consumed

  // plain WAL
  WalHeader hdr;
  uint32_t frameno = 0;
  uint32_t s1 = 0, s2 = 0;

  // stream
  Position pos;
  bool have_pos = false;
  uint64_t nrec = 0;
  bool in_resync = false;
  uint32_t resync_commit = 0, resync_next = 0, resync_count = 0;
  XXH3_state_t rh;

  void sniff();
  Event next_wal();
  Event next_stream();
  bool next_record(Event* e);
  void end_of_log(uint32_t n, uint64_t at, bool salts, bool chained);
  bool verify_frame(const uint8_t* f, const Position& p, uint32_t* c1, uint32_t* c2) const;
};

void EventReader::Impl::sniff() {
  sniffed = true;
  const uint8_t* p;
  size_t n = in.peek(&p, 4);
  if (n == 0) {
    done = true;  // empty input: no events
    return;
  }
  if (n < 4) fail_integrity("truncated input");
  uint32_t m = get32(p);
  if (m == kMagicLE || m == kMagicBE) {
    uint8_t h[kWalHeaderSize];
    if (read_full(in, h, sizeof h) != sizeof h) fail_integrity("truncated WAL header");
    off = kWalHeaderSize;
    hdr = with_context("WAL header", [&] { return WalHeader::parse(h); });
    page_size = hdr.page_size;
    s1 = hdr.ck1;
    s2 = hdr.ck2;
    buf.resize(kFrameHeaderSize + page_size);
    return;
  }
  if (p[0] != 'H') fail_integrity("input is neither a SQLite WAL nor a WAL stream");
  stream = true;
  buf.resize(kMaxRecordBody);
}

Event EventReader::Impl::next_wal() {
  Event e;
  size_t fs = kFrameHeaderSize + page_size;
  size_t got = read_full(in, buf.data(), fs);
  if (got < fs) {  // EOF or a torn last frame: it cannot be committed
    done = true;
    return e;
  }
  const uint8_t* f = buf.data();
  uint32_t n = frameno + 1;
  uint64_t at = off;
  uint32_t c1 = s1, c2 = s2;
  checksum(hdr.big_endian(), f, 8, &c1, &c2);
  checksum(hdr.big_endian(), f + kFrameHeaderSize, page_size, &c1, &c2);
  const bool salts = get32(f + 8) == hdr.salt1 && get32(f + 12) == hdr.salt2;
  const bool chained = c1 == get32(f + 16) && c2 == get32(f + 20);
  if (!salts || !chained) {
    end_of_log(n, at, salts, chained);
    done = true;
    return e;
  }
  if (get32(f) == 0) fail_integrity("frame " + num(n) + " at offset " + num(at) + ": page number 0");
  const std::string defect = size_defect(f);
  if (!defect.empty()) fail_integrity("frame " + num(n) + " at offset " + num(at) + ": " + defect);
  s1 = c1;
  s2 = c2;
  frameno = n;
  off += fs;
  e.type = Event::Frame;
  e.page_size = page_size;
  e.pgno = get32(f);
  e.commit = get32(f + 4);
  e.data = f + kFrameHeaderSize;
  e.wal_offset = at;
  e.salt1 = hdr.salt1;
  e.salt2 = hdr.salt2;
  return e;
}

// Frame n at `at` (in buf) does not continue the log, which ends there, as
// SQLite ends it: a frame of an earlier generation (other salts) after a WAL
// restart, or one that breaks the checksum chain (frames a rolled-back
// transaction spilled stay behind the next commit). Such leftovers are never
// commit frames, and SQLite writes a generation's frames in order, so a later
// frame with the header's salts was written after this one in this
// generation: if it is a commit frame, committed data is damaged. Salts are
// not part of the checksum: a frame whose salts differ but whose checksum
// continues the chain is this generation's frame with a damaged salt.
void EventReader::Impl::end_of_log(uint32_t n, uint64_t at, bool salts, bool chained) {
  const size_t fs = kFrameHeaderSize + page_size;
  const uint8_t* f = buf.data();
  const std::string frame = "frame " + num(n) + " at offset " + num(at);
  if (!salts && chained && get32(f + 4) != 0)
    fail_integrity(frame + ": salt mismatch in a commit frame whose checksum verifies");
  const std::string what = salts ? "checksum mismatch" : "salt mismatch";
  uint64_t later = at + fs;
  while (read_full(in, buf.data(), fs) == fs) {
    if (get32(f + 8) == hdr.salt1 && get32(f + 12) == hdr.salt2 && get32(f + 4) != 0)
      fail_integrity(frame + ": " + what + " before the commit frame at offset " + num(later));
    later += fs;
  }
}

// One event per call. Header records carry no event: they are consumed in
// a loop (a stream may repeat them any number of times, so never recursion).
Event EventReader::Impl::next_stream() {
  for (;;) {
    Event e;
    if (next_record(&e)) return e;
  }
}

// Reads one record; false when it was a stream header (no event).
bool EventReader::Impl::next_record(Event* out) {
  Event& e = *out;
  uint8_t h[5];
  uint64_t at = off;
  size_t got = read_full(in, h, 5);
  if (got == 0) {
    done = true;
    if (in_resync) fail_integrity("offset " + num(at) + ": stream ends inside a resync");
    return true;
  }
  const uint64_t recno = nrec + 1;
  auto bad = [&](const std::string& m) -> void {
    fail_integrity("record " + num(recno) + " at offset " + num(at) + ": " + m);
  };
  if (got < 5) bad("truncated record");
  uint8_t type = h[0];
  uint32_t len = get32(h + 1);
  uint32_t want = 0;
  switch (type) {
    case 'H': want = 16; break;
    case 'G': want = 28; break;
    case 'F': want = 12 + kFrameHeaderSize + page_size; break;
    case 'B': want = 12; break;
    case 'P': want = 4 + page_size; break;
    case 'E': want = 12; break;
    default: bad("unknown record type " + num(type));
  }
  if (type != 'H' && page_size == 0) bad("record before the stream header");
  if (len != want || len > kMaxRecordBody) bad("bad record length " + num(len));
  uint8_t* b = buf.data();
  if (read_full(in, b, len) != len) bad("truncated record");
  uint8_t tail[8];
  if (read_full(in, tail, 8) != 8) bad("truncated record");
  if (record_hash(type, len, b) != get64(tail)) bad("hash mismatch");
  off += 5 + len + 8;
  nrec++;
  switch (type) {
    case 'H': {
      if (std::memcmp(b, kStreamMagic, 4) != 0) bad("bad stream magic");
      if (get32(b + 4) != kStreamVersion) bad("unsupported stream version " + num(get32(b + 4)));
      uint32_t ps = get32(b + 8);
      if (ps < 512 || ps > 65536 || (ps & (ps - 1)) != 0) bad("invalid page size " + num(ps));
      if (page_size != 0 && ps != page_size)
        bad("page size changed from " + num(page_size) + " to " + num(ps));
      if (in_resync) bad("stream header inside a resync");
      page_size = ps;
      return false;
    }
    case 'G': {
      if (in_resync) bad("position inside a resync");
      pos.salt1 = get32(b);
      pos.salt2 = get32(b + 4);
      pos.ckpt_seq = get32(b + 8);
      pos.frames = get32(b + 12);
      pos.ck1 = get32(b + 16);
      pos.ck2 = get32(b + 20);
      pos.big_endian = get32(b + 24) & 1;
      have_pos = true;
      e.type = Event::Position;
      e.page_size = page_size;
      e.salt1 = pos.salt1;
      e.salt2 = pos.salt2;
      e.wal_offset = frame_offset(pos.frames + 1, page_size);
      return true;
    }
    case 'F': {
      if (in_resync) bad("frame inside a resync");
      if (!have_pos) bad("frame without a position");
      uint32_t n = get32(b);
      const uint8_t* f = b + 12;
      if (n != pos.frames + 1)
        bad("frame " + num(n) + " out of order (expected " + num(pos.frames + 1) + ")");
      if (get32(f + 8) != pos.salt1 || get32(f + 12) != pos.salt2) bad("frame " + num(n) + ": salt mismatch");
      uint32_t c1 = pos.ck1, c2 = pos.ck2;
      checksum(pos.big_endian, f, 8, &c1, &c2);
      checksum(pos.big_endian, f + kFrameHeaderSize, page_size, &c1, &c2);
      if (c1 != get32(f + 16) || c2 != get32(f + 20)) bad("frame " + num(n) + ": checksum mismatch");
      if (get32(f) == 0) bad("frame " + num(n) + ": page number 0");
      const std::string defect = size_defect(f);
      if (!defect.empty()) bad("frame " + num(n) + ": " + defect);
      pos.frames = n;
      pos.ck1 = c1;
      pos.ck2 = c2;
      e.type = Event::Frame;
      e.page_size = page_size;
      e.pgno = get32(f);
      e.commit = get32(f + 4);
      e.data = f + kFrameHeaderSize;
      e.wal_offset = frame_offset(n, page_size);
      e.salt1 = pos.salt1;
      e.salt2 = pos.salt2;
      e.timestamp = int64_t(get64(b + 4));
      return true;
    }
    case 'B': {
      if (in_resync) bad("resync inside a resync");
      in_resync = true;
      have_pos = false;  // a resync is a discontinuity: a position must follow
      resync_commit = get32(b);
      if (resync_commit > kMaxPageCount)
        bad("resync of " + num(resync_commit) + " pages exceeds SQLite's maximum page count " +
            num(kMaxPageCount));
      resync_next = 1;
      resync_count = 0;
      XXH3_64bits_reset(&rh);
      e.type = Event::ResyncBegin;
      e.page_size = page_size;
      e.commit = resync_commit;
      e.timestamp = int64_t(get64(b + 4));
      return true;
    }
    case 'P': {
      if (!in_resync) bad("resync page outside a resync");
      uint32_t pg = get32(b);
      if (resync_next == lock_pgno(page_size)) resync_next++;
      if (pg != resync_next || pg > resync_commit)
        bad("resync page " + num(pg) + " out of order (expected " + num(resync_next) + ")");
      resync_next++;
      resync_count++;
      XXH3_64bits_update(&rh, b, 4 + page_size);
      e.type = Event::ResyncPage;
      e.page_size = page_size;
      e.pgno = pg;
      e.commit = resync_commit;
      e.data = b + 4;
      return true;
    }
    case 'E': {
      if (!in_resync) bad("resync end outside a resync");
      uint32_t want_next = resync_next == lock_pgno(page_size) ? resync_next + 1 : resync_next;
      if (want_next <= resync_commit || get32(b) != resync_count)
        bad("resync ends after " + num(resync_count) + " of " + num(resync_commit) + " pages");
      if (get64(b + 4) != XXH3_64bits_digest(&rh)) bad("resync hash mismatch");
      in_resync = false;
      e.type = Event::ResyncEnd;
      e.page_size = page_size;
      e.commit = resync_commit;
      return true;
    }
  }
  bad("unreachable");
  return true;
}

EventReader::EventReader(Reader& r) : impl_(new Impl(r)) {}
EventReader::~EventReader() = default;

Event EventReader::next() {
  Impl& m = *impl_;
  if (!m.sniffed) m.sniff();
  if (m.done) return Event{};
  return m.stream ? m.next_stream() : m.next_wal();
}

bool EventReader::is_stream() const {
  if (!impl_->sniffed) impl_->sniff();
  return impl_->stream;
}

// ---------------------------------------------------------------- writer

struct StreamWriter::Hash {
  XXH3_state_t st;
};

StreamWriter::StreamWriter(Writer& w, uint32_t page_size) : w_(w), page_size_(page_size), hash_(new Hash) {
  uint8_t b[16];
  std::memcpy(b, kStreamMagic, 4);
  put32(b + 4, kStreamVersion);
  put32(b + 8, page_size);
  put32(b + 12, 0);
  record('H', b, sizeof b);
}

StreamWriter::~StreamWriter() = default;

void StreamWriter::record(uint8_t type, const uint8_t* a, size_t an, const uint8_t* b, size_t bn) {
  uint8_t h[5];
  h[0] = type;
  put32(h + 1, uint32_t(an + bn));
  XXH3_state_t st;
  XXH3_64bits_reset(&st);
  XXH3_64bits_update(&st, h, 5);
  XXH3_64bits_update(&st, a, an);
  if (bn) XXH3_64bits_update(&st, b, bn);
  uint8_t t[8];
  put64(t, XXH3_64bits_digest(&st));
  w_.write(h, 5);
  w_.write(a, an);
  if (bn) w_.write(b, bn);
  w_.write(t, 8);
}

void StreamWriter::position(const Position& p) {
  uint8_t b[28];
  put32(b, p.salt1);
  put32(b + 4, p.salt2);
  put32(b + 8, p.ckpt_seq);
  put32(b + 12, p.frames);
  put32(b + 16, p.ck1);
  put32(b + 20, p.ck2);
  put32(b + 24, p.big_endian ? 1 : 0);
  record('G', b, sizeof b);
}

void StreamWriter::frame(uint32_t frameno, int64_t ts, const uint8_t* f) {
  uint8_t b[12];
  put32(b, frameno);
  put64(b + 4, uint64_t(ts));
  // One record over two buffers: the 12-byte prefix and the raw frame.
  record('F', b, sizeof b, f, kFrameHeaderSize + page_size_);
}

void StreamWriter::resync_begin(uint32_t commit, int64_t ts) {
  if (in_resync_) fail(Kind::Usage, "resync_begin inside a resync");
  uint8_t b[12];
  put32(b, commit);
  put64(b + 4, uint64_t(ts));
  record('B', b, sizeof b);
  in_resync_ = true;
  resync_commit_ = commit;
  resync_pages_ = 0;
  resync_last_ = 0;
  XXH3_64bits_reset(&hash_->st);
}

void StreamWriter::resync_page(uint32_t pgno, const uint8_t* data) {
  if (!in_resync_ || pgno <= resync_last_ || pgno > resync_commit_ || pgno == lock_pgno(page_size_))
    fail(Kind::Usage, "resync_page " + num(pgno) + " out of order");
  uint8_t b[4];
  put32(b, pgno);
  record('P', b, 4, data, page_size_);
  XXH3_64bits_update(&hash_->st, b, 4);
  XXH3_64bits_update(&hash_->st, data, page_size_);
  resync_last_ = pgno;
  resync_pages_++;
}

void StreamWriter::resync_end() {
  if (!in_resync_) fail(Kind::Usage, "resync_end outside a resync");
  uint8_t b[12];
  put32(b, resync_pages_);
  put64(b + 4, XXH3_64bits_digest(&hash_->st));
  record('E', b, sizeof b);
  in_resync_ = false;
}

}  // namespace ltx::wal
