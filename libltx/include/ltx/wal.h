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

}  // namespace ltx::wal
