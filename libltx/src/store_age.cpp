// store_age.cpp - a Store whose object bodies are age files (store.h,
// open_age_store). Keys, metadata and layout are those of the store below,
// so `age -d -i key.txt OBJECT | ltx-verify -` reads any object.
//
// Whole reads stream through a DecryptWriter. A ranged read [off, off+len)
// opens the object's header once (a GET of its first KiB, cached for every
// AgeStore of the same keys: s3-get's connections share it), then
// fetches only the sealed 64 KiB chunks that hold the range; a tail reads
// through the end of the object, so the final chunk's flag proves that the
// object was not cut short.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <list>
#include <mutex>

#include "ltx/error.h"
#include "ltx/store.h"

namespace ltx {

namespace {

using age::kChunk;
using age::kNonce;
using age::kSealedChunk;

class AgeStore : public Store {
 public:
  AgeStore(std::unique_ptr<Store> inner, std::shared_ptr<const age::Keys> keys, std::string tmpdir)
      : s_(std::move(inner)), keys_(std::move(keys)), tmpdir_(std::move(tmpdir)) {}

  bool sealed() const override { return true; }

  void put(const std::string& key, Reader& body, const Metadata& meta) override {
    need_recipients(key);
    forget(key);
    age::EncryptReader enc(body, keys_->recipients);
    s_->put(key, enc, meta);
  }

  // Big bodies are sealed into an unnamed temp file first, so the store
  // below can send them from disk as it does plain spools (no part held in
  // memory); small ones stream.
  void put_file(const std::string& key, int fd, uint64_t size, const Metadata& meta) override {
    need_recipients(key);
    forget(key);
    if (size <= (1u << 20)) return Store::put_file(key, fd, size, meta);
    int t = ::open(tmpdir_.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (t < 0) fail_errno("put " + key + ": temp file in " + tmpdir_);
    struct Closer {
      int fd;
      ~Closer() { ::close(fd); }
    } closer{t};
    RegionReader plain(fd, 0, size);
    age::EncryptReader enc(plain, keys_->recipients);
    std::vector<uint8_t> buf(256 * 1024);
    uint64_t sealed = 0;
    for (size_t k; (k = enc.read(buf.data(), buf.size())) > 0; sealed += k) pwrite_all(t, buf.data(), k, sealed);
    s_->put_file(key, t, sealed, meta);
  }

  uint64_t get(const std::string& key, Writer& out, uint64_t offset, int64_t length) override {
    need_identities(key);
    if (offset == 0 && length < 0) {
      age::DecryptWriter d(out, keys_->identities);
      s_->get(key, d);  // decryption errors rise through the store's "get KEY: "
      with_context("get " + key, [&] { d.finish(); });
      return d.written();
    }
    if (length == 0) return 0;
    const Header h = header(key);
    uint64_t first = offset / kChunk;
    uint64_t from = h.payload + first * kSealedChunk;
    int64_t sealed_len = -1;
    if (length > 0) {
      uint64_t last = (offset + uint64_t(length) - 1) / kChunk;
      sealed_len = int64_t((last - first + 1) * kSealedChunk);
    }
    age::DecryptWriter d(out, h.opened, h.nonce, first, offset - first * kChunk, length);
    s_->get(key, d, from, sealed_len);
    with_context("get " + key, [&] { d.finish(); });
    return d.written();
  }

  std::string get_tail(const std::string& key, size_t n) override {
    need_identities(key);
    ObjectInfo info;
    if (!s_->head(key, &info)) fail_runtime("get " + key + ": no such object");
    uint64_t size = payload_size(key, info.size);
    if (n > size) fail_integrity(key + ": shorter than " + std::to_string(n) + " bytes");
    StringWriter w;
    get(key, w, size - n, -1);  // through the end: the final chunk is checked
    if (w.s.size() != n) fail_integrity(key + ": age payload shorter than its envelope says");
    return w.s;
  }

  uint64_t payload_size(const std::string& key, uint64_t sealed) override {
    need_identities(key);
    const Header h = header(key);
    if (sealed < h.payload + age::kTag) fail_integrity(key + ": age payload: truncated");
    uint64_t c = sealed - h.payload;
    uint64_t chunks = (c + kSealedChunk - 1) / kSealedChunk;
    uint64_t last = c - (chunks - 1) * kSealedChunk;
    if (last < age::kTag) fail_integrity(key + ": age payload: truncated chunk");
    return (chunks - 1) * kChunk + last - age::kTag;
  }

  std::vector<ObjectInfo> list(const std::string& prefix, const std::string& start_after) override {
    return s_->list(prefix, start_after);
  }
  bool head(const std::string& key, ObjectInfo* info) override { return s_->head(key, info); }
  void remove(const std::vector<std::string>& keys) override {
    for (const auto& k : keys) forget(k);
    s_->remove(keys);
  }

 private:
  struct Header {
    std::shared_ptr<const age::Keys> keys;  // opened with these (kept alive: the pointer is the match)
    std::string key;
    age::Opened opened;
    std::array<uint8_t, kNonce> nonce{};
    uint64_t payload = 0;  // offset of the first sealed chunk
  };

  void need_recipients(const std::string& key) const {
    if (keys_->recipients.empty()) fail(Kind::Usage, "put " + key + ": encrypting needs --age-recipient or --age-identity");
  }
  void need_identities(const std::string& key) const {
    if (keys_->identities.empty())
      fail(Kind::Usage, "get " + key + ": reading an encrypted replica needs --age-identity");
  }

  // The header of key, opened: a GET of the first KiB (more while the
  // header is longer, up to age's 64 KiB bound). A few are cached, for
  // every AgeStore opened with the same keys (a compaction reads its inputs
  // in turns; s3-get's connections each read parts of one object).
  struct Cache {
    std::mutex mu;
    std::list<Header> list;
  };
  static Cache& cache() {
    static Cache c;
    return c;
  }

  Header header(const std::string& key) {
    {
      Cache& c = cache();
      std::lock_guard<std::mutex> l(c.mu);
      for (auto it = c.list.begin(); it != c.list.end(); ++it)
        if (it->keys == keys_ && it->key == key) {
          c.list.splice(c.list.begin(), c.list, it);
          return c.list.front();
        }
    }
    Header h;
    h.keys = keys_;
    h.key = key;
    StringWriter w;
    for (uint64_t want = 1024;; want *= 4) {
      w.s.clear();
      s_->get(key, w, 0, int64_t(want + kNonce));
      if (with_context("get " + key, [&] { return age::open_header(w.s, keys_->identities, &h.opened); })) break;
      if (w.s.size() < want + kNonce) fail_integrity("get " + key + ": age header: truncated");
    }
    if (w.s.size() < h.opened.header_size + kNonce) fail_integrity("get " + key + ": age payload: truncated nonce");
    std::memcpy(h.nonce.data(), w.s.data() + h.opened.header_size, kNonce);
    h.payload = h.opened.header_size + kNonce;
    Cache& c = cache();
    std::lock_guard<std::mutex> l(c.mu);
    c.list.push_front(h);
    if (c.list.size() > 64) c.list.pop_back();
    return h;
  }

  void forget(const std::string& key) {
    Cache& c = cache();
    std::lock_guard<std::mutex> l(c.mu);
    c.list.remove_if([&](const Header& h) { return h.keys == keys_ && h.key == key; });
  }

  std::unique_ptr<Store> s_;
  std::shared_ptr<const age::Keys> keys_;
  std::string tmpdir_;
};

}  // namespace

std::unique_ptr<Store> open_age_store(std::unique_ptr<Store> inner, std::shared_ptr<const age::Keys> keys,
                                      const std::string& tmpdir) {
  return std::make_unique<AgeStore>(std::move(inner), std::move(keys), tmpdir);
}

}  // namespace ltx
