// walsync_vfs - a SQLite loadable extension: the read-only VFS "walsync"
// that opens a replica where it lies (man/walsync_vfs.7). The mechanism is
// ltx::ReplicaView (libltx/include/ltx/vfs.h); this file is SQLite's glue:
// URI parameters, the io methods, the SQL functions.
//
//   .load walsync_vfs
//   .open file:app.db?vfs=walsync&replica=s3://bucket/prod/app
#include <signal.h>
#include <sqlite3ext.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "ltx/bytes.h"
#include "ltx/vfs.h"
#include "s3common.h"

SQLITE_EXTENSION_INIT1

namespace {

constexpr const char* kName = "walsync";

sqlite3_vfs* g_base = nullptr;  // the default VFS: everything but the main database

struct File {
  sqlite3_file base;
  ltx::ReplicaView* view;
  int lock;
  bool quiet;
  std::string* replica;
  std::vector<uint8_t>* page;
};

// One line, as every walsync tool says it, on stderr (unless log=none) and
// to sqlite3_log; SQLite's own message for the error code is generic.
void report(bool quiet, int rc, const std::string& replica, const std::string& msg) {
  std::string line = replica + ": " + msg;
  if (!quiet) std::fprintf(stderr, "walsync_vfs: %s\n", ltx::printable(line).c_str());
  sqlite3_log(rc, "walsync_vfs: %s", line.c_str());
}

int error_rc(const ltx::Error& e, int runtime_rc) {
  return e.kind() == ltx::Kind::Integrity ? SQLITE_CORRUPT : runtime_rc;
}

// ---------------------------------------------------------------- io methods

int x_close(sqlite3_file* f) {
  File* p = reinterpret_cast<File*>(f);
  delete p->view;
  delete p->replica;
  delete p->page;
  return SQLITE_OK;
}

// Page 1 as SQLite must see it: rollback mode (a WAL-mode header would make
// SQLite look for a -wal and -shm), and the change counter (with the
// version-valid-for number and the in-header size) of the TXID being read,
// so that a connection's page cache is dropped when the view moves.
void patch_header(uint8_t* p, const ltx::ReplicaView& v) {
  p[18] = p[19] = 1;
  ltx::put32(p + 24, uint32_t(v.txid()));
  ltx::put32(p + 28, v.commit());
  ltx::put32(p + 92, uint32_t(v.txid()));
}

int x_read(sqlite3_file* f, void* buf, int amt, sqlite3_int64 off) {
  File* p = reinterpret_cast<File*>(f);
  ltx::ReplicaView& v = *p->view;
  auto* out = static_cast<uint8_t*>(buf);
  try {
    const uint64_t ps = v.page_size(), size = uint64_t(v.commit()) * ps;
    uint64_t at = uint64_t(off), end = at + uint64_t(amt);
    std::vector<uint8_t>& page = *p->page;
    page.resize(ps);
    while (at < end && at < size) {
      uint32_t pgno = uint32_t(at / ps) + 1;
      uint64_t in = at % ps, n = std::min<uint64_t>(ps - in, std::min(end, size) - at);
      v.read_page(pgno, page.data());
      if (pgno == 1) patch_header(page.data(), v);
      std::memcpy(out + (at - uint64_t(off)), page.data() + in, size_t(n));
      at += n;
    }
    if (at < end) {
      std::memset(out + (at - uint64_t(off)), 0, size_t(end - at));
      return SQLITE_IOERR_SHORT_READ;
    }
    return SQLITE_OK;
  } catch (const ltx::Error& e) {
    int rc = error_rc(e, SQLITE_IOERR_READ);
    report(p->quiet, rc, *p->replica, "TXID " + ltx::hex16(v.txid()) + ": " + e.what());
    return rc;
  } catch (const std::exception& e) {
    report(p->quiet, SQLITE_IOERR_READ, *p->replica, e.what());
    return SQLITE_IOERR_READ;
  }
}

int x_write(sqlite3_file*, const void*, int, sqlite3_int64) { return SQLITE_READONLY; }
int x_truncate(sqlite3_file*, sqlite3_int64) { return SQLITE_READONLY; }
int x_sync(sqlite3_file*, int) { return SQLITE_OK; }

int x_file_size(sqlite3_file* f, sqlite3_int64* size) {
  File* p = reinterpret_cast<File*>(f);
  *size = sqlite3_int64(uint64_t(p->view->commit()) * p->view->page_size());
  return SQLITE_OK;
}

// A read transaction takes SHARED from NONE: the one moment the view may
// move to a newer TXID.
int x_lock(sqlite3_file* f, int level) {
  File* p = reinterpret_cast<File*>(f);
  if (level > SQLITE_LOCK_SHARED) return SQLITE_READONLY;
  if (p->lock == SQLITE_LOCK_NONE && level == SQLITE_LOCK_SHARED) {
    try {
      p->view->begin();
    } catch (const std::exception& e) {  // begin() keeps the TXID on failure; this is a bug guard
      report(p->quiet, SQLITE_IOERR_LOCK, *p->replica, e.what());
      return SQLITE_IOERR_LOCK;
    }
  }
  p->lock = level;
  return SQLITE_OK;
}

int x_unlock(sqlite3_file* f, int level) {
  reinterpret_cast<File*>(f)->lock = level;
  return SQLITE_OK;
}

int x_check_reserved(sqlite3_file*, int* out) {
  *out = 0;
  return SQLITE_OK;
}

int x_file_control(sqlite3_file* f, int op, void* arg) {
  if (op == SQLITE_FCNTL_VFSNAME) {
    *static_cast<char**>(arg) = sqlite3_mprintf("%s", kName);
    return SQLITE_OK;
  }
  (void)f;
  return SQLITE_NOTFOUND;
}

int x_sector_size(sqlite3_file*) { return 512; }
int x_device_characteristics(sqlite3_file*) { return 0; }

const sqlite3_io_methods kIo = {
    1, x_close, x_read, x_write, x_truncate, x_sync, x_file_size, x_lock, x_unlock, x_check_reserved,
    x_file_control, x_sector_size, x_device_characteristics,
    nullptr, nullptr, nullptr, nullptr, nullptr, nullptr};

// ---------------------------------------------------------------- vfs methods

std::string param(const char* name, const char* key) {
  const char* v = sqlite3_uri_parameter(name, key);
  return v ? v : "";
}

ltx::ViewOptions options(const char* name) {
  ltx::ViewOptions o;
  std::string txid = param(name, "txid"), ts = param(name, "timestamp");
  if (!txid.empty() && !ts.empty()) ltx::fail(ltx::Kind::Usage, "txid and timestamp: give one");
  if (!txid.empty()) {
    std::string h = txid.compare(0, 2, "0x") == 0 ? txid.substr(2) : txid;
    if (h.empty() || h.size() > 16 || h.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos)
      ltx::fail(ltx::Kind::Usage, "txid=" + txid + ": want a TXID of 1 to 16 hex digits (txid=2a)");
    o.target.txid = std::strtoull(h.c_str(), nullptr, 16);
    if (o.target.txid == 0) ltx::fail(ltx::Kind::Usage, "txid=" + txid + ": TXIDs start at 1");
    o.target.has_txid = true;
  }
  if (!ts.empty()) {
    if (!ltx::parse_timestamp(ts, &o.target.time_ms))
      ltx::fail(ltx::Kind::Usage, "timestamp=" + ts + ": want RFC 3339 (2026-01-02T15:04:05Z)");
    o.target.has_time = true;
  }
  std::string poll = param(name, "poll");
  if (!poll.empty()) {
    o.poll_ms = ltx::parse_duration_ms(poll);
    if (o.poll_ms < 0 || o.poll_ms > 86400000) ltx::fail(ltx::Kind::Usage, "poll=" + poll + ": want a duration up to 1d (500ms, 2s)");
  }
  std::string cache = param(name, "cachesize");  // SQLite owns "cache" (shared, private)
  if (!cache.empty()) {
    uint64_t c = cli::parse_size(cache);
    if (c < (64u << 10) || c > (uint64_t(1) << 40))
      ltx::fail(ltx::Kind::Usage, "cachesize=" + cache + ": want a size from 64K to 1T (8M, 1G)");
    o.cache_bytes = size_t(c);
  }
  // file (the default): every file streamed once, every page served
  // proven; structure (page, its older name): frames checked for what they
  // show, a changed byte inside compressed data not caught.
  std::string verify = param(name, "verify");
  if (verify == "structure" || verify == "page") o.verify = ltx::ViewOptions::Verify::Structure;
  else if (!verify.empty() && verify != "file")
    ltx::fail(ltx::Kind::Usage, "verify=" + verify + ": want file (the default) or structure");
  return o;
}

// The store of the replica URL: the S3 environment of every walsync tool
// (AWS_*, WALSYNC_AGE_IDENTITY_FILE), read as s3common.h reads it. SQLite's
// host keeps its SIGPIPE disposition (curl does not raise it).
std::unique_ptr<ltx::Store> open_store(const ltx::Location& loc) {
  struct sigaction old {};
  ::sigaction(SIGPIPE, nullptr, &old);
  struct Restore {
    struct sigaction* o;
    ~Restore() { ::sigaction(SIGPIPE, o, nullptr); }
  } restore{&old};
  ltx::S3Config c = s3cli::config(s3cli::Flags{}, loc);
  return ltx::open_store(loc, c);
}

int x_open(sqlite3_vfs* vfs, const char* name, sqlite3_file* f, int flags, int* out_flags) {
  (void)vfs;
  if (!(flags & SQLITE_OPEN_MAIN_DB) || !name) return g_base->xOpen(g_base, name, f, flags, out_flags);
  File* p = reinterpret_cast<File*>(f);
  std::memset(p, 0, sizeof *p);
  p->quiet = param(name, "log") == "none";
  std::string replica = param(name, "replica");
  try {
    if (replica.empty()) ltx::fail(ltx::Kind::Usage, "no replica: open file:NAME?vfs=walsync&replica=URL");
    std::string log = param(name, "log");
    if (!log.empty() && log != "none" && log != "stderr")
      ltx::fail(ltx::Kind::Usage, "log=" + log + ": want stderr or none");
    ltx::ViewOptions o = options(name);
    bool quiet = p->quiet;
    o.log = [quiet, replica](const std::string& m) { report(quiet, SQLITE_NOTICE, replica, m); };
    ltx::Location loc = ltx::parse_url(replica);
    auto view = std::make_unique<ltx::ReplicaView>(open_store(loc), loc, o);
    view->open();
    p->view = view.release();
    p->replica = new std::string(replica);
    p->page = new std::vector<uint8_t>();
  } catch (const ltx::Error& e) {
    // A damaged or missing replica file is the database's defect, not the
    // name's: SQLITE_CORRUPT ("database disk image is malformed").
    int rc = error_rc(e, SQLITE_CANTOPEN);
    report(p->quiet, rc, replica.empty() ? std::string("walsync") : replica, e.what());
    return rc;
  } catch (const std::exception& e) {
    report(p->quiet, SQLITE_CANTOPEN, replica, e.what());
    return SQLITE_CANTOPEN;
  }
  p->base.pMethods = &kIo;
  if (out_flags) *out_flags = SQLITE_OPEN_READONLY | SQLITE_OPEN_MAIN_DB;
  return SQLITE_OK;
}

int x_delete(sqlite3_vfs*, const char* name, int sync) { return g_base->xDelete(g_base, name, sync); }

bool ends_with(const std::string& s, const char* suf) {
  size_t n = std::strlen(suf);
  return s.size() >= n && s.compare(s.size() - n, n, suf) == 0;
}

// A replica has no journal, WAL or shared memory beside it, whatever lies
// in the current directory under the name.
int x_access(sqlite3_vfs*, const char* name, int flags, int* out) {
  std::string n = name;
  if (ends_with(n, "-journal") || ends_with(n, "-wal") || ends_with(n, "-shm")) {
    *out = 0;
    return SQLITE_OK;
  }
  return g_base->xAccess(g_base, name, flags, out);
}

int x_full_pathname(sqlite3_vfs*, const char* name, int n, char* out) {
  return g_base->xFullPathname(g_base, name, n, out);
}
void* x_dlopen(sqlite3_vfs*, const char* f) { return g_base->xDlOpen(g_base, f); }
void x_dlerror(sqlite3_vfs*, int n, char* m) { g_base->xDlError(g_base, n, m); }
void (*x_dlsym(sqlite3_vfs*, void* h, const char* s))(void) { return g_base->xDlSym(g_base, h, s); }
void x_dlclose(sqlite3_vfs*, void* h) { g_base->xDlClose(g_base, h); }
int x_randomness(sqlite3_vfs*, int n, char* out) { return g_base->xRandomness(g_base, n, out); }
int x_sleep(sqlite3_vfs*, int us) { return g_base->xSleep(g_base, us); }
int x_current_time(sqlite3_vfs*, double* t) { return g_base->xCurrentTime(g_base, t); }
int x_last_error(sqlite3_vfs*, int n, char* m) { return g_base->xGetLastError(g_base, n, m); }
int x_current_time64(sqlite3_vfs*, sqlite3_int64* t) { return g_base->xCurrentTimeInt64(g_base, t); }

sqlite3_vfs g_vfs = {
    2, 0, 1024, nullptr, kName, nullptr,
    x_open, x_delete, x_access, x_full_pathname, x_dlopen, x_dlerror, x_dlsym, x_dlclose,
    x_randomness, x_sleep, x_current_time, x_last_error, x_current_time64,
    nullptr, nullptr, nullptr};

// ---------------------------------------------------------------- SQL functions

// The view of a schema ('main' unless named), or null with an error set.
ltx::ReplicaView* view_of(sqlite3_context* ctx, int argc, sqlite3_value** argv) {
  const char* schema = argc > 0 ? reinterpret_cast<const char*>(sqlite3_value_text(argv[0])) : "main";
  sqlite3_file* f = nullptr;
  if (!schema || sqlite3_file_control(sqlite3_context_db_handle(ctx), schema, SQLITE_FCNTL_FILE_POINTER, &f) != SQLITE_OK ||
      !f || f->pMethods != &kIo) {
    sqlite3_result_error(ctx, "not a database opened with vfs=walsync", -1);
    return nullptr;
  }
  return reinterpret_cast<File*>(f)->view;
}

void fn_txid(sqlite3_context* ctx, int argc, sqlite3_value** argv) {
  if (auto* v = view_of(ctx, argc, argv)) sqlite3_result_int64(ctx, sqlite3_int64(v->txid()));
}

void fn_time(sqlite3_context* ctx, int argc, sqlite3_value** argv) {
  if (auto* v = view_of(ctx, argc, argv)) sqlite3_result_text(ctx, ltx::format_timestamp(v->time_ms()).c_str(), -1, SQLITE_TRANSIENT);
}

void fn_lag(sqlite3_context* ctx, int argc, sqlite3_value** argv) {
  auto* v = view_of(ctx, argc, argv);
  if (!v) return;
  try {
    sqlite3_result_double(ctx, double(std::max<int64_t>(0, v->newest_ms() - v->time_ms())) / 1000.0);
  } catch (const std::exception& e) {
    sqlite3_result_error(ctx, e.what(), -1);
  }
}

void fn_stats(sqlite3_context* ctx, int argc, sqlite3_value** argv) {
  auto* v = view_of(ctx, argc, argv);
  if (!v) return;
  const auto& r = v->requests();
  size_t verified = 0;
  for (auto& i : v->plan()) verified += i->verified;
  char b[512];
  std::snprintf(b, sizeof b,
                "{\"txid\":%llu,\"files\":%zu,\"verified_files\":%zu,\"lists\":%llu,\"gets\":%llu,"
                "\"cache_bytes\":%zu,\"cache_hits\":%llu,\"cache_misses\":%llu,\"index_bytes\":%zu,"
                "\"polls\":%llu,\"replans\":%llu,\"regone\":%llu}",
                (unsigned long long)v->txid(), v->plan().size(), verified, (unsigned long long)r.lists,
                (unsigned long long)r.gets, v->cache().bytes(), (unsigned long long)v->cache().hits,
                (unsigned long long)v->cache().misses, v->index_memory(), (unsigned long long)v->polls(),
                (unsigned long long)v->replans(), (unsigned long long)v->regone());
  sqlite3_result_text(ctx, b, -1, SQLITE_TRANSIENT);
}

int register_functions(sqlite3* db, char**, const sqlite3_api_routines*) {
  struct Fn {
    const char* name;
    void (*f)(sqlite3_context*, int, sqlite3_value**);
  } fns[] = {{"walsync_txid", fn_txid}, {"walsync_time", fn_time}, {"walsync_lag", fn_lag}, {"walsync_stats", fn_stats}};
  for (auto& fn : fns)
    for (int n = 0; n <= 1; n++) {
      int rc = sqlite3_create_function(db, fn.name, n, SQLITE_UTF8, nullptr, fn.f, nullptr, nullptr);
      if (rc != SQLITE_OK) return rc;
    }
  return SQLITE_OK;
}

}  // namespace

// `.load walsync_vfs` finds this entry point by the file's name. The VFS is
// registered once (not as the default) and the library stays loaded; the
// SQL functions are added to this connection and every later one.
extern "C" __attribute__((visibility("default"))) int sqlite3_walsyncvfs_init(
    sqlite3* db, char** err, const sqlite3_api_routines* api) {
  SQLITE_EXTENSION_INIT2(api);
  if (!g_base) {
    g_base = sqlite3_vfs_find(nullptr);
    if (!g_base) return SQLITE_ERROR;
    g_vfs.szOsFile = std::max<int>(int(sizeof(File)), g_base->szOsFile);
    g_vfs.mxPathname = g_base->mxPathname;
    int rc = sqlite3_vfs_register(&g_vfs, 0);
    if (rc == SQLITE_OK)
      rc = sqlite3_auto_extension(reinterpret_cast<void (*)(void)>(register_functions));
    if (rc != SQLITE_OK) return rc;
  }
  int rc = register_functions(db, err, api);
  return rc == SQLITE_OK ? SQLITE_OK_LOAD_PERMANENTLY : rc;
}
