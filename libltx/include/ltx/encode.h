// encode.h - turn databases and WAL transactions into LTX files.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "ltx/io.h"
#include "ltx/ltx.h"
#include "ltx/state.h"
#include "ltx/wal.h"

namespace ltx {

int64_t now_ms();

struct SnapshotResult {
  Header header;
  Trailer trailer;
};

// Encodes database file `fd` as a snapshot (TXID 1..txid) to w. The page
// size and count come from the SQLite header (falling back to the file size
// when the header's count is stale). With a state, records the page
// checksums and the position so later WAL files continue the chain.
SnapshotResult encode_db_snapshot(int fd, const std::string& name, Writer& w, uint64_t txid,
                                  int64_t timestamp, PageState* state,
                                  const std::string& spool_dir = "/tmp");

struct EncodeOptions {
  bool per_txn = true;       // one LTX per transaction; false: one per input
  uint64_t first_txid = 0;   // stateless mode: TXID of the first file (0: 1)
  int64_t timestamp = 0;     // fixed timestamp (0: event time or now)
  std::string ack_path;      // acknowledgement file: undo records up to it are dropped
  Position adopt;            // txid != 0: a fresh state joins a replica at this position
  // With adopt: a first resync that is not the replica's database (the state
  // was lost or damaged while the database moved on) goes out as TXID
  // adopt.txid + 1 holding every page, its pre-apply checksum the replica's
  // (adopt.checksum), instead of being refused: applied to the replica's
  // database it rewrites every page, so its post-apply checksum is the fold
  // of the pages sent and no old page checksum is needed.
  bool rebuild = false;
  // per_txn: when this says more input is ready within wait_ms (0: right
  // now), a committed transaction waits to share the next LTX file with the
  // ones behind it (group commit under load, one file per transaction when
  // idle), up to max_batch_pages distinct pages in a file.
  std::function<bool(int wait_ms)> input_ready;
  uint32_t max_batch_pages = 16384;
  // Under load (the last file held several transactions), files at most
  // this often: a commit that follows the last file sooner waits out the
  // rest of the interval for company. Each file costs a sync of the
  // state; a lone transaction after a quiet spell goes out at once.
  int min_interval_ms = 3;
};

// Groups the committed transactions of a WAL or WAL stream into LTX files.
// A batch keeps one spool slot per page (a frame of a page the batch holds
// already overwrites it once its transaction commits): the first 256 KiB of
// slots in memory, the rest in an unlinked temp file, so memory is ~40
// bytes a page of a batch (at most max_batch_pages pages); a resync's
// pages, already in page order, are listed in a Changes spill, so any
// database size costs flat memory.
class TxnEncoder {
 public:
  TxnEncoder(Writer& out, PageState* state, const EncodeOptions& opt, const std::string& tmpdir);
  ~TxnEncoder();
  // Consumes every event of r; returns the number of LTX files written.
  int run(wal::EventReader& r);

 private:
  void on_frame(const wal::Event& e);
  void on_resync_page(const wal::Event& e);
  void flush_batch();
  void emit(uint32_t commit, bool resync);
  void emit_resync();
  uint32_t alloc_slot();
  void spool_write(uint32_t slot, const uint8_t* page);
  void spool_read(uint32_t slot, uint8_t* page);
  void drop_pending();
  void clear_batch();
  struct Entry {
    uint32_t pgno;
    uint32_t slot;
  };
  struct PageRange {
    const Entry *b, *e;
    const Entry* begin() const { return b; }
    const Entry* end() const { return e; }
    bool empty() const { return b == e; }
  };
  using PageFn = std::function<void(uint32_t pgno, uint32_t slot)>;
  bool adopt(const std::function<void(const PageFn&)>& each, uint32_t commit);
  Writer& out_;
  PageState* state_;
  EncodeOptions opt_;
  int spool_fd_ = -1;
  int ltx_fd_ = -1;  // the LTX file being built, rewritten for each file
  std::string tmpdir_;
  uint32_t page_size_ = 0;
  uint32_t slots_ = 0;
  int64_t last_emit_ms_ = 0;
  uint32_t batch_txns_ = 0, last_batch_txns_ = 0;  // transactions in this / the last file
  // entries_[0..committed_): one per page of the committed transactions
  // (index by page in where_); the rest: one per page of the transaction
  // not yet committed (in pending_).
  std::vector<Entry> entries_;
  size_t committed_ = 0;
  std::unordered_map<uint32_t, uint32_t> where_, pending_;
  std::vector<uint32_t> free_;  // slots of superseded pages
  std::vector<uint8_t> mem_;    // the first mem_slots_ slots
  uint32_t mem_slots_ = 0;
  uint32_t commit_ = 0;         // db size after the last committed txn in the batch
  uint64_t wal_first_ = 0, wal_end_ = 0;
  uint32_t salt1_ = 0, salt2_ = 0;
  int64_t ts_ = 0;
  uint64_t next_txid_ = 0;
  Position stateless_;          // running position when there is no state
  int files_ = 0;
  bool in_resync_ = false;
  bool resync_pending_ = false;
  uint32_t cursor_salt1_ = 0, cursor_salt2_ = 0;  // WAL position after a resync
  uint64_t cursor_offset_ = 0;
  uint32_t resync_commit_ = 0;
  std::unique_ptr<Changes> resync_pages_;  // (pgno, spool slot) of a resync, in page order
};

}  // namespace ltx
