// merge.h - k-way streaming merge of contiguous LTX files (compaction).
//
// All inputs are decoded at once, one page buffer each, and the newest
// version of every page number is written in ascending order, so memory
// does not grow with the database (FORMAT.md 9, the reference's Compactor).
//
// Rules, stricter than the reference where noted:
//   - every input has the same page size;
//   - TXIDs are contiguous: min == previous max + 1 (the reference's
//     IsContiguous overlap, min <= prev.max + 1 && max > prev.max, only with
//     MergeOptions::allow_overlap);
//   - for checksummed neighbours without overlap, each input's PreApply
//     equals the previous input's PostApply;
//   - every input is fully verified (Decoder::finish: page index, file
//     checksum, snapshot fold) and has no bytes after its trailer.
//
// Output header: first input's MinTXID and PreApply, last input's Commit,
// MaxTXID and Timestamp, WAL fields (unless keep_wal) and NodeID zero; NoChecksum if any input
// has it (then Pre and Post are 0); Post = last input's Post.
//
// Shrinks are honoured: a page version from input i survives only if no
// later input's Commit is below it. Pages that must be present (all of
// 1..Commit in a snapshot; in a delta, the pages above the smallest Commit
// seen) but exist in no surviving version are zero pages - database growth
// without writes, the convention apply.cpp uses. A checksummed snapshot's
// fold is checked against Post by the Encoder, so a wrong merge fails.
//
// Output streams out before the inputs' trailers are read: when merge()
// throws, whatever reached the writer must be discarded (write through an
// AtomicFile and commit only on success).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "ltx/io.h"
#include "ltx/ltx.h"

namespace ltx {

struct MergeInput {
  Reader* reader;    // positioned at the header; read to the end
  std::string name;  // context for errors ("a.ltx: decode page frame 3: ...")
};

struct MergeOptions {
  bool allow_overlap = false;        // accept the reference's IsContiguous overlap
  std::string spool_dir = "/tmp";    // Encoder page-index spool
  // Bounds, checked before a page is written: an output Commit that makes a
  // database larger than max_size bytes is refused (Integrity; 0: no
  // limit), and so (Runtime) is a merge whose zero pages (at most one per
  // page number from the first that must be present to Commit) may not fit
  // in the free space of room_fd's file system (-1: the output is not a
  // file, only max_size bounds it).
  uint64_t max_size = 0;
  int room_fd = -1;
  // Keep the WAL fields (level-0 merges of a pipeline's files, whose
  // acknowledgement is the WAL cursor past the last file): the last input's
  // salts, and the WAL span from the first input of the trailing run of
  // that generation whose frames follow one another to the last input's end.
  bool keep_wal = false;
};

struct MergeResult {
  Header header;
  Trailer trailer;
  uint32_t pages = 0;       // page frames written
  uint32_t zero_pages = 0;  // of which zero pages filled in
};

// Merges inputs (oldest first, at least one) into one LTX file on w.
// Throws Error: Integrity for defective, mismatched or non-contiguous inputs.
MergeResult merge(const std::vector<MergeInput>& inputs, Writer& w,
                  const MergeOptions& opt = MergeOptions());

}  // namespace ltx
