#include "ltx/state.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <cerrno>
#include <cstring>
#include <sstream>

#include "ltx/bytes.h"
#include "ltx/error.h"
#include "ltx/io.h"

namespace ltx {

namespace {

std::string read_file(const std::string& path, bool* exists) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) {
      *exists = false;
      return "";
    }
    fail_errno("open " + path);
  }
  *exists = true;
  std::string s;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      ::close(fd);
      errno = e;
      fail_errno("read " + path);
    }
    if (n == 0) break;
    s.append(buf, size_t(n));
    if (s.size() > (64u << 20)) break;
  }
  ::close(fd);
  return s;
}

void write_atomic(const std::string& path, const std::string& data) {
  AtomicFile f(path, 0644);
  write_all(f.fd(), data.data(), data.size());
  f.commit();
}

}  // namespace

std::string format_position(const Position& p) {
  std::ostringstream o;
  o << "txid " << hex16(p.txid) << "\nchecksum " << hex16(p.checksum) << "\npage_size "
    << p.page_size << "\ncommit " << p.commit << "\nwal_salt1 " << hex08(p.wal_salt1)
    << "\nwal_salt2 " << hex08(p.wal_salt2) << "\nwal_offset " << p.wal_offset << "\n";
  return o.str();
}

bool parse_position(const std::string& text, Position* out) {
  std::istringstream in(text);
  std::string key, val;
  Position p;
  int seen = 0;
  while (in >> key >> val) {
    try {
      if (key == "txid") { if (!parse_hex16(val, &p.txid)) return false; }
      else if (key == "checksum") { if (!parse_hex16(val, &p.checksum)) return false; }
      else if (key == "page_size") p.page_size = uint32_t(std::stoul(val));
      else if (key == "commit") p.commit = uint32_t(std::stoul(val));
      else if (key == "wal_salt1") p.wal_salt1 = uint32_t(std::stoul(val, nullptr, 16));
      else if (key == "wal_salt2") p.wal_salt2 = uint32_t(std::stoul(val, nullptr, 16));
      else if (key == "wal_offset") p.wal_offset = std::stoull(val);
      else return false;
    } catch (const std::exception&) {
      return false;
    }
    seen++;
  }
  if (seen != 7) return false;
  *out = p;
  return true;
}

PageState::PageState(const std::string& dir) : dir_(dir) {
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) fail_errno("create state directory " + dir);
  std::string pages = dir + "/pages";
  pages_fd_ = ::open(pages.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (pages_fd_ < 0) fail_errno("open " + pages);
  replay_journal();
  bool exists;
  std::string text = read_file(dir + "/position", &exists);
  if (exists && !parse_position(text, &pos_))
    fail_integrity("state " + dir + "/position: unreadable");
}

PageState::~PageState() {
  if (pages_fd_ >= 0) ::close(pages_fd_);
}

uint64_t PageState::get(uint32_t pgno) const {
  uint8_t b[8];
  if (pread_full(pages_fd_, b, 8, uint64_t(pgno - 1) * 8) != 8) return 0;
  return get64(b);
}

void PageState::write_pages(const std::vector<std::pair<uint32_t, uint64_t>>& changes) {
  uint8_t b[8];
  for (const auto& c : changes) {
    put64(b, c.second);
    pwrite_all(pages_fd_, b, 8, uint64_t(c.first - 1) * 8);
  }
  if (::fsync(pages_fd_) != 0) fail_errno("fsync " + dir_ + "/pages");
}

// journal: position text length u32 | text | n u64 | n * (pgno u32, ck u64) | xxh64 u64
void PageState::commit(const Position& p, const std::vector<std::pair<uint32_t, uint64_t>>& changes) {
  std::string text = format_position(p);
  if (!changes.empty()) {
    std::string j;
    uint8_t b[12];
    put32(b, uint32_t(text.size()));
    j.append(reinterpret_cast<char*>(b), 4);
    j += text;
    put64(b, changes.size());
    j.append(reinterpret_cast<char*>(b), 8);
    for (const auto& c : changes) {
      put32(b, c.first);
      put64(b + 4, c.second);
      j.append(reinterpret_cast<char*>(b), 12);
    }
    put64(b, XXH64(j.data(), j.size(), 0));
    j.append(reinterpret_cast<char*>(b), 8);
    write_atomic(dir_ + "/journal", j);
    write_pages(changes);
  }
  write_atomic(dir_ + "/position", text);
  if (!changes.empty() && ::unlink((dir_ + "/journal").c_str()) != 0) fail_errno("remove journal");
  pos_ = p;
}

void PageState::replay_journal() {
  bool exists;
  std::string j = read_file(dir_ + "/journal", &exists);
  if (!exists) return;
  auto* d = reinterpret_cast<const uint8_t*>(j.data());
  bool ok = j.size() >= 20 && XXH64(d, j.size() - 8, 0) == get64(d + j.size() - 8);
  if (ok) {
    uint32_t tl = get32(d);
    ok = 4 + uint64_t(tl) + 8 + 8 <= j.size();
    if (ok) {
      std::string text = j.substr(4, tl);
      uint64_t n = get64(d + 4 + tl);
      ok = 4 + tl + 8 + n * 12 + 8 == j.size();
      if (ok) {
        std::vector<std::pair<uint32_t, uint64_t>> ch;
        const uint8_t* q = d + 4 + tl + 8;
        for (uint64_t i = 0; i < n; i++, q += 12) ch.emplace_back(get32(q), get64(q + 4));
        write_pages(ch);
        write_atomic(dir_ + "/position", text);
      }
    }
  }
  // A torn journal was never followed by page writes: dropping it is safe.
  if (::unlink((dir_ + "/journal").c_str()) != 0) fail_errno("remove journal");
}

}  // namespace ltx
