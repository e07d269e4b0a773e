// litestream3.cpp - Litestream v0.3 replicas (generations/...) to LTX.
#include "ltx/litestream3.h"

#include <dirent.h>
#include <fcntl.h>
#include <lz4frame.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>

#include "ltx/bytes.h"
#include "ltx/encode.h"
#include "ltx/error.h"
#include "ltx/replica.h"
#include "ltx/state.h"
#include "ltx/wal.h"

namespace ltx {

namespace {

bool parse_hex(const std::string& s, size_t n, uint64_t* v) {
  if (s.size() != n || s.find_first_not_of("0123456789abcdef") != std::string::npos) return false;
  *v = std::strtoull(s.c_str(), nullptr, 16);
  return true;
}

// Decompresses one LZ4 frame as it is written; end() checks it is complete.
class Lz4FrameWriter : public Writer {
 public:
  explicit Lz4FrameWriter(Writer& out) : out_(out), buf_(256 * 1024) {
    if (LZ4F_isError(LZ4F_createDecompressionContext(&ctx_, LZ4F_VERSION))) fail_runtime("lz4: out of memory");
  }
  ~Lz4FrameWriter() override { LZ4F_freeDecompressionContext(ctx_); }
  void write(const void* p, size_t n) override {
    auto* src = static_cast<const uint8_t*>(p);
    while (n > 0 || pending_) {
      if (done_ && n) fail_integrity("lz4: bytes after the end of the frame");
      size_t dn = buf_.size(), sn = n;
      size_t rc = LZ4F_decompress(ctx_, buf_.data(), &dn, src, &sn, nullptr);
      if (LZ4F_isError(rc)) fail_integrity(std::string("lz4: ") + LZ4F_getErrorName(rc));
      if (dn) out_.write(buf_.data(), dn);
      total_ += dn;
      src += sn, n -= sn;
      pending_ = dn == buf_.size();  // output buffer full: more may be buffered inside
      if (rc == 0) done_ = true;
      if (!sn && !dn) break;
    }
  }
  void end() {
    if (!done_) fail_integrity("lz4: truncated frame");
  }
  uint64_t total() const { return total_; }

 private:
  Writer& out_;
  LZ4F_dctx* ctx_ = nullptr;
  std::vector<uint8_t> buf_;
  bool done_ = false, pending_ = false;
  uint64_t total_ = 0;
};

class TempDir {
 public:
  explicit TempDir(const std::string& parent) {
    path_ = parent + "/ls3-get-XXXXXX";
    if (!::mkdtemp(&path_[0])) fail_errno("create temp directory in " + parent);
  }
  ~TempDir() {
    if (DIR* d = ::opendir(path_.c_str())) {
      while (dirent* e = ::readdir(d))
        if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, ".."))
          ::unlink((path_ + "/" + e->d_name).c_str());
      ::closedir(d);
    }
    ::rmdir(path_.c_str());
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace

Ls3Plan plan_ls3(Store& s, const std::string& path, const Ls3Target& t) {
  std::string base = join_key(path, "generations") + "/";
  struct Gen {
    std::map<uint32_t, ObjectInfo> snaps;
    std::vector<Ls3Segment> wal;
    int64_t updated = 0;
  };
  std::map<std::string, Gen> gens;
  for (auto& o : s.list(base)) {
    std::string rest = o.key.substr(base.size());  // <gen>/snapshots/.. | <gen>/wal/..
    size_t a = rest.find('/');
    if (a == std::string::npos) continue;
    std::string gen = rest.substr(0, a), kind, name;
    size_t b = rest.find('/', a + 1);
    if (b == std::string::npos) continue;
    kind = rest.substr(a + 1, b - a - 1);
    name = rest.substr(b + 1);
    uint64_t g, idx, off;
    if (!parse_hex(gen, 16, &g)) continue;
    if (t.has_time && o.mtime_ms > t.time_ms) continue;
    if (kind == "snapshots" && name.size() == 21 && name.compare(8, 13, ".snapshot.lz4") == 0 &&
        parse_hex(name.substr(0, 8), 8, &idx)) {
      gens[gen].snaps[uint32_t(idx)] = o;
    } else if (kind == "wal" && name.size() == 25 && name[8] == '_' && name.compare(17, 8, ".wal.lz4") == 0 &&
               parse_hex(name.substr(0, 8), 8, &idx) && parse_hex(name.substr(9, 8), 8, &off)) {
      gens[gen].wal.push_back({uint32_t(idx), off, o});
    } else {
      continue;
    }
    gens[gen].updated = std::max(gens[gen].updated, o.mtime_ms);
  }
  if (gens.empty()) fail_integrity("no Litestream v0.3 generation under " + base);
  const std::string* pick = nullptr;
  if (!t.generation.empty()) {
    if (!gens.count(t.generation)) fail_integrity("no generation " + t.generation);
    pick = &t.generation;
  } else {
    int64_t best = -1;
    for (auto& kv : gens)
      if (!kv.second.snaps.empty() && kv.second.updated > best) best = kv.second.updated, pick = &kv.first;
    if (!pick) fail_integrity("no generation has a snapshot");
  }
  Gen& g = gens[*pick];
  Ls3Plan p;
  p.generation = *pick;
  uint32_t max_index = 0;
  for (auto& w : g.wal) max_index = std::max(max_index, w.index);
  for (auto& kv : g.snaps) max_index = std::max(max_index, kv.first);
  p.target_index = t.has_index ? t.index : max_index;
  auto it = g.snaps.upper_bound(p.target_index);
  if (it == g.snaps.begin())
    fail_integrity("generation " + p.generation + ": no snapshot at or before WAL index " + hex08(p.target_index));
  --it;
  p.snapshot_index = it->first;
  p.snapshot = it->second;
  for (auto& w : g.wal)
    if (w.index >= p.snapshot_index && w.index <= p.target_index) p.wal.push_back(w);
  std::sort(p.wal.begin(), p.wal.end(), [](const Ls3Segment& a, const Ls3Segment& b) {
    return a.index != b.index ? a.index < b.index : a.offset < b.offset;
  });
  // every index from the snapshot's to the target must be there, from offset 0
  uint32_t want = p.snapshot_index;
  for (size_t i = 0; i < p.wal.size(); i++) {
    if (i == 0 || p.wal[i].index != p.wal[i - 1].index) {
      if (p.wal[i].index != want)
        fail_integrity("generation " + p.generation + ": WAL index " + hex08(want) + " is missing");
      if (p.wal[i].offset != 0)
        fail_integrity("generation " + p.generation + ": WAL index " + hex08(want) + " does not start at offset 0");
      want++;
    }
  }
  return p;
}

int stream_ls3(Store& s, const Ls3Plan& p, Writer& out, const std::string& tmpdir,
               const std::function<void(const std::string&)>& log) {
  TempDir dir(tmpdir);
  PageState state(dir.path() + "/state");
  int files = 0;
  {  // the snapshot: decompress into an unlinked file, encode as TXID 1
    int fd = ::open(dir.path().c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) fail_errno("create temp file in " + dir.path());
    struct Closer { int fd; ~Closer() { ::close(fd); } } c{fd};
    FdWriter fw(fd, 1 << 20);
    Lz4FrameWriter lz(fw);
    with_context(p.snapshot.key, [&] {
      s.get(p.snapshot.key, lz);
      lz.end();
    });
    fw.flush();
    if (lz.total() < 512) fail_integrity(p.snapshot.key + ": not a SQLite database (" + std::to_string(lz.total()) + " bytes)");
    // Litestream v0.3 copies the database file under a read transaction,
    // which does not stop another connection's checkpoint from writing it:
    // page 1 may already count pages the copy ended before. Those pages are
    // in the WAL index the snapshot starts, so `litestream restore` replays
    // them over the short file; do the same by extending it with zero pages.
    // Without WAL to replay, the short file stays an error.
    if (!p.wal.empty() && p.wal.front().index == p.snapshot_index) {
      uint8_t h[100];
      if (pread_full(fd, h, 100, 0) == 100 && get32(h + 92) == get32(h + 24)) {
        uint32_t ps = get16(h + 16) == 1 ? 65536 : get16(h + 16);
        uint64_t want = uint64_t(get32(h + 28)) * ps;
        if (valid_page_size(ps) && lz.total() % ps == 0 && want > lz.total()) {
          if (::ftruncate(fd, off_t(want)) != 0) fail_errno("extend " + p.snapshot.key);
          if (log) log(p.snapshot.key + ": torn by a concurrent checkpoint (" + std::to_string(lz.total() / ps) +
                       " of " + std::to_string(want / ps) + " pages); the WAL completes it");
        }
      }
    }
    with_context(p.snapshot.key, [&] {
      encode_db_snapshot(fd, p.snapshot.key, out, 1, p.snapshot.mtime_ms, &state, dir.path());
    });
    files++;
    if (log) log(p.snapshot.key + ": snapshot, " + std::to_string(lz.total()) + " bytes");
  }
  for (size_t i = 0; i < p.wal.size();) {
    uint32_t index = p.wal[i].index;
    Spool spool(4u << 20, dir.path());
    int64_t ts = 0;
    for (; i < p.wal.size() && p.wal[i].index == index; i++) {
      const Ls3Segment& seg = p.wal[i];
      if (seg.offset != spool.size())
        fail_integrity(seg.obj.key + ": starts at WAL offset " + std::to_string(seg.offset) + ", expected " +
                       std::to_string(spool.size()) + " (a missing segment)");
      Lz4FrameWriter lz(spool);
      with_context(seg.obj.key, [&] {
        s.get(seg.obj.key, lz);
        lz.end();
      });
      ts = std::max(ts, seg.obj.mtime_ms);
    }
    auto r = spool.reader();
    BufReader br(*r, 1 << 20);
    int n = with_context("WAL index " + hex08(index), [&] {
      wal::EventReader ev(br);
      EncodeOptions opt;
      opt.per_txn = false;
      opt.timestamp = ts;
      TxnEncoder enc(out, &state, opt, dir.path());
      return enc.run(ev);
    });
    files += n;
    if (log) log("WAL index " + hex08(index) + ": " + std::to_string(spool.size()) + " bytes, " + std::to_string(n) + " LTX files");
  }
  out.flush();
  return files;
}

}  // namespace ltx
