// apply.h - apply LTX files to a database file, all or nothing.
//
// The result is built on a temp copy next to the database: each file's TXID
// must continue the previous one (a snapshot starts afresh), its pre-apply
// checksum must equal the copy's current checksum, pages are written as they
// are decoded, the file is truncated or extended to Commit pages, and the
// post-apply checksum is checked. Only when every file passed is the copy
// fsynced and renamed over the database. The database checksum is kept
// incrementally (old page out, new page in), so each file costs reads of the
// pages it touches, plus one full pass the first time a checksum is needed.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ltx/io.h"
#include "ltx/ltx.h"

namespace ltx {

struct ApplyResult {
  int files = 0;
  uint64_t txid = 0;       // MaxTXID of the last file applied
  uint64_t checksum = 0;   // database checksum after the last file (0: not known)
  uint32_t page_size = 0;
  uint32_t commit = 0;
};

// What SQLite would do with a rollback journal DB-journal before anything
// reads or replaces db_path. A journal is hot when it is not empty and its
// first byte is not zero (SQLite's own test). A hot journal beside an
// existing, non-empty database belongs to it: it is rolled back through the
// sqlite3 library (its next opener would do the same), waiting up to busy_ms
// for SQLite's locks. A hot journal with no database (or an empty one)
// belongs to a file that was removed or moved away: SQLite would roll it
// into whatever is put at db_path next, so it is refused (Runtime error,
// naming the journal) rather than deleted. A journal that is still hot after
// the rollback is an open transaction of another process: refused too.
void settle_journal(const std::string& db_path, int busy_ms);

class Applier {
 public:
  // Opens the database (it need not exist) and prepares the temp copy.
  explicit Applier(const std::string& db_path);
  ~Applier();
  // Applies every LTX file read from r until a clean end of stream.
  // Returns the number of files applied; throws with "<name>: ..." context.
  int apply_stream(Reader& r, const std::string& name);
  // Applies the one LTX file read from r (no context added to errors).
  void apply_file(Reader& r);
  // Makes the result durable and visible (fsync, rename, fsync directory).
  ApplyResult commit();
  // Refuse (Integrity) a file whose Commit makes the database larger than
  // this many bytes (0: no limit). Growth is also refused (Runtime) when the
  // temp copy's file system has no room for it, before any page is written:
  // a tiny file can claim 2^32-2 pages.
  void set_max_size(uint64_t bytes) { max_size_ = bytes; }
  // Trial application (s3-verify's replay): from begin_trial() on, every
  // page a file overwrites or cuts off is saved first (in an unlinked file
  // in tmpdir), so rollback() puts the database and the position back as
  // they were, whether the files applied or failed half-way. end_trial()
  // keeps the changes. Costs one page read and write per page touched.
  void begin_trial(const std::string& tmpdir);
  void rollback();
  void end_trial();
  const ApplyResult& result() const { return res_; }

 private:
  void apply_one(Decoder& d);
  uint64_t current_checksum();
  void save_page(uint32_t pgno);  // trial: keep the page as it is now
  struct Trial {
    int fd = -1;                  // saved pages, in the order of pgnos
    std::vector<uint32_t> pgnos;
    ApplyResult res;
    uint64_t npages = 0;
    bool ck_known = false;
  };
  std::unique_ptr<Trial> trial_;
  std::string path_;
  std::unique_ptr<AtomicFile> tmp_;
  ApplyResult res_;
  uint64_t npages_ = 0;    // pages in the temp copy
  uint64_t max_size_ = 0;
  bool ck_known_ = false;  // res_.checksum reflects the temp copy
};

}  // namespace ltx
