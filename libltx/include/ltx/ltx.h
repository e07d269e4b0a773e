// ltx.h - LTX v3 files: header, trailer, streaming encoder and decoder.
//
// Byte layout (man/ltx.5): header(100) | page frames | 6 zero bytes |
// page index (uvarint pgno,offset,size ... 0, u64be size) | trailer(16).
//
// Decoder and Encoder are state machines over any byte stream
// (header -> pages -> index -> trailer). Memory does not grow with the file:
// the decoder checks the page index against the frames through a running
// hash of the (pgno, offset, size) triples, since both are in pgno order.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ltx/checksum.h"
#include "ltx/io.h"

namespace ltx {

constexpr uint32_t kHeaderSize = 100;
constexpr uint32_t kPageHeaderSize = 6;
constexpr uint32_t kTrailerSize = 16;
constexpr uint32_t kMinPageSize = 512;
constexpr uint32_t kMaxPageSize = 65536;
constexpr uint32_t kFlagNoChecksum = 1u << 1;
constexpr uint16_t kPageFlagSize = 1u << 0;

inline bool valid_page_size(uint32_t ps) {
  return ps >= kMinPageSize && ps <= kMaxPageSize && (ps & (ps - 1)) == 0;
}

struct Header {
  uint32_t flags = 0;
  uint32_t page_size = 0;
  uint32_t commit = 0;
  uint64_t min_txid = 0;
  uint64_t max_txid = 0;
  int64_t timestamp = 0;  // ms since the Unix epoch
  uint64_t pre_apply = 0;
  int64_t wal_offset = 0;
  int64_t wal_size = 0;
  uint32_t wal_salt1 = 0;
  uint32_t wal_salt2 = 0;
  uint64_t node_id = 0;
  uint8_t reserved[20] = {};

  bool snapshot() const { return min_txid == 1; }
  // The database size after the file: Commit pages of PageSize bytes.
  uint64_t db_bytes() const { return uint64_t(commit) * page_size; }
  bool no_checksum() const { return flags & kFlagNoChecksum; }
  void marshal(uint8_t out[kHeaderSize]) const;
  // Parses all fields; throws Integrity "invalid LTX file" on a bad magic.
  static Header unmarshal(const uint8_t in[kHeaderSize]);
  // The reference's Header.Validate rules and messages (FORMAT.md 2.1).
  void validate() const;
};

struct Trailer {
  uint64_t post_apply = 0;
  uint64_t file_checksum = 0;
};

// "%016x-%016x.ltx"
std::string format_filename(uint64_t min_txid, uint64_t max_txid);
// Strict: lowercase, whole base name. False if it does not match.
bool parse_filename(const std::string& name, uint64_t* min_txid, uint64_t* max_txid);
// RFC 3339 with milliseconds, UTC: 2006-01-02T15:04:05.000Z
std::string format_timestamp(int64_t ms);
// Accepts RFC 3339 (fractional seconds and offsets); false on bad syntax.
bool parse_timestamp(const std::string& s, int64_t* ms);
// The one duration grammar of every tool: "500ms", "30s", "5m", "1h", "7d",
// "2w", "1h30m", "1.5h"; a bare number is seconds ("0", "1.5"). Milliseconds,
// or -1 on bad syntax or beyond 2^63 ms.
int64_t parse_duration_ms(const std::string& s);

class Decoder {
 public:
  explicit Decoder(Reader& r);
  ~Decoder();
  // Reads and validates the header. Returns false on a clean end of stream
  // (zero bytes before the header): the end of a concatenated LTX stream.
  bool read_header();
  const Header& header() const { return hdr_; }
  // Next page frame into page[page_size]; false at the end marker.
  // Strict: decoded size == page size, pgno strictly increasing, <= commit,
  // never the lock page, snapshots contiguous from 1.
  bool next_page(uint32_t* pgno, uint8_t* page);
  // Reads the page index and trailer; verifies the index against the frames,
  // the file checksum, and for checksummed snapshots the post-apply fold.
  const Trailer& finish();
  const Trailer& trailer() const { return trl_; }
  uint64_t offset() const { return off_; }  // bytes consumed of this file
  uint32_t page_count() const { return npages_; }
  // Frame layout of the last page returned: offset and whole frame size.
  uint64_t frame_offset() const { return frame_off_; }
  uint64_t frame_size() const { return frame_size_; }
  bool frame_legacy() const { return frame_legacy_; }
  // Random access (a ranged read of one frame the page index names): with
  // h, the file's header already read, decodes the frame at byte `offset`
  // of the file from r with every check next_page makes, and throws
  // Integrity unless it holds page pgno. Usable again for the next frame.
  void decode_frame_at(const Header& h, uint64_t offset, uint32_t pgno, uint8_t* page);

 private:
  void read(void* p, size_t n);
  void decode_legacy_frame(uint8_t* page);
  enum class State { Header, Pages, Index, Done } state_ = State::Header;
  Reader& r_;
  Header hdr_;
  Trailer trl_;
  Crc64 crc_;
  uint64_t off_ = 0, fold_ = kChecksumFlag, index_hash_ = 0;
  uint32_t npages_ = 0, last_pgno_ = 0;
  uint64_t frame_off_ = 0, frame_size_ = 0;
  bool frame_legacy_ = false;
  std::vector<uint8_t> cbuf_;
};

class Encoder {
 public:
  // Validates and writes the header. The page index is kept in memory up to
  // 1 MiB (~150k pages), then spooled to an unlinked file in spool_dir, so
  // memory stays flat for any database size.
  Encoder(Writer& w, const Header& h, const std::string& spool_dir = "/tmp");
  ~Encoder();
  // Appends one page frame (LZ4 block with size prefix). Enforces the
  // reference's rules: pgno <= commit, not the lock page, strictly
  // increasing; snapshots contiguous from 1 (skipping the lock page).
  void page(uint32_t pgno, const uint8_t* data);
  // Writes end marker, index and trailer. For checksummed snapshots the
  // post-apply value must equal the fold of the pages written.
  Trailer finish(uint64_t post_apply);
  uint64_t bytes_written() const { return off_; }

 private:
  void out(const void* p, size_t n, bool hash = true);
  Writer& w_;
  Header hdr_;
  Crc64 crc_;
  uint64_t off_ = 0, fold_ = kChecksumFlag;
  uint32_t last_pgno_ = 0, npages_ = 0;
  void spill_index();
  std::vector<uint8_t> index_;  // varint triples not yet spilled; ~7 bytes a page
  uint64_t index_spilled_ = 0;  // bytes of index in the spool file
  int index_fd_ = -1;
  std::string spool_dir_;
  std::vector<uint8_t> cbuf_;
  bool done_ = false;
};

// Throws Integrity when the file makes a database larger than max_bytes
// (0: no limit): what ltx-apply, ltx-merge and ltx-verify --max-size refuse.
void check_max_size(const Header& h, uint64_t max_bytes);

// Reads a whole LTX file from r (header..trailer), discarding pages.
// Throws on any defect. Used by verify and by stream splitters.
Trailer verify_stream(Reader& r, Header* hdr = nullptr);

}  // namespace ltx
