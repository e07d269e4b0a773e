// wal.h - SQLite WAL files and the WAL stream (man/walstream.5).
//
// ltx-encode reads either a plain SQLite "-wal" file or the WAL stream that
// wal-tail writes; EventReader sniffs which and turns both into one sequence
// of verified events. A transaction is the frames up to and including a
// frame whose commit field is non-zero; consumers must discard frames that
// End or ResyncBegin leaves without a commit frame.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "ltx/io.h"

namespace ltx::wal {

constexpr uint32_t kMagicLE = 0x377f0682;  // checksums in little-endian words
constexpr uint32_t kMagicBE = 0x377f0683;  // checksums in big-endian words
constexpr uint32_t kWalHeaderSize = 32;
constexpr uint32_t kFrameHeaderSize = 24;

struct WalHeader {
  uint32_t magic = 0, version = 0, page_size = 0, ckpt_seq = 0;
  uint32_t salt1 = 0, salt2 = 0, ck1 = 0, ck2 = 0;
  bool big_endian() const { return magic == kMagicBE; }
  // Parses and checks magic, version 3007000, page size and the header
  // checksum. Throws Integrity with the reason.
  static WalHeader parse(const uint8_t in[kWalHeaderSize]);
};

// SQLite's WAL checksum over n bytes (n a multiple of 8), continuing s1, s2.
void checksum(bool big_endian, const uint8_t* p, size_t n, uint32_t* s1, uint32_t* s2);

struct Event {
  enum Type {
    End,          // clean end of input
    Frame,        // one verified WAL frame
    ResyncBegin,  // a full-page transaction follows (continuity was lost)
    ResyncPage,   // one page of it, pgno 1..commit ascending, lock page absent
    ResyncEnd,    // the resync transaction is complete and verified
    Position,     // stream only: frames that follow continue at this WAL
                  // position (salts; wal_offset = byte offset of the next frame)
  } type = End;
  uint32_t page_size = 0;
  uint32_t pgno = 0;
  uint32_t commit = 0;          // Frame: non-zero on a commit frame (db pages); ResyncBegin: db pages
  const uint8_t* data = nullptr;  // page_size bytes; valid until the next call
  uint64_t wal_offset = 0;      // Frame: offset of the frame header in the source WAL
  uint32_t salt1 = 0, salt2 = 0;  // Frame: salts of the WAL generation
  int64_t timestamp = 0;        // ms since epoch when wal-tail saw it (0: unknown)
};

class EventReader {
 public:
  explicit EventReader(Reader& r);
  ~EventReader();
  // Throws Integrity on bad magic, bad checksums, truncation inside a record.
  Event next();
  bool is_stream() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// ---- WAL stream (man/walstream.5) ----
//
// stream  := record*            (a clean EOF between records ends it)
// record  := type(1) | len(u32) | body(len) | xxh64(type|len|body) (u64)
// Integers are big-endian. Types: 'H' header, 'G' WAL position,
// 'F' frame, 'B' resync begin, 'P' resync page, 'E' resync end.
constexpr uint8_t kStreamMagic[4] = {'W', 'S', 'T', 'R'};
constexpr uint32_t kStreamVersion = 1;
constexpr uint32_t kMaxRecordBody = 65536 + 64;

// The WAL frame byte offset of frame n (1-based) for a page size.
inline uint64_t frame_offset(uint32_t n, uint32_t page_size) {
  return kWalHeaderSize + uint64_t(n - 1) * (kFrameHeaderSize + page_size);
}

// A position in a WAL: after frame `frames` of the generation with these
// salts; ck1/ck2 is the running checksum after that frame (the seed of the
// next frame), ckpt_seq the header's checkpoint sequence.
struct Position {
  uint32_t salt1 = 0, salt2 = 0, ckpt_seq = 0;
  uint32_t frames = 0;
  uint32_t ck1 = 0, ck2 = 0;
  bool big_endian = false;
};

// Writes WAL stream records. The first record (written by the constructor)
// is the stream header. Callers must write a position() before frames and
// after every resync, then frames in WAL order.
class StreamWriter {
 public:
  StreamWriter(Writer& w, uint32_t page_size);
  void position(const Position& p);
  // frame: the 24-byte WAL frame header followed by the page, exactly as in
  // the WAL; frameno is its 1-based index in its generation.
  void frame(uint32_t frameno, int64_t timestamp_ms, const uint8_t* frame);
  void resync_begin(uint32_t commit, int64_t timestamp_ms);
  void resync_page(uint32_t pgno, const uint8_t* data);
  void resync_end();
  void flush() { w_.flush(); }

 private:
  void record(uint8_t type, const uint8_t* a, size_t an, const uint8_t* b = nullptr, size_t bn = 0);
  Writer& w_;
  uint32_t page_size_;
  uint32_t resync_commit_ = 0, resync_pages_ = 0, resync_last_ = 0;
  bool in_resync_ = false;
  struct Hash;
  std::unique_ptr<Hash> hash_;  // XXH3-64 over u32be(pgno) || page of a resync

 public:
  ~StreamWriter();
};

}  // namespace ltx::wal
