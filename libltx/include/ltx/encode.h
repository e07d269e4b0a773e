// encode.h - turn databases and WAL transactions into LTX files.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
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
  // per_txn: when this says more input is ready within wait_ms (0: right
  // now), a committed transaction waits to share the next LTX file with the
  // ones behind it (group commit under load, one file per transaction when
  // idle), up to max_batch_frames frames in a file.
  std::function<bool(int wait_ms)> input_ready;
  uint32_t max_batch_frames = 16384;
  // Under load (the last file held several transactions), files at most
  // this often: a commit that follows the last file sooner waits out the
  // rest of the interval for company. Each file costs two syncs of the
  // state; a lone transaction after a quiet spell goes out at once.
  int min_interval_ms = 5;
};

// Groups the committed transactions of a WAL or WAL stream into LTX files.
// Pages are spooled to an unlinked temp file, so memory is ~8 bytes a frame
// of a batch (at most max_batch_frames); a resync's pages, already in page
// order, are listed in a Changes spill, so any database size costs flat
// memory.
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
  void adopt(const std::function<void(const PageFn&)>& each, uint32_t commit);
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
  std::vector<Entry> entries_;
  size_t committed_ = 0;        // entries_[0..committed_) belong to committed txns
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
