// vfs.cpp - a replica read in place (vfs.h): page indexes from a streamed
// read of each file (or its head and tail), frames fetched and checked on
// demand, an LRU page cache, a view that holds one TXID between
// transactions.
#include "ltx/vfs.h"

#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>

#include "ltx/bytes.h"
#include "ltx/error.h"

namespace ltx {

namespace {

std::string u(uint64_t v) { return std::to_string(v); }

constexpr uint64_t kMaxFrameBytes = 0xffffff;  // far above any frame: an LZ4 bound of 64 KiB plus headers

std::string get_range(Store& s, const std::string& key, uint64_t off, uint64_t n) {
  StringWriter w;
  w.s.reserve(size_t(n));
  s.get(key, w, off, int64_t(n));
  if (w.s.size() != n)
    fail_integrity("bytes " + u(off) + "-" + u(off + n) + ": got " + u(w.s.size()) + " bytes");
  return std::move(w.s);
}

// One GET of a whole object read as a stream: the transfer runs in a
// thread of its own and hands its bytes over through a bounded buffer, so
// the decoder pulls what the one request pushes (s3-get | ltx-apply in one
// process). A transfer error reaches read() after the bytes before it;
// destroying the stream early cancels the transfer.
class GetStream : public Reader {
 public:
  GetStream(Store& s, const std::string& key, size_t cap = 256u << 10) : buf_(cap) {
    t_ = std::thread([this, &s, key] {
      std::exception_ptr err;
      try {
        Sink w(*this);
        s.get(key, w);
      } catch (...) {
        err = std::current_exception();
      }
      std::lock_guard<std::mutex> g(m_);
      err_ = err;
      done_ = true;
      cv_.notify_all();
    });
  }
  ~GetStream() override {
    {
      std::lock_guard<std::mutex> g(m_);
      cancel_ = true;
    }
    cv_.notify_all();
    t_.join();
  }
  size_t read(void* out, size_t n) override {
    std::unique_lock<std::mutex> l(m_);
    cv_.wait(l, [&] { return len_ > 0 || done_; });
    if (len_ == 0) {
      if (err_) std::rethrow_exception(err_);
      return 0;
    }
    size_t k = std::min({n, len_, buf_.size() - head_});
    std::memcpy(out, buf_.data() + head_, k);
    head_ = (head_ + k) % buf_.size();
    len_ -= k;
    cv_.notify_all();
    return k;
  }

 private:
  struct Sink : Writer {
    explicit Sink(GetStream& g) : g(g) {}
    void write(const void* p, size_t n) override { g.put(static_cast<const uint8_t*>(p), n); }
    GetStream& g;
  };
  void put(const uint8_t* p, size_t n) {
    const size_t cap = buf_.size();
    std::unique_lock<std::mutex> l(m_);
    while (n) {
      cv_.wait(l, [&] { return len_ < cap || cancel_; });
      if (cancel_) fail_runtime("read abandoned");
      size_t at = (head_ + len_) % cap, k = std::min({n, cap - len_, cap - at});
      std::memcpy(buf_.data() + at, p, k);
      len_ += k;
      p += k;
      n -= k;
      cv_.notify_all();
    }
  }
  std::vector<uint8_t> buf_;
  size_t head_ = 0, len_ = 0;
  bool done_ = false, cancel_ = false;
  std::exception_ptr err_;
  std::mutex m_;
  std::condition_variable cv_;
  std::thread t_;
};

// Hashes every byte read through it since the last reset(): the decoder
// reads a frame exactly, so after next_page() it holds the frame's hash.
class HashingReader : public Reader {
 public:
  explicit HashingReader(Reader& r) : r_(r) { reset(); }
  size_t read(void* buf, size_t n) override {
    size_t k = r_.read(buf, n);
    XXH3_64bits_update(&st_, buf, k);
    return k;
  }
  void reset() { XXH3_64bits_reset(&st_); }
  uint64_t digest() { return XXH3_64bits_digest(&st_); }

 private:
  Reader& r_;
  XXH3_state_t st_;
};

}  // namespace

uint64_t frame_hash(const void* p, size_t n) { return XXH3_64bits(p, n); }

uint64_t PageIndex::offset(size_t i) const {
  uint64_t hi = uint64_t(std::upper_bound(wraps.begin(), wraps.end(), uint32_t(i)) - wraps.begin());
  return hi << 32 | offs[i];
}

void PageIndex::add(uint32_t pgno, uint64_t off) {
  while (wraps.size() < (off >> 32)) wraps.push_back(uint32_t(offs.size()));
  pgnos.push_back(pgno);
  offs.push_back(uint32_t(off));
}

long PageIndex::find(uint32_t pgno) const {
  auto it = std::lower_bound(pgnos.begin(), pgnos.end(), pgno);
  return it != pgnos.end() && *it == pgno ? long(it - pgnos.begin()) : -1;
}

// ---------------------------------------------------------------- indexes

PageIndex read_page_index(Store& s, const ReplicaFile& f, size_t head_bytes, const PageSink& on_page) {
  return with_context(f.key, [&] {
    PageIndex idx;
    idx.file = f;
    idx.size = s.payload_size(f.key, f.size);
    const uint64_t size = idx.size;
    if (size < kHeaderSize + kPageHeaderSize + 1 + 8 + kTrailerSize)
      fail_integrity("shorter than an LTX file: " + u(size) + " bytes");
    std::string head = get_range(s, f.key, 0, std::min<uint64_t>(size, std::max<size_t>(head_bytes, kHeaderSize)));
    idx.hdr = with_context("decode header", [&] {
      Header h = Header::unmarshal(reinterpret_cast<const uint8_t*>(head.data()));
      h.validate();
      if (h.commit > kMaxPageCount) fail_integrity("commit " + u(h.commit) + " exceeds SQLite's maximum page count");
      return h;
    });
    const Header& h = idx.hdr;
    check_name(f, h);
    const uint32_t ps = h.page_size, lock = lock_pgno(ps);
    // The tail: frames cost at least 11 bytes each and an index entry at
    // most 16, so this estimate (one read) holds unless pages compress more
    // than 16 times; then one more read fetches the rest.
    uint64_t body = size - kHeaderSize;
    uint64_t entries = std::min<uint64_t>(h.commit, body / 11);
    if (!h.snapshot()) entries = std::min<uint64_t>(entries, body / std::max<uint32_t>(ps / 16, 11));
    uint64_t want = std::min<uint64_t>(body, 64 + entries * 12);
    std::string tail = s.get_tail(f.key, size_t(want));
    if (tail.size() != want) fail_integrity("tail read: got " + u(tail.size()) + " bytes");
    auto* tp = reinterpret_cast<const uint8_t*>(tail.data());
    idx.trl.post_apply = get64(tp + want - 16);
    idx.trl.file_checksum = get64(tp + want - 8);
    const uint64_t ilen = get64(tp + want - 24);
    const uint64_t room = body - kPageHeaderSize - 24;  // index bytes the file can hold
    if (ilen == 0 || ilen > room) fail_integrity("index size " + u(ilen) + " out of range for a file of " + u(size) + " bytes");
    const uint64_t need = ilen + 24 + kPageHeaderSize;  // end marker, index, size, trailer
    if (need > want) {
      tail = get_range(s, f.key, size - need, need - want) + tail;
      tp = reinterpret_cast<const uint8_t*>(tail.data());
    }
    const uint8_t* end_marker = tp + tail.size() - need;
    for (uint32_t k = 0; k < kPageHeaderSize; k++)
      if (end_marker[k]) fail_integrity("no end marker before the page index");
    const uint64_t frames_end = size - need;
    // The index: (pgno, offset, size) varints up to pgno 0, exactly ilen bytes.
    with_context("read page index", [&] {
      const uint8_t* p = end_marker + kPageHeaderSize;
      const uint8_t* e = p + ilen;
      auto varint = [&]() -> uint64_t {
        uint64_t v = 0;
        for (int shift = 0;; shift += 7) {
          if (p == e) fail_integrity("index ends inside an entry");
          uint8_t c = *p++;
          if (shift == 63 && c > 1) fail_integrity("varint overflow");
          v |= uint64_t(c & 0x7f) << shift;
          if (!(c & 0x80)) return v;
        }
      };
      uint64_t at = kHeaderSize, last = 0;
      const uint64_t max_entries = ilen / 3;
      idx.pgnos.reserve(size_t(std::min<uint64_t>(max_entries, entries + 1)));
      idx.offs.reserve(idx.pgnos.capacity());
      for (;;) {
        uint64_t pgno = varint();
        if (pgno == 0) break;
        uint64_t off = varint(), n = varint();
        if (pgno > h.commit) fail_integrity("page " + u(pgno) + " out of bounds for commit size " + u(h.commit));
        if (pgno == lock) fail_integrity("lock page " + u(pgno) + " in index");
        if (pgno <= last) fail_integrity("out-of-order page numbers: " + u(last) + "," + u(pgno));
        if (h.snapshot() && pgno != (last + 1 == lock ? last + 2 : last + 1))
          fail_integrity("nonsequential page numbers in snapshot: " + u(last) + "," + u(pgno));
        if (off != at) fail_integrity("page " + u(pgno) + " at offset " + u(off) + ", the frames before end at " + u(at));
        if (n < kPageHeaderSize + 1 || n > kMaxFrameBytes || n > frames_end - at)
          fail_integrity("page " + u(pgno) + ": frame size " + u(n) + " out of range");
        idx.add(uint32_t(pgno), off);
        at += n;
        last = pgno;
      }
      if (p != e) fail_integrity("index size " + u(ilen) + " does not match its entries");
      idx.pgnos.shrink_to_fit();
      idx.offs.shrink_to_fit();
      idx.frames_end = frames_end;
      if (at != frames_end) fail_integrity("frames end at " + u(at) + ", the end marker is at " + u(frames_end));
      if (h.snapshot() && h.commit != 0 && last != (h.commit == lock ? h.commit - 1 : h.commit))
        fail_integrity("snapshot ends at page " + u(last) + ", commit is " + u(h.commit));
    });
    with_context("read trailer", [&] {
      const Trailer& t = idx.trl;
      if (!(t.file_checksum & kChecksumFlag)) fail_integrity("invalid file checksum format");
      if (h.no_checksum()) {
        if (t.post_apply != 0) fail_integrity("post-apply checksum not allowed");
      } else if (h.commit == 0) {
        if (t.post_apply != kChecksumFlag) fail_integrity("post-apply checksum must be empty for zero-length database");
      } else if (!(t.post_apply & kChecksumFlag)) {
        fail_integrity("invalid post-apply checksum format");
      }
    });
    // Pages whose frames the head read holds.
    if (on_page && !idx.pgnos.empty()) {
      size_t n = 0;
      while (n < idx.pgnos.size() && idx.offset(n) + idx.frame_bytes(n) <= head.size()) n++;
      if (n) {
        MemReader r(head.data() + kHeaderSize, head.size() - kHeaderSize);
        Decoder d(r);
        std::vector<uint8_t> page(ps);
        for (size_t i = 0; i < n; i++) {
          d.decode_frame_at(h, idx.offset(i), idx.pgnos[i], page.data());
          if (d.frame_size() != idx.frame_bytes(i))
            fail_integrity("page " + u(idx.pgnos[i]) + ": frame of " + u(d.frame_size()) + " bytes, the index says " + u(idx.frame_bytes(i)));
          on_page(idx.pgnos[i], page.data(), ps);
        }
      }
    }
    return idx;
  });
}

PageIndex read_page_index_whole(Store& s, const ReplicaFile& f, const PageSink& on_page) {
  return with_context(f.key, [&] {
    PageIndex idx;
    idx.file = f;
    GetStream get(s, f.key);
    HashingReader r(get);
    Decoder d(r);
    if (!d.read_header()) fail_integrity("decode header: empty object");
    idx.hdr = d.header();
    check_name(f, idx.hdr);
    const uint32_t ps = idx.hdr.page_size;
    std::vector<uint8_t> page(ps);
    uint32_t pgno;
    for (;;) {
      r.reset();
      uint64_t at = d.offset();
      if (!d.next_page(&pgno, page.data())) {
        idx.frames_end = at;
        break;
      }
      if (d.frame_size() > kMaxFrameBytes) fail_integrity("page " + u(pgno) + ": frame of " + u(d.frame_size()) + " bytes");
      idx.add(pgno, d.frame_offset());
      idx.hashes.push_back(r.digest());
      if (on_page) on_page(pgno, page.data(), ps);
    }
    idx.trl = d.finish();
    uint8_t extra;
    if (read_full(r, &extra, 1) != 0) fail_integrity("bytes after the trailer");
    idx.size = d.offset();
    idx.verified = true;
    idx.pgnos.shrink_to_fit();
    idx.offs.shrink_to_fit();
    idx.hashes.shrink_to_fit();
    return idx;
  });
}

void read_frames(Store& s, const PageIndex& idx, size_t i, size_t n, const PageSink& on_page) {
  if (n == 0 || i + n > idx.pgnos.size()) fail(Kind::Usage, "read_frames: frames out of range");
  with_context(idx.file.key, [&] {
    uint64_t off = idx.offset(i), len = idx.offset(i + n - 1) + idx.frame_bytes(i + n - 1) - off;
    std::string buf = get_range(s, idx.file.key, off, len);
    MemReader r(buf.data(), buf.size());
    Decoder d(r);
    const uint32_t ps = idx.hdr.page_size;
    std::vector<uint8_t> page(ps);
    for (size_t k = i; k < i + n; k++) {
      uint32_t pgno = idx.pgnos[k];
      // The bytes the verified pass hashed, or nothing is decoded.
      if (!idx.hashes.empty()) {
        uint64_t h = frame_hash(buf.data() + (idx.offset(k) - off), idx.frame_bytes(k));
        if (h != idx.hashes[k])
          fail_integrity("page " + u(pgno) + " at offset " + u(idx.offset(k)) + ": frame bytes changed since the file was verified (XXH3 " +
                         hex16(h) + ", verified " + hex16(idx.hashes[k]) + ")");
      }
      d.decode_frame_at(idx.hdr, idx.offset(k), pgno, page.data());
      if (d.frame_size() != idx.frame_bytes(k))
        fail_integrity("page " + u(pgno) + ": frame of " + u(d.frame_size()) + " bytes, the index says " + u(idx.frame_bytes(k)));
      on_page(pgno, page.data(), ps);
    }
  });
}

// ---------------------------------------------------------------- cache

bool PageCache::get(uint32_t file, uint32_t pgno, uint8_t* out, uint32_t page_size) {
  auto it = map_.find(uint64_t(file) << 32 | pgno);
  if (it == map_.end() || it->second->page.size() != page_size) {
    misses++;
    return false;
  }
  lru_.splice(lru_.begin(), lru_, it->second);
  std::memcpy(out, it->second->page.data(), page_size);
  hits++;
  return true;
}

void PageCache::put(uint32_t file, uint32_t pgno, const uint8_t* page, uint32_t page_size) {
  uint64_t key = uint64_t(file) << 32 | pgno;
  auto it = map_.find(key);
  if (it != map_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second);
    return;
  }
  if (page_size > cap_) return;
  while (bytes_ + page_size > cap_ && !lru_.empty()) {
    bytes_ -= lru_.back().page.size();
    map_.erase(lru_.back().key);
    lru_.pop_back();
  }
  lru_.push_front(Entry{key, std::vector<uint8_t>(page, page + page_size)});
  map_[key] = lru_.begin();
  bytes_ += page_size;
}

// ---------------------------------------------------------------- view

ReplicaView::ReplicaView(std::unique_ptr<Store> store, const Location& loc, const ViewOptions& o)
    : owned_(std::move(store)), counting_(*owned_), rep_(counting_, loc), o_(o), cache_(o.cache_bytes) {}

int64_t ReplicaView::now() {
  if (o_.now_ms) return o_.now_ms();
  using namespace std::chrono;
  return duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
}

uint32_t ReplicaView::file_id(const std::string& key) {
  auto it = ids_.find(key);
  if (it != ids_.end()) return it->second;
  uint32_t id = next_id_++;  // never reused: cached pages of a dropped id only age out
  ids_[key] = id;
  return id;
}

size_t ReplicaView::index_memory() const {
  size_t n = 0;
  for (auto& kv : indexes_) n += kv.second->memory();
  return n;
}

void ReplicaView::open() {
  build(o_.target);
  polled_at_ = now();
}

void ReplicaView::build(const RestoreTarget& t) {
  std::vector<ReplicaFile> files = rep_.list();
  RestorePlan p = plan_restore(rep_, files, t);
  std::vector<std::shared_ptr<PageIndex>> plan;
  std::map<std::string, std::shared_ptr<PageIndex>> keep;
  for (auto& f : p.files) {
    auto it = indexes_.find(f.key);
    std::shared_ptr<PageIndex> idx;
    if (it != indexes_.end()) {
      idx = it->second;
    } else {
      uint32_t id = file_id(f.key);
      PageSink fill = [&](uint32_t pgno, const uint8_t* page, uint32_t ps) { cache_.put(id, pgno, page, ps); };
      // A streamed file's pages fill the cache as they go by (the LRU keeps
      // the last ones): a cache as large as the database then needs no
      // request after opening.
      if (f.size <= o_.whole_max || o_.verify == ViewOptions::Verify::File)
        idx = std::make_shared<PageIndex>(read_page_index_whole(counting_, f, fill));
      else
        idx = std::make_shared<PageIndex>(read_page_index(counting_, f, o_.head_bytes, fill));
    }
    keep[f.key] = idx;
    plan.push_back(idx);
  }
  // One database: one page size, and each file continues the one before.
  for (size_t i = 1; i < plan.size(); i++) {
    const Header& h = plan[i]->hdr;
    if (h.page_size != plan[0]->hdr.page_size)
      fail_integrity(plan[i]->file.key + ": page size " + u(h.page_size) + ", the snapshot's is " + u(plan[0]->hdr.page_size));
    uint64_t prev = plan[i - 1]->trl.post_apply;
    if (!h.no_checksum() && h.pre_apply != 0 && prev != 0 && h.pre_apply != prev)
      fail_integrity(plan[i]->file.key + ": pre-apply checksum " + hex16(h.pre_apply) + " does not continue " +
                     plan[i - 1]->file.key + " (post-apply " + hex16(prev) + ")");
  }
  if (plan.empty()) fail_integrity("empty restore plan");
  indexes_.swap(keep);
  for (auto it = ids_.begin(); it != ids_.end();)  // only the plan's files are read
    it = indexes_.count(it->first) ? std::next(it) : ids_.erase(it);
  plan_.swap(plan);
  listed_.swap(files);
  page_size_ = plan_[0]->hdr.page_size;
  commit_ = plan_.back()->hdr.commit;
  txid_ = p.txid;
  time_ms_ = plan_.back()->hdr.timestamp;
  newest_ms_ = -1;
  last_pgno_ = 0;
  ahead_ = 0;
}

int64_t ReplicaView::newest_ms() {
  if (newest_ms_ >= 0) return newest_ms_;
  const ReplicaFile* newest = nullptr;
  for (auto& f : listed_)
    if (!newest || f.max_txid > newest->max_txid) newest = &f;
  if (!newest || newest->max_txid == txid_) newest_ms_ = time_ms_;
  else newest_ms_ = rep_.header(*newest).timestamp;
  return newest_ms_;
}

void ReplicaView::begin() {
  if (o_.target.has_txid || o_.target.has_time) return;
  int64_t t = now();
  if (t - polled_at_ < o_.poll_ms) return;
  polled_at_ = t;
  polls_++;
  try {
    std::string after = rep_.level_prefix(0) + format_filename(txid_, UINT64_MAX);
    if (counting_.list(rep_.level_prefix(0), after).empty()) return;
    uint64_t before = txid_;
    build(RestoreTarget{});
    if (txid_ != before) replans_++;
  } catch (const Error& e) {
    if (o_.log) o_.log(std::string("poll: ") + e.what() + " (still reading TXID " + hex16(txid_) + ")");
  }
}

void ReplicaView::read_page(uint32_t pgno, uint8_t* page) {
  const bool seq = pgno == last_pgno_ + 1;
  last_pgno_ = pgno;
  for (int attempt = 0;; attempt++) {
    const PageIndex* idx = nullptr;
    long i = -1;
    for (size_t k = plan_.size(); k-- > 0;) {
      if (pgno > plan_[k]->hdr.commit) break;  // truncated at or after this file
      i = plan_[k]->find(pgno);
      if (i >= 0) {
        idx = plan_[k].get();
        break;
      }
    }
    if (!idx) {
      std::memset(page, 0, page_size_);
      return;
    }
    uint32_t id = file_id(idx->file.key);
    if (cache_.get(id, pgno, page, page_size_)) return;
    // Read-ahead: sequential reads double it up to readahead_max (and a
    // quarter of the cache); a random read resets it.
    ahead_ = seq ? std::min<size_t>(std::max<size_t>(ahead_ * 2, 32u << 10), std::min(o_.readahead_max, cache_.capacity() / 4))
                 : 0;
    size_t n = 1;
    uint64_t bytes = 0;
    while (size_t(i) + n < idx->pgnos.size() && bytes + idx->frame_bytes(size_t(i) + n) <= ahead_)
      bytes += idx->frame_bytes(size_t(i) + n++);
    try {
      read_frames(counting_, *idx, size_t(i), n, [&](uint32_t p, const uint8_t* data, uint32_t ps) {
        cache_.put(id, p, data, ps);
        if (p == pgno) std::memcpy(page, data, page_size_);
      });
      return;
    } catch (const Error& e) {
      if (e.kind() != Kind::Runtime || attempt > 0) throw;
      // Gone under compaction or retention? The same TXID from other files
      // is the same database: plan again, then read again.
      std::string key = idx->file.key;
      bool listed = false;
      for (auto& f : rep_.list())
        if (f.key == key) listed = true;
      if (listed) throw;
      RestoreTarget same;
      same.has_txid = true;
      same.txid = txid_;
      with_context("page " + u(pgno) + ": " + key + " is gone; planning TXID " + hex16(txid_) + " again",
                   [&] { build(same); });
      regone_++;
    }
  }
}

}  // namespace ltx
