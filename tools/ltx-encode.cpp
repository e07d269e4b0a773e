// ltx-encode - write LTX files from a database snapshot, a plain SQLite -wal
// file, or the WAL stream of wal-tail.
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>

#include "cli.h"
#include "ltx/bytes.h"
#include "ltx/encode.h"
#include "ltx/pipeline.h"

int main(int argc, char** argv) {
  CLI::App app{"Encode a database snapshot, a -wal file or a WAL stream (stdin) as LTX on stdout.",
               "ltx-encode"};
  std::string db, state_dir, txid_hex, ts_text, tmpdir, ack;
  bool per_txn = false, merge = false, verbose = false;
  app.add_option("--db", db, "encode this database file as a snapshot");
  app.add_option("-s,--state", state_dir, "page state directory: keeps TXIDs and the rolling database checksum");
  app.add_option("--txid", txid_hex, "TXID (hex) of the first file when there is no state; with --db the snapshot's MaxTXID");
  app.add_option("--timestamp", ts_text, "RFC 3339 time to stamp on every file (default: commit time)");
  app.add_option("--ack", ack, "acknowledgement file (written by s3-put --ack): on start, roll the state back to it")
      ->needs("--state");
  app.add_option("--tmpdir", tmpdir, "directory for the page spool (default: state directory, $TMPDIR or /tmp)");
  app.add_flag("--per-txn", per_txn, "one LTX file per transaction (default for WAL streams)");
  app.add_flag("--merge", merge, "one LTX file for all input (default for plain -wal files)");
  app.add_flag("-v,--verbose", verbose, "report what was written on stderr");
  return cli::run(app, argc, argv, [&]() -> int {
    if (per_txn && merge) {
      cli::error("--per-txn and --merge exclude each other");
      return cli::kUsage;
    }
    if (ltx::is_tty(1)) {
      cli::error("refusing to write LTX to a terminal");
      return cli::kUsage;
    }
    uint64_t txid = 0;
    if (!txid_hex.empty()) {
      std::string h = std::string(16 - std::min<size_t>(16, txid_hex.size()), '0') + txid_hex;
      if (!ltx::parse_hex16(h, &txid) || txid == 0) {
        cli::error("--txid: not a TXID: " + txid_hex);
        return cli::kUsage;
      }
    }
    int64_t ts = 0;
    if (!ts_text.empty() && !ltx::parse_timestamp(ts_text, &ts)) {
      cli::error("--timestamp: not an RFC 3339 time: " + ts_text);
      return cli::kUsage;
    }
    std::unique_ptr<ltx::StateLock> lock;
    std::unique_ptr<ltx::PageState> state;
    if (!state_dir.empty()) {
      lock = ltx::lock_state_dir(state_dir);  // one encoder per state
      state = std::make_unique<ltx::PageState>(state_dir);
      // Checked, never trusted: a file built on wrong page checksums would
      // carry a post-apply checksum no restore can reach.
      std::string damage = state->check();
      if (!damage.empty())
        ltx::fail_integrity("state " + state_dir + ": damaged: " + damage +
                            " (remove the directory and start it again; walsync watch rebuilds it by itself)");
    }
    // Files emitted but never acknowledged were lost downstream: undo them,
    // so the next file continues exactly what the destination holds.
    ltx::Position adopt;
    if (!ack.empty() && ltx::resume_from_ack(*state, ack, &adopt) && verbose && !adopt.txid)
      std::fprintf(stderr, "ltx-encode: resuming at acknowledged TXID %s\n",
                   ltx::hex16(state->position().txid).c_str());
    tmpdir = cli::tmpdir(!tmpdir.empty() ? tmpdir : state_dir);
    ltx::FdWriter out(1);
    if (!db.empty()) {
      int fd = ::open(db.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) ltx::fail_errno("open " + db);
      if (adopt.txid != 0) {
        // A restored database joins its replica's chain: same checksum as
        // the acknowledged position, and the state starts there. No output.
        struct Null : ltx::Writer {
          void write(const void*, size_t) override {}
        } null;
        struct stat st {};
        uint8_t h[100];
        uint64_t ck = ltx::kChecksumFlag;
        if (::fstat(fd, &st) == 0 && st.st_size >= 100 && ltx::pread_full(fd, h, 100, 0) == 100) {
          uint32_t ps = ltx::get16(h + 16) == 1 ? 65536 : ltx::get16(h + 16);
          if (ltx::valid_page_size(ps)) ck = ltx::db_checksum_fd(fd, ps, uint64_t(st.st_size) / ps);
        }
        if (ck != adopt.checksum)
          ltx::fail_integrity(db + ": checksum " + ltx::hex16(ck) + " is not the replica's " +
                              ltx::hex16(adopt.checksum) + " at TXID " + ltx::hex16(adopt.txid) +
                              ": restore it first, or replicate to another prefix");
        ltx::encode_db_snapshot(fd, db, null, adopt.txid, ltx::now_ms(), state.get(), tmpdir);
        ::close(fd);
        if (verbose)
          std::fprintf(stderr, "ltx-encode: %s joins the replica at TXID %s\n", db.c_str(),
                       ltx::hex16(adopt.txid).c_str());
        return cli::kOk;
      }
      auto r = ltx::encode_db_snapshot(fd, db, out, txid ? txid : 1, ts ? ts : ltx::now_ms(),
                                       state.get(), tmpdir);
      ::close(fd);
      if (verbose)
        std::fprintf(stderr, "ltx-encode: snapshot %s: %u pages, checksum %s\n",
                     ltx::format_filename(1, r.header.max_txid).c_str(), r.header.commit,
                     ltx::hex16(r.trailer.post_apply).c_str());
      return cli::kOk;
    }
    if (ltx::is_tty(0)) {
      cli::error("refusing to read a WAL from a terminal (give --db or pipe a -wal file)");
      return cli::kUsage;
    }
    ltx::FdReader fr(0);
    ltx::BufReader in(fr, 256 << 10);
    const uint8_t* peek;
    if (in.peek(&peek, 1) == 0) ltx::fail_integrity("empty input: expected a -wal file or a WAL stream");
    ltx::wal::EventReader events(in);
    ltx::EncodeOptions opt;
    opt.per_txn = merge ? false : per_txn ? true : events.is_stream();
    opt.first_txid = txid;
    opt.timestamp = ts;
    opt.ack_path = ack;
    // Group commit: while more input is already waiting, transactions share
    // a file; an idle stream still gets one file per transaction at once.
    opt.input_ready = [&in](int wait_ms) {
      if (in.buffered() > 0) return true;
      pollfd p{0, POLLIN, 0};
      return ::poll(&p, 1, wait_ms) > 0 && (p.revents & POLLIN);
    };
    opt.adopt = adopt;
    ltx::TxnEncoder enc(out, state.get(), opt, tmpdir);
    int n = enc.run(events);
    if (verbose) std::fprintf(stderr, "ltx-encode: %d LTX files\n", n);
    return cli::kOk;
  });
}
