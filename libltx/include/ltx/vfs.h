// vfs.h - a replica read in place: the database at one TXID, page by page,
// fetched on demand with ranged reads (the mechanism of walsync_vfs(7)).
//
// A view plans a restore (plan_restore: snapshot, highest levels, level 0),
// reads each planned file's page index (one ranged read of its head and one
// of its tail; small files are read whole and verified completely), and
// serves a page from the newest planned file that holds it, fetching its
// frame (and, for sequential reads, the frames after it) in one ranged read
// and keeping decoded pages in an LRU cache.
//
// What a page read proves: the frame lies where the page index says, names
// the page asked for, and decodes (LZ4) to exactly one page; the index
// itself is checked for structure (frames contiguous from the header to the
// end marker, page numbers ascending within Commit, lengths as the file
// says). LTX carries no checksum per page, only one per file, so a page of
// a file read in ranges is proven against a checksum only when the file was
// read whole once: files up to ViewOptions::whole_max bytes always are, and
// every file with verify_files; their index then records each page's
// checksum (CRC-64, low 32 bits) and every later read of the page is
// checked against it.
//
// Index memory: 12 bytes per page frame of each planned file, 16 when the
// file was read whole.
#pragma once
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "ltx/compact.h"
#include "ltx/ltx.h"
#include "ltx/replica.h"
#include "ltx/store.h"

namespace ltx {

using PageSink = std::function<void(uint32_t pgno, const uint8_t* page, uint32_t page_size)>;

// Where each page of one replica file lies.
struct PageIndex {
  ReplicaFile file;
  Header hdr;
  Trailer trl;
  uint64_t size = 0;             // payload bytes
  std::vector<uint32_t> pgnos;   // ascending
  std::vector<uint64_t> frames;  // offset << 24 | frame bytes
  std::vector<uint32_t> sums;    // read whole: low 32 bits of each page_checksum
  bool verified = false;         // read whole through the decoder (file checksum)
  long find(uint32_t pgno) const;  // position in pgnos, or -1
  uint64_t offset(size_t i) const { return frames[i] >> 24; }
  uint32_t frame_bytes(size_t i) const { return uint32_t(frames[i] & 0xffffff); }
  size_t memory() const {
    return pgnos.capacity() * 4 + frames.capacity() * 8 + sums.capacity() * 4 + sizeof(*this);
  }
};

// The page index of f from a ranged read of its first head_bytes (header
// and first frames, whose pages go to on_page) and of its tail (one more if
// the index is longer than estimated). Throws Integrity on any defect the
// reads can show.
PageIndex read_page_index(Store& s, const ReplicaFile& f, size_t head_bytes, const PageSink& on_page);
// The whole file through the decoder, in ranged reads of 1 MiB: every check
// of ltx-verify, and each page's checksum recorded. Pages go to on_page
// (may be null).
PageIndex read_page_index_whole(Store& s, const ReplicaFile& f, const PageSink& on_page);
// Pages [i, i+n) of idx in one ranged read, each decoded and checked (and
// against its recorded checksum); every page goes to on_page.
void read_frames(Store& s, const PageIndex& idx, size_t i, size_t n, const PageSink& on_page);

// Decoded pages by (file, pgno), least recently used evicted first.
class PageCache {
 public:
  explicit PageCache(size_t bytes) : cap_(bytes) {}
  // Copies the page into out and makes it the most recent; false if absent.
  bool get(uint32_t file, uint32_t pgno, uint8_t* out, uint32_t page_size);
  void put(uint32_t file, uint32_t pgno, const uint8_t* page, uint32_t page_size);
  size_t bytes() const { return bytes_; }
  size_t capacity() const { return cap_; }
  uint64_t hits = 0, misses = 0;

 private:
  struct Entry {
    uint64_t key;
    std::vector<uint8_t> page;
  };
  size_t cap_, bytes_ = 0;
  std::list<Entry> lru_;  // front: most recent
  std::unordered_map<uint64_t, std::list<Entry>::iterator> map_;
};

struct ViewOptions {
  RestoreTarget target;           // neither txid nor time: follow the newest TXID
  int64_t poll_ms = 1000;         // following: at most one poll per interval
  size_t cache_bytes = 8u << 20;  // page cache
  bool verify_files = false;      // read every planned file whole once, verified
  size_t whole_max = 256u << 10;  // files up to this size are always read whole
  size_t head_bytes = 64u << 10;  // first read of a larger file
  size_t readahead_max = 1u << 20;  // frame bytes a sequential read fetches ahead
  std::function<int64_t()> now_ms;  // the clock; null: the system clock
  std::function<void(const std::string&)> log;  // notes (poll failures); may be null
};

class ReplicaView {
 public:
  ReplicaView(std::unique_ptr<Store> store, const Location& loc, const ViewOptions& o);
  // Plans and reads the page indexes; throws if the replica can't be read.
  void open();
  // A read transaction begins. Following the newest TXID, a poll is due
  // after poll_ms: one LIST of level 0 after the TXID being read (an empty
  // page while nothing changed); new files move the view to the newest
  // TXID. A failed poll keeps the TXID being read (and is logged). Between
  // begin() calls the TXID never changes.
  void begin();
  // Page pgno at the view's TXID (zeros for a page no file holds: the lock
  // page, unwritten growth). A planned file gone under compaction or
  // retention is replaced by planning again for the same TXID.
  void read_page(uint32_t pgno, uint8_t* page);
  uint32_t page_size() const { return page_size_; }
  uint32_t commit() const { return commit_; }
  uint64_t txid() const { return txid_; }
  int64_t time_ms() const { return time_ms_; }
  // LTX time of the newest file the last listing saw.
  int64_t newest_ms();
  uint64_t polls() const { return polls_; }
  uint64_t replans() const { return replans_; }  // moves to a newer TXID
  uint64_t regone() const { return regone_; }    // plans again for a file gone
  size_t index_memory() const;
  const PageCache& cache() const { return cache_; }
  const CountingStore& requests() const { return counting_; }
  const std::vector<std::shared_ptr<PageIndex>>& plan() const { return plan_; }

 private:
  void build(const RestoreTarget& t);
  int64_t now();
  uint32_t file_id(const std::string& key);
  std::unique_ptr<Store> owned_;
  CountingStore counting_;
  Replica rep_;
  ViewOptions o_;
  PageCache cache_;
  std::vector<std::shared_ptr<PageIndex>> plan_;  // snapshot first
  std::map<std::string, std::shared_ptr<PageIndex>> indexes_;
  std::map<std::string, uint32_t> ids_;  // cache ids of the planned files
  uint32_t next_id_ = 0;
  std::vector<ReplicaFile> listed_;
  uint32_t page_size_ = 0, commit_ = 0, last_pgno_ = 0;
  uint64_t txid_ = 0, polls_ = 0, replans_ = 0, regone_ = 0;
  int64_t time_ms_ = 0, newest_ms_ = -1, polled_at_ = 0;
  size_t ahead_ = 0;  // current read-ahead, frame bytes
};

}  // namespace ltx
