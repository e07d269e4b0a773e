// fetch.cpp - ordered parallel download (fetch.h).
#include "ltx/fetch.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>

#include "ltx/error.h"
#include "ltx/replica.h"

namespace ltx {

namespace {

struct Part {
  size_t obj = 0;
  uint64_t off = 0;
  int64_t len = -1;   // -1: to the end of the object
  uint64_t cap = 0;   // most bytes the part may hold (UINT64_MAX: any)
  bool last = false;  // the object's last part
};

// A part's bytes: in one of the pool's part_size buffers, or, past it (a
// whole object of a sealed store), all in an unlinked temp file. Refused
// past cap (an object longer than listed) and abandoned once the fetch is
// cancelled.
class PartBuf : public Writer {
 public:
  PartBuf(uint8_t* mem, size_t mem_size, const std::string& tmpdir, uint64_t cap, const std::string& key,
          uint64_t listed, const std::atomic<bool>& cancel)
      : mem_(mem), mem_size_(mem_size), tmpdir_(tmpdir), cap_(cap), key_(key), listed_(listed), cancel_(cancel) {}
  void write(const void* p, size_t n) override {
    if (cancel_) fail_runtime("cancelled");
    if (n > cap_ - size()) fail_integrity(key_ + ": longer than the listed " + std::to_string(listed_) + " bytes");
    if (!spill_ && n <= mem_size_ - used_) {
      std::memcpy(mem_ + used_, p, n);
      used_ += n;
      return;
    }
    if (!spill_) {
      spill_ = std::make_unique<Spool>(0, tmpdir_);
      spill_->write(mem_, used_);
    }
    spill_->write(p, n);
  }
  uint64_t size() const { return spill_ ? spill_->size() : used_; }
  void copy_to(Writer& out, std::vector<uint8_t>& buf) {
    if (!spill_) return out.write(mem_, used_);
    auto r = spill_->reader();
    for (size_t k; (k = r->read(buf.data(), buf.size())) != 0;) out.write(buf.data(), k);
  }
  uint8_t* mem() const { return mem_; }

 private:
  uint8_t* mem_;
  size_t mem_size_, used_ = 0;
  const std::string& tmpdir_;
  std::unique_ptr<Spool> spill_;
  uint64_t cap_;
  const std::string& key_;
  uint64_t listed_;
  const std::atomic<bool>& cancel_;
};

struct Slot {
  std::unique_ptr<PartBuf> data;
  std::exception_ptr err;
  bool done = false;
};

}  // namespace

void fetch_ordered(const std::vector<FetchObject>& objs, const std::function<std::unique_ptr<Store>()>& open,
                   const FetchOptions& o, Writer& out, const std::function<void(size_t)>& begin,
                   const std::function<void(size_t, uint64_t)>& end) {
  if (o.parallel < 1 || o.parallel > kMaxParallel)
    fail(Kind::Usage, "parallel downloads: want 1.." + std::to_string(kMaxParallel));
  const uint64_t psize = std::max<uint64_t>(o.part_size, 64 * 1024);
  std::vector<Part> parts;
  for (size_t i = 0; i < objs.size(); i++) {
    const uint64_t size = objs[i].size;
    if (!o.ranged) {
      parts.push_back({i, 0, -1, UINT64_MAX, true});
      continue;
    }
    for (uint64_t off = 0;; off += psize) {
      bool last = size - off <= psize;
      parts.push_back({i, off, last ? -1 : int64_t(psize), size - off, last});
      if (last) break;
    }
  }
  const size_t window = size_t(o.parallel) + 1;
  std::vector<Slot> slots(parts.size());
  std::mutex mu;
  std::condition_variable cv;
  size_t next = 0, consumed = 0, failed_at = SIZE_MAX;
  std::atomic<bool> cancel{false};
  // One buffer per part the window admits, allocated up front (untouched
  // pages cost nothing) and reused: the bound does not depend on how the
  // allocator keeps freed blocks across threads.
  std::vector<std::unique_ptr<uint8_t[]>> pool;
  std::vector<uint8_t*> free_bufs;
  for (size_t b = 0; b < std::min(window, parts.size()); b++) {
    pool.emplace_back(new uint8_t[psize]);
    free_bufs.push_back(pool.back().get());
  }

  const size_t nworkers = std::min<size_t>(size_t(o.parallel), parts.size());
  std::vector<std::unique_ptr<Store>> stores;
  for (size_t w = 0; w < nworkers; w++) stores.push_back(open());

  auto work = [&](Store& store) {
    for (;;) {
      size_t p;
      uint8_t* mem;
      {
        std::unique_lock<std::mutex> lk(mu);
        cv.wait(lk, [&] { return cancel || next >= parts.size() || next >= failed_at || next < consumed + window; });
        if (cancel || next >= parts.size() || next >= failed_at) return;
        p = next++;
        mem = free_bufs.back();  // claimed parts not yet consumed <= window = buffers
        free_bufs.pop_back();
      }
      const Part& pt = parts[p];
      const FetchObject& ob = objs[pt.obj];
      auto data = std::make_unique<PartBuf>(mem, size_t(psize), o.tmpdir, pt.cap, ob.key, ob.size, cancel);
      std::exception_ptr err;
      try {
        uint64_t n = store.get(ob.key, *data, pt.off, pt.len);
        if (pt.len >= 0 && n != uint64_t(pt.len))
          fail_integrity(ob.key + ": shorter than the listed " + std::to_string(ob.size) + " bytes");
      } catch (...) {
        err = std::current_exception();
      }
      std::lock_guard<std::mutex> lk(mu);
      slots[p].data = std::move(data);
      slots[p].err = err;
      slots[p].done = true;
      if (err) failed_at = std::min(failed_at, p);
      cv.notify_all();
    }
  };

  std::vector<std::thread> threads;
  struct Joiner {
    std::vector<std::thread>& t;
    std::mutex& mu;
    std::condition_variable& cv;
    std::atomic<bool>& cancel;
    ~Joiner() {
      {
        std::lock_guard<std::mutex> lk(mu);
        cancel = true;
      }
      cv.notify_all();
      for (auto& th : t) th.join();
    }
  } joiner{threads, mu, cv, cancel};
  for (size_t w = 0; w < nworkers; w++) threads.emplace_back(work, std::ref(*stores[w]));

  std::vector<uint8_t> buf(256 * 1024);
  uint64_t bytes = 0;
  for (size_t p = 0; p < parts.size(); p++) {
    const Part& pt = parts[p];
    if (pt.off == 0) begin(pt.obj), bytes = 0;
    std::unique_ptr<PartBuf> data;
    {
      std::unique_lock<std::mutex> lk(mu);
      cv.wait(lk, [&] { return slots[p].done; });
      if (slots[p].err) std::rethrow_exception(slots[p].err);
      data = std::move(slots[p].data);
    }
    data->copy_to(out, buf);
    bytes += data->size();
    {
      std::lock_guard<std::mutex> lk(mu);
      free_bufs.push_back(data->mem());
      consumed = p + 1;
    }
    data.reset();
    cv.notify_all();
    if (pt.last) end(pt.obj, bytes);
  }
}

}  // namespace ltx
