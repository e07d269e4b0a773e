// pipeline.h - the acknowledged-position protocol of the backup pipeline
// (wal-tail | ltx-encode --ack | s3-put --ack), as functions that the tools
// and walsync's in-process pipelines share.
//
//   upload_stream    s3-put's loop: read LTX files from a stream, verify each
//                    completely, merge those of one sync interval, check the
//                    object against the remote chain, store it, then record
//                    the acknowledged position (of its last file).
//   sync_ack         bring an acknowledgement up to the remote's latest
//                    level-0 file (an upload that finished just before a crash
//                    was never acknowledged).
//   resume_from_ack  (ltx/state.h) roll an encoder's page state back to the acknowledged
//                    TXID (files emitted but never stored are redone).
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include "ltx/io.h"
#include "ltx/ltx.h"
#include "ltx/state.h"
#include "ltx/store.h"

namespace ltx {

// One object upload_stream stored (or found already stored).
struct UploadedObject {
  bool stored = false;   // false: already on the remote, skipped
  std::string key;
  Header header;         // the object's header and trailer
  Trailer trailer;
  uint64_t bytes = 0;        // object size
  uint64_t input_bytes = 0;  // stream bytes it stands for (its LTX files)
  int files = 0;             // LTX files of the stream merged into it
};

struct UploadOptions {
  int level = 0;                // replica level 0-9 (9: snapshots only)
  std::string ack;              // level 0: position file written after each stored object
  std::string tmpdir = "/tmp";  // where bytes beyond spool_mem are spooled
  size_t spool_mem = 256u << 10;  // bytes of pending LTX files kept in memory before spooling
  size_t read_buf = 64 * 1024;  // input buffer
  bool allow_empty = false;     // an empty stream is not an error
  // Level 0: at most one object per sync interval. A file that arrives when
  // the interval since the last stored object has passed is stored at once;
  // files arriving sooner wait for the interval's end (the input is polled,
  // Reader::wait) and are merged (ltx/merge.h) into one object with their
  // TXID range. 0: one object per file.
  int64_t sync_interval_ms = 0;
  // Level 0: the remote's latest file, when it is known without asking
  // (ChainGuard::assume_latest: txid and post-apply checksum); txid 0:
  // unknown, the first file lists the replica to check the chain.
  Position remote_latest;
  // After each object. May be empty.
  std::function<void(const UploadedObject&)> on_file;
};

// Consumes the LTX stream `in`; returns the number of files read. Throws
// Integrity for a bad file or a chain conflict (nothing of that file
// stored; the files before a bad one are stored first).
int upload_stream(Reader& in, Store& store, const Location& loc, const UploadOptions& o);

// The acknowledged position of a stored file: its MaxTXID, post-apply
// checksum and the WAL cursor just past its frames.
Position ack_position(const Header& h, const Trailer& t);

// Updates the acknowledgement file `ack` to the remote's latest level-0
// file when that is ahead of it. Returns true if the file was written
// (*txid, if given, receives the new TXID).
bool sync_ack(Store& store, const Location& loc, const std::string& ack, uint64_t* txid = nullptr);


}  // namespace ltx
