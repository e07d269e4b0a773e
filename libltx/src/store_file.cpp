// store_file.cpp - the file:// store (keys are absolute paths minus the
// leading '/'), URL parsing, and the store factory.
//
// Writes are atomic: temp file in the same directory, fsync, rename, fsync
// of the directory (ltx::AtomicFile). The "litestream-timestamp" metadata is
// kept as the file's mtime (as Litestream v0.5's file replica does); other
// metadata is not stored.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "ltx/error.h"
#include "ltx/store.h"

namespace ltx {

namespace {

// RFC 3339 -> ms since the epoch; false on bad syntax.
bool rfc3339_ms(const std::string& s, int64_t* out) {
  struct tm tm {};
  const char* p = strptime(s.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
  if (!p) return false;
  int64_t ms = int64_t(timegm(&tm)) * 1000;
  if (*p == '.') {
    int64_t scale = 100;
    for (p++; *p >= '0' && *p <= '9'; p++, scale /= 10) ms += (*p - '0') * scale;
  }
  if (*p == 'Z' || *p == 'z') {
    p++;
  } else if ((*p == '+' || *p == '-') && std::strlen(p) == 6 && p[3] == ':') {
    int off = ((p[1] - '0') * 10 + (p[2] - '0')) * 60 + (p[4] - '0') * 10 + (p[5] - '0');
    ms -= (*p == '+' ? 1 : -1) * int64_t(off) * 60000;
    p += 6;
  } else {
    return false;
  }
  *out = ms;
  return *p == 0;
}

void mkdir_p(const std::string& dir) {
  if (dir.empty() || dir == "/") return;
  struct stat st;
  if (::stat(dir.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) fail_runtime("mkdir " + dir + ": not a directory");
    return;
  }
  mkdir_p(dir.substr(0, dir.rfind('/')));
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) fail_errno("mkdir " + dir);
  fsync_dir_of(dir);
}

class FileStore : public Store {
 public:
  void put(const std::string& key, Reader& body, const Metadata& meta) override {
    with_context("put " + key, [&] {
      std::string path = "/" + key;
      mkdir_p(path.substr(0, path.rfind('/')));
      AtomicFile f(path);
      std::vector<uint8_t> buf(256 * 1024);
      for (;;) {
        size_t n = body.read(buf.data(), buf.size());
        if (n == 0) break;
        write_all(f.fd(), buf.data(), n);
      }
      auto it = meta.find("litestream-timestamp");
      int64_t ms;
      if (it != meta.end() && rfc3339_ms(it->second, &ms)) {
        struct timespec ts[2];
        ts[0].tv_sec = ts[1].tv_sec = time_t(ms / 1000);
        ts[0].tv_nsec = ts[1].tv_nsec = long(ms % 1000) * 1000000;
        if (::futimens(f.fd(), ts) != 0) fail_errno("set mtime");
      }
      f.commit();
    });
  }

  uint64_t get(const std::string& key, Writer& out, uint64_t offset, int64_t length) override {
    return with_context("get " + key, [&] {
      int fd = open_ro(key);
      struct Closer { int fd; ~Closer() { ::close(fd); } } c{fd};
      std::vector<uint8_t> buf(256 * 1024);
      uint64_t done = 0;
      for (;;) {
        size_t want = buf.size();
        if (length >= 0) want = size_t(std::min<uint64_t>(want, uint64_t(length) - done));
        if (want == 0) break;
        size_t n = pread_full(fd, buf.data(), want, offset + done);
        if (n == 0) break;
        out.write(buf.data(), n);
        done += n;
      }
      return done;
    });
  }

  std::string get_tail(const std::string& key, size_t n) override {
    return with_context("get " + key, [&] {
      int fd = open_ro(key);
      struct Closer { int fd; ~Closer() { ::close(fd); } } c{fd};
      struct stat st;
      if (::fstat(fd, &st) != 0) fail_errno("stat");
      if (uint64_t(st.st_size) < n) fail_integrity("file is shorter than " + std::to_string(n) + " bytes");
      std::string s(n, '\0');
      if (pread_full(fd, &s[0], n, uint64_t(st.st_size) - n) != n) fail_runtime("short read");
      return s;
    });
  }

  std::vector<ObjectInfo> list(const std::string& prefix, const std::string& start_after) override {
    std::vector<ObjectInfo> out;
    std::string p = "/" + prefix;
    walk(p.substr(0, p.rfind('/')), p, out);
    if (!start_after.empty())
      out.erase(std::remove_if(out.begin(), out.end(), [&](const ObjectInfo& o) { return o.key <= start_after; }),
                out.end());
    std::sort(out.begin(), out.end(), [](const ObjectInfo& a, const ObjectInfo& b) { return a.key < b.key; });
    return out;
  }

  bool head(const std::string& key, ObjectInfo* info) override {
    struct stat st;
    if (::stat(("/" + key).c_str(), &st) != 0) {
      if (errno == ENOENT || errno == ENOTDIR) return false;
      fail_errno("head " + key);
    }
    if (!S_ISREG(st.st_mode)) return false;
    if (info) fill(key, st, info);
    return true;
  }

  void remove(const std::vector<std::string>& keys) override {
    for (auto& k : keys) {
      if (::unlink(("/" + k).c_str()) != 0 && errno != ENOENT) fail_errno("delete " + k);
    }
    if (!keys.empty()) fsync_dir_of("/" + keys.back());
  }

 private:
  static int open_ro(const std::string& key) {
    int fd = ::open(("/" + key).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      if (errno == ENOENT) fail_runtime("NoSuchKey: no such file");
      fail_errno("open");
    }
    return fd;
  }

  static void fill(const std::string& key, const struct stat& st, ObjectInfo* o) {
    o->key = key;
    o->size = uint64_t(st.st_size);
    o->mtime_ms = int64_t(st.st_mtim.tv_sec) * 1000 + st.st_mtim.tv_nsec / 1000000;
  }

  // Regular files under dir whose path starts with want; dot files (temps) skipped.
  void walk(const std::string& dir, const std::string& want, std::vector<ObjectInfo>& out) {
    DIR* d = ::opendir(dir.empty() ? "/" : dir.c_str());
    if (!d) {
      if (errno == ENOENT || errno == ENOTDIR) return;
      fail_errno("list " + dir);
    }
    struct Closer { DIR* d; ~Closer() { ::closedir(d); } } c{d};
    while (struct dirent* e = ::readdir(d)) {
      if (e->d_name[0] == '.') continue;
      std::string path = dir + "/" + e->d_name;
      size_t n = std::min(path.size(), want.size());
      if (path.compare(0, n, want, 0, n) != 0) continue;
      struct stat st;
      if (::lstat(path.c_str(), &st) != 0) continue;
      if (S_ISDIR(st.st_mode)) {
        walk(path, want, out);
      } else if (S_ISREG(st.st_mode) && path.size() >= want.size()) {
        ObjectInfo o;
        fill(path.substr(1), st, &o);
        out.push_back(std::move(o));
      }
    }
  }
};

std::string strip_slashes(std::string s) {
  while (!s.empty() && s.front() == '/') s.erase(s.begin());
  while (!s.empty() && s.back() == '/') s.pop_back();
  return s;
}

}  // namespace

std::string join_key(const std::string& a, const std::string& b) {
  if (a.empty()) return b;
  if (b.empty()) return a;
  return a + "/" + b;
}

Location parse_url(const std::string& url) {
  Location loc;
  loc.url = url;
  auto bad = [&](const std::string& why) -> Location {
    fail(Kind::Usage, "malformed URL " + url + ": " + why);
  };
  // A query (?versionId=...) would silently become part of the key.
  if (url.find('?') != std::string::npos) return bad("'?' has no meaning in a replica URL");
  if (url.compare(0, 5, "s3://") == 0) {
    loc.scheme = Location::Scheme::S3;
    std::string rest = url.substr(5);
    size_t slash = rest.find('/');
    loc.bucket = rest.substr(0, slash);
    if (loc.bucket.empty()) return bad("no bucket (want s3://BUCKET/PREFIX)");
    for (char c : loc.bucket)
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.' && c != '_')
        return bad("invalid bucket name " + loc.bucket);
    loc.path = slash == std::string::npos ? "" : strip_slashes(rest.substr(slash));
    return loc;
  }
  if (url.compare(0, 7, "file://") == 0) {
    std::string rest = url.substr(7);
    if (rest.compare(0, 9, "localhost") == 0) rest = rest.substr(9);
    if (rest.empty() || rest[0] != '/') return bad("want file:///ABSOLUTE/DIR");
    loc.path = strip_slashes(rest);
    if (loc.path.find("//") != std::string::npos) return bad("empty path component");
    return loc;
  }
  return bad("want s3://BUCKET/PREFIX or file:///DIR");
}

// Default: a reader over the file region.
void Store::put_file(const std::string& key, int fd, uint64_t size, const Metadata& meta) {
  RegionReader r(fd, 0, size);
  put(key, r, meta);
}

std::unique_ptr<Store> open_file_store() { return std::make_unique<FileStore>(); }

std::unique_ptr<Store> open_store(const Location& loc, const S3Config& cfg) {
  std::unique_ptr<Store> s = loc.scheme == Location::Scheme::S3 ? open_s3_store(loc.bucket, cfg) : open_file_store();
  if (cfg.age) s = open_age_store(std::move(s), cfg.age, cfg.tmpdir);
  return s;
}

}  // namespace ltx
