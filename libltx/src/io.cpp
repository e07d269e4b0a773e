#include "ltx/io.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <libgen.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <time.h>

#include "ltx/error.h"

namespace ltx {

size_t read_full(Reader& r, void* buf, size_t n) {
  auto* p = static_cast<uint8_t*>(buf);
  size_t got = 0;
  while (got < n) {
    size_t k = r.read(p + got, n - got);
    if (k == 0) break;
    got += k;
  }
  return got;
}

void read_exact(Reader& r, void* buf, size_t n) {
  if (read_full(r, buf, n) != n) fail_integrity("unexpected EOF");
}

size_t FdReader::read(void* buf, size_t n) {
  for (;;) {
    ssize_t k = ::read(fd_, buf, n);
    if (k >= 0) return size_t(k);
    if (errno != EINTR) fail_errno("read");
    if (signal_pending()) fail_runtime("read: interrupted by signal " + std::to_string(signal_pending()));
  }
}

bool FdReader::wait(int timeout_ms) {
  struct pollfd p {fd_, POLLIN, 0};
  int rc = ::poll(&p, 1, timeout_ms < 0 ? 0 : timeout_ms);
  if (rc < 0 && errno != EINTR) fail_errno("poll");
  return rc > 0;
}

size_t BufReader::read(void* buf, size_t n) {
  if (pos_ == end_) {
    if (n >= buf_.size()) return r_.read(buf, n);  // large reads bypass the buffer
    pos_ = 0;
    end_ = r_.read(buf_.data(), buf_.size());
    if (end_ == 0) return 0;
  }
  size_t k = std::min(n, end_ - pos_);
  std::memcpy(buf, buf_.data() + pos_, k);
  pos_ += k;
  return k;
}

size_t BufReader::peek(const uint8_t** p, size_t n) {
  if (n > buf_.size()) n = buf_.size();
  if (end_ - pos_ < n) {
    std::memmove(buf_.data(), buf_.data() + pos_, end_ - pos_);
    end_ -= pos_;
    pos_ = 0;
    while (end_ < n) {
      size_t k = r_.read(buf_.data() + end_, buf_.size() - end_);
      if (k == 0) break;
      end_ += k;
    }
  }
  *p = buf_.data() + pos_;
  return std::min(n, end_ - pos_);
}

size_t RegionReader::read(void* buf, size_t n) {
  size_t want = size_t(std::min<uint64_t>(n, end_ - off_));
  if (want == 0) return 0;
  size_t k = pread_full(fd_, buf, want, off_);
  if (k == 0) fail_runtime("pread: file ends at " + std::to_string(off_) + ", before " + std::to_string(end_));
  off_ += k;
  return k;
}

size_t MemReader::read(void* buf, size_t n) {
  size_t k = std::min(n, n_ - off_);
  std::memcpy(buf, p_ + off_, k);
  off_ += k;
  return k;
}

void write_all(int fd, const void* buf, size_t n) {
  auto* p = static_cast<const uint8_t*>(buf);
  while (n > 0) {
    ssize_t k = ::write(fd, p, n);
    if (k < 0) {
      if (errno == EINTR) continue;
      fail_errno("write");
    }
    p += k;
    n -= size_t(k);
  }
}

void pwrite_all(int fd, const void* buf, size_t n, uint64_t off) {
  auto* p = static_cast<const uint8_t*>(buf);
  while (n > 0) {
    ssize_t k = ::pwrite(fd, p, n, off_t(off));
    if (k < 0) {
      if (errno == EINTR) continue;
      fail_errno("write");
    }
    p += k;
    n -= size_t(k);
    off += uint64_t(k);
  }
}

size_t pread_full(int fd, void* buf, size_t n, uint64_t off) {
  auto* p = static_cast<uint8_t*>(buf);
  size_t got = 0;
  while (got < n) {
    ssize_t k = ::pread(fd, p + got, n - got, off_t(off + got));
    if (k < 0) {
      if (errno == EINTR) continue;
      fail_errno("read");
    }
    if (k == 0) break;
    got += size_t(k);
  }
  return got;
}

FdWriter::~FdWriter() = default;

void FdWriter::write(const void* buf, size_t n) {
  if (buf_.size() + n > buf_.capacity()) {
    flush();
    if (n >= buf_.capacity()) {
      write_all(fd_, buf, n);
      return;
    }
  }
  auto* p = static_cast<const uint8_t*>(buf);
  buf_.insert(buf_.end(), p, p + n);
}

void FdWriter::flush() {
  if (buf_.empty()) return;
  // Drop the buffer before writing: a failed flush must not be retried by a
  // later one and emit the same bytes twice.
  std::vector<uint8_t> pending;
  pending.swap(buf_);
  buf_.reserve(pending.capacity());
  write_all(fd_, pending.data(), pending.size());
}

// ---- atomic files and signal cleanup ----

namespace {
constexpr int kMaxTemps = 16;
std::atomic<const char*> g_temps[kMaxTemps];

void register_temp(const char* p) {
  for (auto& t : g_temps) {
    const char* expected = nullptr;
    if (t.compare_exchange_strong(expected, p)) return;
  }
}
void unregister_temp(const char* p) {
  for (auto& t : g_temps) {
    const char* expected = p;
    if (t.compare_exchange_strong(expected, nullptr)) return;
  }
}
std::atomic<int> g_defer{0}, g_pending{0};

void on_signal(int sig) {
  if (g_defer.load() > 0) {
    g_pending.store(sig);
    return;
  }
  for (auto& t : g_temps) {
    const char* p = t.load();
    if (p) ::unlink(p);
  }
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}
}  // namespace

void install_cleanup_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGHUP, &sa, nullptr);
}

SignalDeferral::SignalDeferral() { g_defer++; }
SignalDeferral::~SignalDeferral() {
  if (--g_defer == 0 && g_pending.load()) ::raise(g_pending.load());
}
int signal_pending() { return g_pending.load(); }

static std::string dir_of(const std::string& path) {
  auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

void fsync_dir_of(const std::string& path) {
  std::string d = dir_of(path);
  int fd = ::open(d.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) fail_errno("open " + d);
  int rc = ::fsync(fd);
  int e = errno;
  ::close(fd);
  errno = e;
  if (rc != 0 && errno != EINVAL) fail_errno("fsync " + d);
}

AtomicFile::AtomicFile(const std::string& path, int mode) : path_(path) {
  // Unique enough with O_EXCL retrying: pid, a counter and the clock (a
  // std::random_device per file showed up in profiles).
  static std::atomic<uint32_t> counter{0};
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  uint32_t seed = uint32_t(::getpid()) * 2654435761u ^ uint32_t(ts.tv_nsec);
  auto rd = [&] { return seed + 0x9e3779b9u * ++counter; };
  auto slash = path.rfind('/');
  std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  std::string dir = slash == std::string::npos ? "" : path.substr(0, slash + 1);
  for (int i = 0; i < 100 && fd_ < 0; i++) {
    char suffix[32];
    std::snprintf(suffix, sizeof suffix, "%ld-%08x", long(::getpid()), rd());
    tmp_ = dir + "." + base + ".tmp-" + suffix;
    fd_ = ::open(tmp_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd_ < 0 && errno != EEXIST) fail_errno("create " + tmp_);
  }
  if (fd_ < 0) fail_errno("create " + tmp_);
  register_temp(tmp_.c_str());
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    int e = errno;
    abort();
    errno = e;
    fail_errno("lock " + path + " temp file");
  }
}

void remove_stale_temps(const std::string& path) {
  const std::string dir = dir_of(path);
  auto slash = path.rfind('/');
  const std::string prefix = "." + (slash == std::string::npos ? path : path.substr(slash + 1)) + ".tmp-";
  DIR* dp = ::opendir(dir.c_str());
  if (!dp) return;  // creating the temp file will say why
  while (struct dirent* e = ::readdir(dp)) {
    std::string n = e->d_name;
    if (n.compare(0, prefix.size(), prefix) != 0) continue;
    char* end = nullptr;
    long pid = std::strtol(n.c_str() + prefix.size(), &end, 10);
    if (pid <= 0 || *end != '-' || std::strlen(end + 1) != 8) continue;  // not our naming
    if (::kill(pid_t(pid), 0) == 0 || errno != ESRCH) continue;           // its owner may live
    std::string p = dir + "/" + n;
    int fd = ::open(p.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) continue;
    struct stat a {}, b {};
    if (::flock(fd, LOCK_EX | LOCK_NB) == 0 && ::fstat(fd, &a) == 0 && S_ISREG(a.st_mode) &&
        ::lstat(p.c_str(), &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev)
      ::unlink(p.c_str());
    ::close(fd);
  }
  ::closedir(dp);
}

AtomicFile::~AtomicFile() { abort(); }

void AtomicFile::commit() {
  if (fd_ < 0) fail_runtime("commit " + path_ + ": file already closed");
  if (::fsync(fd_) != 0) fail_errno("fsync " + tmp_);
  int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) fail_errno("close " + tmp_);
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) fail_errno("rename " + tmp_ + " to " + path_);
  unregister_temp(tmp_.c_str());
  tmp_.clear();
  fsync_dir_of(path_);
}

void AtomicFile::abort() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  if (!tmp_.empty()) {
    ::unlink(tmp_.c_str());
    unregister_temp(tmp_.c_str());
    tmp_.clear();
  }
}

bool is_tty(int fd) { return ::isatty(fd) == 1; }

namespace {
uint64_t avail(const struct statvfs& vfs) {
  const uint64_t unit = vfs.f_frsize ? vfs.f_frsize : vfs.f_bsize;
  if (unit != 0 && uint64_t(vfs.f_bavail) > UINT64_MAX / unit) return UINT64_MAX;
  return uint64_t(vfs.f_bavail) * unit;
}
}  // namespace

uint64_t free_bytes(int fd) {
  struct stat st {};
  struct statvfs vfs {};
  if (::fstat(fd, &st) != 0 || !(S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)) || ::fstatvfs(fd, &vfs) != 0)
    return UINT64_MAX;
  return avail(vfs);
}

uint64_t free_bytes(const std::string& path) {
  struct statvfs vfs {};
  return ::statvfs(path.c_str(), &vfs) == 0 ? avail(vfs) : UINT64_MAX;
}

void check_room(uint64_t room, uint64_t need, const std::string& what) {
  if (need > room)
    fail_runtime(what + ": needs " + std::to_string(need) + " bytes, " + std::to_string(room) +
                 " free on its file system");
}

}  // namespace ltx
