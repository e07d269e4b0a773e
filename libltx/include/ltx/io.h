// io.h - byte streams over file descriptors, and atomic file replacement.
//
// Readers and writers are tiny interfaces so the LTX and WAL state machines
// run over pipes, files, sockets or memory alike.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace ltx {

class Reader {
 public:
  virtual ~Reader() = default;
  // Read up to n bytes; returns 0 only at end of stream. Throws on error.
  virtual size_t read(void* buf, size_t n) = 0;
  // Waits up to timeout_ms for a read that would not block (bytes or the
  // end of the stream); false on timeout or a signal. Readers that cannot
  // tell return true at once.
  virtual bool wait(int timeout_ms) {
    (void)timeout_ms;
    return true;
  }
};

class Writer {
 public:
  virtual ~Writer() = default;
  // Write all n bytes or throw.
  virtual void write(const void* buf, size_t n) = 0;
  virtual void flush() {}
};

// Read exactly n bytes. Returns the count read: n, or less at end of stream.
size_t read_full(Reader& r, void* buf, size_t n);
// Read exactly n bytes or throw Integrity "unexpected EOF".
void read_exact(Reader& r, void* buf, size_t n);

class FdReader : public Reader {
 public:
  explicit FdReader(int fd) : fd_(fd) {}
  size_t read(void* buf, size_t n) override;
  bool wait(int timeout_ms) override;  // poll(2)
  int fd() const { return fd_; }

 private:
  int fd_;
};

// Buffered reader on top of another reader (the decoders read small headers).
class BufReader : public Reader {
 public:
  explicit BufReader(Reader& r, size_t cap = 64 * 1024) : r_(r), buf_(cap) {}
  size_t read(void* buf, size_t n) override;
  // Peek up to n bytes without consuming; returns count available (< n at EOF).
  size_t peek(const uint8_t** p, size_t n);
  size_t buffered() const { return end_ - pos_; }
  bool wait(int timeout_ms) override { return buffered() > 0 || r_.wait(timeout_ms); }

 private:
  Reader& r_;
  std::vector<uint8_t> buf_;
  size_t pos_ = 0, end_ = 0;
};

// Reads bytes [off, end) of a file with pread(2): the file offset is left
// alone, so several readers may share one descriptor. A file shorter than
// end is a runtime error (a file shortened under us).
class RegionReader : public Reader {
 public:
  RegionReader(int fd, uint64_t off, uint64_t end) : fd_(fd), off_(off), end_(end) {}
  size_t read(void* buf, size_t n) override;

 private:
  int fd_;
  uint64_t off_, end_;
};

class MemReader : public Reader {
 public:
  MemReader(const void* p, size_t n) : p_(static_cast<const uint8_t*>(p)), n_(n) {}
  size_t read(void* buf, size_t n) override;

 private:
  const uint8_t* p_;
  size_t n_, off_ = 0;
};

class FdWriter : public Writer {
 public:
  explicit FdWriter(int fd, size_t cap = 64 * 1024) : fd_(fd) { buf_.reserve(cap); }
  ~FdWriter() override;  // does not flush: call flush() and handle its errors
  void write(const void* buf, size_t n) override;
  void flush() override;

 private:
  int fd_;
  std::vector<uint8_t> buf_;
};

class StringWriter : public Writer {
 public:
  void write(const void* buf, size_t n) override {
    s.append(static_cast<const char*>(buf), n);
  }
  std::string s;
};

// write(2) all bytes, retrying on EINTR and short writes. Throws on error.
void write_all(int fd, const void* buf, size_t n);
void pwrite_all(int fd, const void* buf, size_t n, uint64_t off);
// pread exactly n bytes; returns bytes read (< n only at end of file).
size_t pread_full(int fd, void* buf, size_t n, uint64_t off);

// A temp file next to `path` that becomes `path` on commit() (fsync, rename,
// fsync directory) and is removed otherwise. Registered for removal on
// SIGINT/SIGTERM by install_cleanup_handlers(). Named .BASE.tmp-PID-XXXXXXXX
// and flock()ed by its owner while it lives, so that remove_stale_temps()
// can tell the leftovers of a killed process from a live one's.
class AtomicFile {
 public:
  explicit AtomicFile(const std::string& path, int mode = 0644);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  int fd() const { return fd_; }
  const std::string& temp_path() const { return tmp_; }
  void commit();
  void abort();

 private:
  std::string path_, tmp_;
  int fd_ = -1;
};

// Removes the temp files of AtomicFile(path) left by processes that were
// killed: only names .BASE.tmp-PID-XXXXXXXX whose PID is not running and
// whose flock() can be taken (a live owner in another PID namespace holds it).
void remove_stale_temps(const std::string& path);

void fsync_dir_of(const std::string& path);
// On SIGINT/SIGTERM remove every live AtomicFile temp, then re-raise.
void install_cleanup_handlers();
// While a SignalDeferral lives, SIGINT/SIGTERM/SIGHUP caught by those
// handlers only set signal_pending() (a blocked FdReader::read then throws);
// the last deferral's end re-raises the signal. Work that must not be cut
// short, such as aborting a multipart upload, finishes first.
class SignalDeferral {
 public:
  SignalDeferral();
  ~SignalDeferral();
  SignalDeferral(const SignalDeferral&) = delete;
  SignalDeferral& operator=(const SignalDeferral&) = delete;
};
// The deferred signal's number, or 0.
int signal_pending();
// True if fd is a terminal (tools refuse to write binary there).
bool is_tty(int fd);
// Bytes an unprivileged writer may still add to the file system holding fd
// (statvfs f_bavail * f_frsize); UINT64_MAX when fd is neither a regular
// file nor a directory (a pipe has no room to measure) or the file system
// does not say.
uint64_t free_bytes(int fd);
// The same for a path, without opening it (closing any descriptor of a
// file drops the process's POSIX locks on it, SQLite's included).
uint64_t free_bytes(const std::string& path);
// Throws Runtime "<what>: needs N bytes, M free on its file system" when
// `need` > `room`: checked before growth that would otherwise run until the
// disk is full.
void check_room(uint64_t room, uint64_t need, const std::string& what);

}  // namespace ltx
