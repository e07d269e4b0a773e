// pipeline.h - the acknowledged-position protocol of the backup pipeline
// (wal-tail | ltx-encode --ack | s3-put --ack), as functions that the tools
// and walsync's in-process pipelines share.
//
//   upload_stream    s3-put's loop: read LTX files from a stream, verify each
//                    completely, check it against the remote chain, store it,
//                    then record the acknowledged position.
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

struct UploadOptions {
  int level = 0;                // replica level 0-9 (9: snapshots only)
  std::string ack;              // level 0: position file written after each stored file
  std::string tmpdir = "/tmp";  // where a file larger than spool_mem is spooled
  size_t spool_mem = 256u << 10;  // bytes of one LTX file kept in memory before spooling
  size_t read_buf = 64 * 1024;  // input buffer
  bool allow_empty = false;     // an empty stream is not an error
  // After each file: stored (false: already on the remote, skipped), its
  // key, header, trailer and size in bytes. May be empty.
  std::function<void(bool stored, const std::string& key, const Header&, const Trailer&,
                     uint64_t bytes)>
      on_file;
};

// Consumes the LTX stream `in`; returns the number of files read. Throws
// Integrity for a bad file or a chain conflict (nothing of that file stored).
int upload_stream(Reader& in, Store& store, const Location& loc, const UploadOptions& o);

// The acknowledged position of a stored file: its MaxTXID, post-apply
// checksum and the WAL cursor just past its frames.
Position ack_position(const Header& h, const Trailer& t);

// Updates the acknowledgement file `ack` to the remote's latest level-0
// file when that is ahead of it. Returns true if the file was written
// (*txid, if given, receives the new TXID).
bool sync_ack(Store& store, const Location& loc, const std::string& ack, uint64_t* txid = nullptr);


}  // namespace ltx
