// checksum.h - CRC-64/GO-ISO and the LTX database checksum.
//
// The database checksum is the reference's rolling fold: for every page
// except the lock page, XOR in ChecksumFlag | CRC64(u32be(pgno) || page), and
// keep bit 63 set. The fold does not depend on order, so it is updated
// incrementally: new = Flag | (old ^ pc(pgno, old) ^ pc(pgno, new)).
//
// Empty database: walsync defines its checksum as ChecksumFlag
// (0x8000000000000000), the fold's identity. The reference's encoder requires
// that value for Commit-0 files and its decoder starts snapshot folds there;
// only its ChecksumReader returns 0, which no valid header can carry.
#pragma once
#include <cstddef>
#include <cstdint>

namespace ltx {

constexpr uint64_t kChecksumFlag = uint64_t(1) << 63;
constexpr uint64_t kPendingByte = 0x40000000;

// SQLite's largest page count (SQLITE_MAX_PAGE_COUNT's ceiling): no page
// number or database size in pages (LTX Commit, a WAL commit frame's size)
// is above it, so page arithmetic in uint32_t has one value to spare.
constexpr uint32_t kMaxPageCount = 0xfffffffe;

// Lock page: the page holding SQLite's PENDING_BYTE; never stored in LTX.
inline uint32_t lock_pgno(uint32_t page_size) { return uint32_t(kPendingByte / page_size) + 1; }

// CRC-64/GO-ISO (poly 0x1B reflected, init and xorout all ones).
// crc64_update continues a running CRC: crc64_update(0, ...) starts one.
uint64_t crc64_update(uint64_t crc, const void* data, size_t n);
inline uint64_t crc64(const void* data, size_t n) { return crc64_update(0, data, n); }
// The portable table-driven path (crc64_update uses PCLMULQDQ where present).
uint64_t crc64_update_tables(uint64_t crc, const void* data, size_t n);

class Crc64 {
 public:
  void update(const void* p, size_t n) { crc_ = crc64_update(crc_, p, n); }
  uint64_t value() const { return crc_; }

 private:
  uint64_t crc_ = 0;
};

// ChecksumFlag | CRC64(u32be(pgno) || data[0:page_size]).
uint64_t page_checksum(uint32_t pgno, const uint8_t* data, size_t page_size);

inline uint64_t fold(uint64_t acc, uint64_t page_ck) { return kChecksumFlag | (acc ^ page_ck); }

// fold() of the all-zero page of every page number in [first, last] except
// the lock page (a database grown without writes), in constant time: for a
// fixed length the CRC is affine in the page number, so the XOR of n such
// page checksums is the checksum of the XOR of their numbers, XORed with
// the checksum of page number 0 when n is even. Two page CRCs, whatever
// the range.
uint64_t fold_zero_pages(uint64_t acc, uint64_t first, uint64_t last, uint32_t page_size);

// The database checksum of a database changed in place, page by page: the
// one accumulator of the encoder, the applier and the live replica. Pages
// 1..old_pages were in the database before; a page past them is new, and
// the pages between the old end and a new page that no write names are
// zero pages (SQLite grows a database without writing free-list leaves).
// Pages arrive in ascending order, as in an LTX file.
class DbChecksum {
 public:
  DbChecksum(uint64_t value, uint64_t old_pages, uint32_t page_size)
      : ck_(value), old_(old_pages), next_zero_(old_pages + 1), ps_(page_size) {}
  // True when page pgno was in the database before (its old content counts).
  bool had(uint64_t pgno) const { return pgno <= old_; }
  // Page checksums: `was` leaves the fold (0: none), `now` enters it (0: none).
  void replace(uint64_t was, uint64_t now) {
    if (was) ck_ = kChecksumFlag | (ck_ ^ was);
    if (now) ck_ = fold(ck_, now);
  }
  // Page pgno now holds data; old is what it held when had(pgno) (else
  // unused: unwritten pages below pgno are folded in as zero pages).
  void write(uint32_t pgno, const uint8_t* old, const uint8_t* data);
  // Page pgno, had() and now past the database's end, held old.
  void drop(uint32_t pgno, const uint8_t* old) { replace(page_checksum(pgno, old, ps_), 0); }
  // The database ends at page n: pages up to n past the old end that no
  // write named are zero pages (constant time, fold_zero_pages).
  void end_at(uint64_t n);
  uint64_t value() const { return ck_; }

 private:
  uint64_t ck_, old_, next_zero_;  // next_zero_: the first new page not yet folded
  uint32_t ps_;
};

// Database checksum of the first n_pages pages of an open file (lock page
// skipped). Reads with pread in large chunks; throws on short file or error.
uint64_t db_checksum_fd(int fd, uint32_t page_size, uint64_t n_pages);

}  // namespace ltx
