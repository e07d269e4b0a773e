// vfs.h - a replica read in place: the database at one TXID, page by page,
// fetched on demand with ranged reads (the mechanism of walsync_vfs(7)).
//
// A view plans a restore (plan_restore: snapshot, highest levels, level 0),
// indexes each planned file, and serves a page from the newest planned
// file that holds it, fetching its frame (and, for sequential reads, the
// frames after it) in one ranged read and keeping decoded pages in an LRU
// cache.
//
// LTX carries no checksum per page, only one per file, and that checksum
// covers the decoded page bytes, not the compressed bytes stored: a changed
// byte inside an LZ4 block can decode to a whole page, wrong, that no frame
// check can tell. So by default (Verify::File) each planned file is
// streamed once (one GET, bounded memory) through the decoder, every check
// of ltx-verify including the file checksum, and the index records an
// XXH3-64 of each frame's bytes as stored; a later ranged read of a frame
// is served only if its bytes hash to that value, before they are decoded.
// Verify::Structure reads only each file's head and tail (its index) and
// checks what a frame shows: where it lies, the page it names, that it
// decodes to exactly one page. It does not catch a changed byte inside the
// compressed data (files up to ViewOptions::whole_max bytes are still
// streamed and hashed).
//
// Index memory: 16 bytes per page frame of a streamed file (page number,
// low 32 bits of the frame's offset, hash; one more 4 bytes per 4 GiB of
// file), 8 bytes for a file indexed from its tail only.
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
  uint64_t size = 0;              // payload bytes
  uint64_t frames_end = 0;        // offset of the end marker: the last frame ends here
  std::vector<uint32_t> pgnos;    // ascending
  std::vector<uint32_t> offs;     // low 32 bits of each frame's offset (frames are contiguous)
  std::vector<uint32_t> wraps;    // positions where the high 32 bits of the offset step up
  std::vector<uint64_t> hashes;   // streamed: XXH3-64 of each frame's bytes as stored
  bool verified = false;          // streamed through the decoder (file checksum)
  long find(uint32_t pgno) const;  // position in pgnos, or -1
  uint64_t offset(size_t i) const;
  uint32_t frame_bytes(size_t i) const {
    return uint32_t((i + 1 < offs.size() ? offset(i + 1) : frames_end) - offset(i));
  }
  // Appends the frame of pgno at off (after the frames already added).
  void add(uint32_t pgno, uint64_t off);
  size_t memory() const {
    return (pgnos.capacity() + offs.capacity() + wraps.capacity()) * 4 + hashes.capacity() * 8 + sizeof(*this);
  }
};

// XXH3-64 of a frame's bytes as stored, as PageIndex::hashes records it.
uint64_t frame_hash(const void* p, size_t n);

// The page index of f from a ranged read of its first head_bytes (header
// and first frames, whose pages go to on_page) and of its tail (one more if
// the index is longer than estimated), without hashes. Throws Integrity on
// any defect the reads can show.
PageIndex read_page_index(Store& s, const ReplicaFile& f, size_t head_bytes, const PageSink& on_page);
// The whole file in one GET, streamed through the decoder (bounded memory):
// every check of ltx-verify, and each frame's hash recorded. Pages go to
// on_page (may be null).
PageIndex read_page_index_whole(Store& s, const ReplicaFile& f, const PageSink& on_page);
// Pages [i, i+n) of idx in one ranged read, each checked against its
// recorded hash (if idx has them) before it is decoded, then decoded and
// checked; every page goes to on_page.
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
  // File: every planned file streamed once and each frame's hash recorded
  // (every page served proven against the file checksum). Structure: head
  // and tail only, frames checked for what they show.
  enum class Verify { File, Structure } verify = Verify::File;
  size_t whole_max = 256u << 10;  // Structure: files up to this size are still streamed
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
