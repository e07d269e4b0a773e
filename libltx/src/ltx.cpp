// LTX v3 header, trailer, decoder and encoder (man/ltx.5).
#include "ltx/ltx.h"

#include <lz4.h>
#include <lz4frame.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <ctime>

#include "ltx/bytes.h"
#include "ltx/error.h"

namespace ltx {

namespace {

const uint8_t kMagic[4] = {'L', 'T', 'X', '1'};
constexpr uint32_t kLz4FrameMagic = 0x184D2204;

// Running hash of (pgno, offset, size) triples: frames and index must agree.
uint64_t index_mix(uint64_t h, uint64_t pgno, uint64_t off, uint64_t size) {
  uint8_t b[24];
  put64(b, pgno);
  put64(b + 8, off);
  put64(b + 16, size);
  return crc64_update(h, b, sizeof b);
}

std::string u(uint64_t v) { return std::to_string(v); }

}  // namespace

// ---------------------------------------------------------------- header

void Header::marshal(uint8_t b[kHeaderSize]) const {
  std::memcpy(b, kMagic, 4);
  put32(b + 4, flags);
  put32(b + 8, page_size);
  put32(b + 12, commit);
  put64(b + 16, min_txid);
  put64(b + 24, max_txid);
  put64(b + 32, uint64_t(timestamp));
  put64(b + 40, pre_apply);
  put64(b + 48, uint64_t(wal_offset));
  put64(b + 56, uint64_t(wal_size));
  put32(b + 64, wal_salt1);
  put32(b + 68, wal_salt2);
  put64(b + 72, node_id);
  std::memcpy(b + 80, reserved, sizeof reserved);
}

Header Header::unmarshal(const uint8_t b[kHeaderSize]) {
  Header h;
  h.flags = get32(b + 4);
  h.page_size = get32(b + 8);
  h.commit = get32(b + 12);
  h.min_txid = get64(b + 16);
  h.max_txid = get64(b + 24);
  h.timestamp = int64_t(get64(b + 32));
  h.pre_apply = get64(b + 40);
  h.wal_offset = int64_t(get64(b + 48));
  h.wal_size = int64_t(get64(b + 56));
  h.wal_salt1 = get32(b + 64);
  h.wal_salt2 = get32(b + 68);
  h.node_id = get64(b + 72);
  std::memcpy(h.reserved, b + 80, sizeof h.reserved);
  if (std::memcmp(b, kMagic, 4) != 0) {
    if (std::memcmp(b, "age-", 4) == 0) fail_permanent("an age-encrypted file: give --age-identity");
    fail_integrity("invalid LTX file");
  }
  return h;
}

void Header::validate() const {
  if (flags & ~kFlagNoChecksum) fail_integrity("invalid flags: 0x" + hex08(flags));
  if (!valid_page_size(page_size)) fail_integrity("invalid page size: " + u(page_size));
  if (min_txid == 0) fail_integrity("minimum transaction id required");
  if (max_txid == 0) fail_integrity("maximum transaction id required");
  if (min_txid > max_txid)
    fail_integrity("transaction ids out of order: (" + u(min_txid) + "," + u(max_txid) + ")");
  if (wal_offset < 0) fail_integrity("wal offset cannot be negative: " + std::to_string(wal_offset));
  if (wal_size < 0) fail_integrity("wal size cannot be negative: " + std::to_string(wal_size));
  if ((wal_salt1 != 0 || wal_salt2 != 0) && wal_offset == 0)
    fail_integrity("wal offset required if salt exists");
  if (wal_offset == 0 && wal_size != 0) fail_integrity("wal offset required if wal size exists");
  if (snapshot()) {
    if (pre_apply != 0) fail_integrity("pre-apply checksum must be zero on snapshots");
  } else if (no_checksum()) {
    if (pre_apply != 0) fail_integrity("pre-apply checksum not allowed");
  } else {
    if (pre_apply == 0) fail_integrity("pre-apply checksum required on non-snapshot files");
    if (!(pre_apply & kChecksumFlag)) fail_integrity("invalid pre-apply checksum format");
  }
}

// ---------------------------------------------------------------- names, times

std::string format_filename(uint64_t min_txid, uint64_t max_txid) {
  return hex16(min_txid) + "-" + hex16(max_txid) + ".ltx";
}

bool parse_filename(const std::string& name, uint64_t* min_txid, uint64_t* max_txid) {
  if (name.size() != 37 || name[16] != '-' || name.compare(33, 4, ".ltx") != 0) return false;
  for (size_t i = 0; i < 33; i++) {
    if (i == 16) continue;
    char c = name[i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return parse_hex16(name.substr(0, 16), min_txid) && parse_hex16(name.substr(17, 16), max_txid);
}

std::string format_timestamp(int64_t ms) {
  time_t s = time_t(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
  int frac = int(ms - int64_t(s) * 1000);
  struct tm tm {};
  gmtime_r(&s, &tm);
  char b[64];
  std::snprintf(b, sizeof b, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
  return b;
}

int64_t parse_duration_ms(const std::string& s) {
  const char* p = s.c_str();
  if (!*p) return -1;
  double total = 0;
  while (*p) {
    if (*p == '+' || *p == '-') return -1;
    char* end = nullptr;
    double v = std::strtod(p, &end);
    if (end == p || !(v >= 0) || std::isinf(v)) return -1;
    const bool first = p == s.c_str();
    p = end;
    std::string u;
    while (*p && ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z'))) u += *p++;
    if (u.empty() && (!first || *p)) return -1;  // a bare number stands alone
    double mul = u.empty() ? 1e3 : u == "ms" ? 1 : u == "s" ? 1e3 : u == "m" ? 6e4 : u == "h" ? 3.6e6
               : u == "d" ? 8.64e7 : u == "w" ? 6.048e8 : -1;
    if (mul < 0) return -1;
    total += v * mul;
  }
  if (total > 9.2e18) return -1;
  return int64_t(std::llround(total));
}

bool parse_timestamp(const std::string& s, int64_t* ms) {
  int Y, M, D, h, m, sec, n = 0;
  if (std::sscanf(s.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%n", &Y, &M, &D, &h, &m, &sec, &n) != 6 ||
      n != 19)
    return false;
  size_t i = 19;
  int64_t frac_ms = 0;
  if (i < s.size() && s[i] == '.') {
    i++;
    int digits = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
      if (digits < 3) frac_ms = frac_ms * 10 + (s[i] - '0');
      digits++;
      i++;
    }
    if (digits == 0) return false;
    for (; digits < 3; digits++) frac_ms *= 10;
  }
  int64_t off = 0;
  if (i < s.size() && (s[i] == 'Z' || s[i] == 'z')) {
    i++;
  } else if (i + 6 == s.size() && (s[i] == '+' || s[i] == '-') && s[i + 3] == ':') {
    int oh, om;
    if (std::sscanf(s.c_str() + i + 1, "%2d:%2d", &oh, &om) != 2) return false;
    off = (s[i] == '+' ? 1 : -1) * int64_t(oh * 3600 + om * 60);
    i += 6;
  } else {
    return false;
  }
  if (i != s.size() || M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60)
    return false;
  struct tm tm {};
  tm.tm_year = Y - 1900;
  tm.tm_mon = M - 1;
  tm.tm_mday = D;
  tm.tm_hour = h;
  tm.tm_min = m;
  tm.tm_sec = sec;
  *ms = (int64_t(timegm(&tm)) - off) * 1000 + frac_ms;
  return true;
}

// ---------------------------------------------------------------- decoder

Decoder::Decoder(Reader& r) : r_(r) {}
Decoder::~Decoder() = default;

void Decoder::read(void* p, size_t n) {
  read_exact(r_, p, n);
  off_ += n;
}

bool Decoder::read_header() {
  if (state_ != State::Header) fail(Kind::Usage, "cannot read header twice");
  uint8_t b[kHeaderSize];
  size_t got = read_full(r_, b, kHeaderSize);
  if (got == 0) return false;
  with_context("decode header", [&] {
    if (got < kHeaderSize) fail_integrity("unexpected EOF");
    hdr_ = Header::unmarshal(b);
    hdr_.validate();
    if (hdr_.no_checksum() && hdr_.commit == 0)
      fail_integrity("no-checksum file cannot have commit 0");
    if (hdr_.commit > kMaxPageCount)
      fail_integrity("commit " + u(hdr_.commit) + " exceeds SQLite's maximum page count " + u(kMaxPageCount));
  });
  off_ = kHeaderSize;
  crc_.update(b, kHeaderSize);
  cbuf_.resize(size_t(LZ4_compressBound(int(hdr_.page_size))));
  state_ = State::Pages;
  return true;
}

bool Decoder::next_page(uint32_t* pgno_out, uint8_t* page) {
  if (state_ != State::Pages) fail(Kind::Usage, "cannot read page, expected header or close");
  uint32_t frame_no = npages_ + 1;
  return with_context("decode page frame " + u(frame_no), [&]() -> bool {
    uint64_t start = off_;
    uint8_t ph[kPageHeaderSize];
    read(ph, kPageHeaderSize);
    uint32_t pgno = get32(ph);
    uint16_t flags = get16(ph + 4);
    crc_.update(ph, kPageHeaderSize);
    if (pgno == 0 && flags == 0) {
      if (hdr_.snapshot() && hdr_.commit != 0) {
        uint32_t want = hdr_.commit == lock_pgno(hdr_.page_size) ? hdr_.commit - 1 : hdr_.commit;
        if (last_pgno_ != want)
          fail_integrity("snapshot ends at page " + u(last_pgno_) + ", commit is " + u(hdr_.commit));
      }
      state_ = State::Index;
      return false;
    }
    if (pgno == 0) fail_integrity("page number required");
    if (flags & ~kPageFlagSize) fail_integrity("invalid page header flags: 0x" + hex08(flags).substr(4));
    if (pgno > hdr_.commit)
      fail_integrity("page " + u(pgno) + " out of bounds for commit size " + u(hdr_.commit));
    if (pgno == lock_pgno(hdr_.page_size)) fail_integrity("lock page " + u(pgno) + " in file");
    if (pgno <= last_pgno_)
      fail_integrity("out-of-order page numbers: " + u(last_pgno_) + "," + u(pgno));
    if (hdr_.snapshot()) {
      uint32_t want = last_pgno_ + 1;
      if (want == lock_pgno(hdr_.page_size)) want++;
      if (pgno != want)
        fail_integrity("nonsequential page numbers in snapshot: " + u(last_pgno_) + "," + u(pgno));
    }
    if (flags & kPageFlagSize) {
      uint8_t sb[4];
      read(sb, 4);
      crc_.update(sb, 4);
      uint32_t csize = get32(sb);
      if (csize == 0 || csize > cbuf_.size())
        fail_integrity("compressed size " + u(csize) + " out of range for page size " +
                       u(hdr_.page_size));
      read(cbuf_.data(), csize);
      int n = LZ4_decompress_safe(reinterpret_cast<const char*>(cbuf_.data()),
                                  reinterpret_cast<char*>(page), int(csize), int(hdr_.page_size));
      if (n < 0) fail_integrity("lz4 block: invalid compressed data");
      if (uint32_t(n) != hdr_.page_size)
        fail_integrity("lz4 block decodes to " + std::to_string(n) + " bytes, page size is " +
                       u(hdr_.page_size));
      frame_legacy_ = false;
    } else {
      decode_legacy_frame(page);
      frame_legacy_ = true;
    }
    crc_.update(page, hdr_.page_size);
    frame_off_ = start;
    frame_size_ = off_ - start;
    index_hash_ = index_mix(index_hash_, pgno, frame_off_, frame_size_);
    if (hdr_.snapshot() && !hdr_.no_checksum())
      fold_ = fold(fold_, page_checksum(pgno, page, hdr_.page_size));
    last_pgno_ = pgno;
    npages_++;
    *pgno_out = pgno;
    return true;
  });
}

void Decoder::decode_frame_at(const Header& h, uint64_t offset, uint32_t pgno, uint8_t* page) {
  if (pgno == 0) fail(Kind::Usage, "page number required");
  hdr_ = h;
  cbuf_.resize(size_t(LZ4_compressBound(int(hdr_.page_size))));
  state_ = State::Pages;
  off_ = offset;
  last_pgno_ = pgno - 1;  // next_page's order and contiguity checks then pass for pgno alone
  npages_ = 0;
  with_context("page " + u(pgno) + " at offset " + u(offset), [&] {
    uint32_t got = 0;
    if (!next_page(&got, page)) fail_integrity("the end marker, where the page index names a frame");
    if (got != pgno) fail_integrity("the frame holds page " + u(got));
  });
}

// A legacy page: one LZ4 frame with no length prefix. LZ4F tells how many
// bytes it wants next, so we read exactly the frame and nothing beyond it.
void Decoder::decode_legacy_frame(uint8_t* page) {
  LZ4F_dctx* dctx = nullptr;
  if (LZ4F_isError(LZ4F_createDecompressionContext(&dctx, LZ4F_VERSION)))
    fail_runtime("lz4 frame: cannot create context");
  struct Free {
    LZ4F_dctx* d;
    ~Free() { LZ4F_freeDecompressionContext(d); }
  } guard{dctx};
  size_t produced = 0;
  size_t want = 4;  // the frame magic first
  bool first = true;
  for (;;) {
    if (want > (1u << 17)) fail_integrity("lz4 frame: block too large");
    if (want > cbuf_.size()) cbuf_.resize(want);
    read(cbuf_.data(), want);
    if (first && get32(cbuf_.data()) != __builtin_bswap32(kLz4FrameMagic))
      fail_integrity("page frame has neither size flag nor lz4 frame magic");
    first = false;
    size_t src_off = 0;
    size_t hint = 0;
    while (src_off < want) {
      size_t dst_n = hdr_.page_size - produced;
      size_t src_n = want - src_off;
      hint = LZ4F_decompress(dctx, page + produced, &dst_n, cbuf_.data() + src_off, &src_n, nullptr);
      if (LZ4F_isError(hint)) fail_integrity(std::string("lz4 frame: ") + LZ4F_getErrorName(hint));
      produced += dst_n;
      src_off += src_n;
      if (hint == 0) break;
      if (src_n == 0 && dst_n == 0) fail_integrity("lz4 frame decodes to more than the page size");
    }
    if (hint == 0) {
      if (src_off != want) fail_integrity("lz4 frame: bytes after the end mark");
      break;
    }
    want = hint;
  }
  if (produced != hdr_.page_size)
    fail_integrity("lz4 frame decodes to " + u(produced) + " bytes, page size is " +
                   u(hdr_.page_size));
}

const Trailer& Decoder::finish() {
  if (state_ != State::Index) fail(Kind::Usage, "cannot close, expected page");
  with_context("read page index", [&] {
    uint64_t idx_len = 0, h = 0, entries = 0;
    auto varint = [&]() -> uint64_t {
      uint64_t v = 0;
      for (int shift = 0;; shift += 7) {
        uint8_t c;
        read(&c, 1);
        if (shift == 63 && c > 1) fail_integrity("varint overflow");
        crc_.update(&c, 1);
        idx_len++;
        v |= uint64_t(c & 0x7f) << shift;
        if (!(c & 0x80)) return v;
      }
    };
    for (;;) {
      uint64_t pgno = varint();
      if (pgno == 0) break;
      uint64_t off = varint(), size = varint();
      if (++entries > npages_) fail_integrity("more index entries than page frames");
      h = index_mix(h, pgno, off, size);
    }
    if (entries != npages_ || h != index_hash_)
      fail_integrity("page index does not match the page frames");
    uint8_t sb[8];
    read(sb, 8);
    crc_.update(sb, 8);
    if (get64(sb) != idx_len)
      fail_integrity("index size " + u(get64(sb)) + " does not match " + u(idx_len));
  });
  with_context("read trailer", [&] {
    uint8_t tb[kTrailerSize];
    read(tb, kTrailerSize);
    crc_.update(tb, 8);
    trl_.post_apply = get64(tb);
    trl_.file_checksum = get64(tb + 8);
    uint64_t want = kChecksumFlag | crc_.value();
    if (trl_.file_checksum != want)
      fail_integrity("file checksum mismatch: trailer " + hex16(trl_.file_checksum) +
                     ", computed " + hex16(want));
    if (hdr_.no_checksum()) {
      if (trl_.post_apply != 0) fail_integrity("post-apply checksum not allowed");
    } else if (hdr_.commit == 0) {
      if (trl_.post_apply != kChecksumFlag)
        fail_integrity("post-apply checksum must be empty for zero-length database");
    } else if (!(trl_.post_apply & kChecksumFlag)) {
      fail_integrity("invalid post-apply checksum format");
    }
    if (hdr_.snapshot() && !hdr_.no_checksum() && trl_.post_apply != fold_)
      fail_integrity("post-apply checksum in trailer (" + hex16(trl_.post_apply) +
                     ") does not match calculated checksum (" + hex16(fold_) + ")");
  });
  state_ = State::Done;
  return trl_;
}

void check_max_size(const Header& h, uint64_t max_bytes) {
  if (max_bytes != 0 && h.db_bytes() > max_bytes)
    fail_integrity("commit " + u(h.commit) + " makes a database of " + u(h.db_bytes()) +
                   " bytes, more than the maximum size " + u(max_bytes));
}

Trailer verify_stream(Reader& r, Header* hdr) {
  Decoder d(r);
  if (!d.read_header()) fail_integrity("decode header: empty input");
  std::vector<uint8_t> page(d.header().page_size);
  uint32_t pgno;
  while (d.next_page(&pgno, page.data())) {
  }
  Trailer t = d.finish();
  if (hdr) *hdr = d.header();
  return t;
}

// ---------------------------------------------------------------- encoder

Encoder::Encoder(Writer& w, const Header& h, const std::string& spool_dir)
    : w_(w), hdr_(h), spool_dir_(spool_dir) {
  with_context("encode header", [&] {
    hdr_.validate();
    if (hdr_.no_checksum() && hdr_.commit == 0)
      fail_integrity("no-checksum file cannot have commit 0");
    if (hdr_.commit > kMaxPageCount)
      fail_integrity("commit " + u(hdr_.commit) + " exceeds SQLite's maximum page count " + u(kMaxPageCount));
  });
  uint8_t b[kHeaderSize];
  hdr_.marshal(b);
  out(b, kHeaderSize);
  cbuf_.resize(size_t(LZ4_compressBound(int(hdr_.page_size))));
}

Encoder::~Encoder() {
  if (index_fd_ >= 0) ::close(index_fd_);
}

constexpr size_t kIndexMemLimit = 64u << 10;  // then spilled: flat memory for any file size

void Encoder::spill_index() {
  if (index_fd_ < 0) {
    index_fd_ = ::open(spool_dir_.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (index_fd_ < 0) fail_errno("create page index spool in " + spool_dir_);
  }
  pwrite_all(index_fd_, index_.data(), index_.size(), index_spilled_);
  index_spilled_ += index_.size();
  index_.clear();
}

void Encoder::out(const void* p, size_t n, bool hash) {
  w_.write(p, n);
  if (hash) crc_.update(p, n);
  off_ += n;
}

void Encoder::page(uint32_t pgno, const uint8_t* data) {
  if (done_) fail(Kind::Usage, "encoder closed");
  if (pgno == 0) fail(Kind::Usage, "page number required");
  if (pgno > hdr_.commit)
    fail(Kind::Usage, "page number " + u(pgno) + " out-of-bounds for commit size " + u(hdr_.commit));
  if (pgno == lock_pgno(hdr_.page_size)) fail(Kind::Usage, "cannot encode lock page: pgno=" + u(pgno));
  if (hdr_.snapshot()) {
    uint32_t want = last_pgno_ + 1;
    if (want == lock_pgno(hdr_.page_size)) want++;
    if (pgno != want)
      fail(Kind::Usage, "nonsequential page numbers in snapshot: " + u(last_pgno_) + "," + u(pgno));
  } else if (pgno <= last_pgno_) {
    fail(Kind::Usage, "out-of-order page numbers: " + u(last_pgno_) + "," + u(pgno));
  }
  int n = LZ4_compress_default(reinterpret_cast<const char*>(data),
                               reinterpret_cast<char*>(cbuf_.data()), int(hdr_.page_size),
                               int(cbuf_.size()));
  if (n <= 0) fail_runtime("lz4 block compression failed");
  uint64_t start = off_;
  uint8_t ph[kPageHeaderSize + 4];
  put32(ph, pgno);
  put16(ph + 4, kPageFlagSize);
  put32(ph + 6, uint32_t(n));
  out(ph, sizeof ph);
  crc_.update(data, hdr_.page_size);
  out(cbuf_.data(), size_t(n), false);
  uint8_t v[30];
  size_t k = put_uvarint(v, pgno);
  k += put_uvarint(v + k, start);
  k += put_uvarint(v + k, off_ - start);
  index_.insert(index_.end(), v, v + k);
  if (index_.size() >= kIndexMemLimit) spill_index();
  if (hdr_.snapshot() && !hdr_.no_checksum())
    fold_ = fold(fold_, page_checksum(pgno, data, hdr_.page_size));
  last_pgno_ = pgno;
  npages_++;
}

Trailer Encoder::finish(uint64_t post_apply) {
  if (done_) fail(Kind::Usage, "encoder closed");
  if (hdr_.snapshot() && hdr_.commit != 0) {
    uint32_t want = hdr_.commit == lock_pgno(hdr_.page_size) ? hdr_.commit - 1 : hdr_.commit;
    if (last_pgno_ != want)
      fail(Kind::Usage, "snapshot ends at page " + u(last_pgno_) + ", commit is " + u(hdr_.commit));
  }
  if (hdr_.no_checksum()) {
    if (post_apply != 0) fail(Kind::Usage, "post-apply checksum not allowed");
  } else if (hdr_.commit == 0) {
    if (post_apply != kChecksumFlag)
      fail(Kind::Usage, "post-apply checksum must be empty for zero-length database");
  } else if (!(post_apply & kChecksumFlag)) {
    fail(Kind::Usage, "invalid post-apply checksum format");
  } else if (hdr_.snapshot() && post_apply != fold_) {
    fail_integrity("post-apply checksum " + hex16(post_apply) + " does not match pages (" +
                   hex16(fold_) + ")");
  }
  uint8_t end[kPageHeaderSize] = {};
  out(end, sizeof end);
  index_.push_back(0);
  if (index_spilled_ > 0) {  // copy the spilled part out first, in chunks
    std::vector<uint8_t> chunk(64 * 1024);
    for (uint64_t at = 0; at < index_spilled_;) {
      size_t n = size_t(std::min<uint64_t>(chunk.size(), index_spilled_ - at));
      if (pread_full(index_fd_, chunk.data(), n, at) != n) fail_runtime("page index spool: short read");
      out(chunk.data(), n);
      at += n;
    }
  }
  out(index_.data(), index_.size());
  uint8_t b[8];
  put64(b, index_spilled_ + index_.size());
  out(b, 8);
  Trailer t;
  t.post_apply = post_apply;
  put64(b, post_apply);
  out(b, 8);
  t.file_checksum = kChecksumFlag | crc_.value();
  put64(b, t.file_checksum);
  out(b, 8, false);
  done_ = true;
  std::vector<uint8_t>().swap(index_);
  return t;
}

}  // namespace ltx
