// litestream3.h - read a Litestream v0.3 replica and convert it to LTX.
//
// Layout (Litestream v0.3.x, file and S3 alike, under the replica path):
//   generations/<gen 16 hex>/snapshots/<index %08x>.snapshot.lz4
//       the database file, one LZ4 frame
//   generations/<gen>/wal/<index %08x>_<offset %08x>.wal.lz4
//       bytes [offset, offset+n) of WAL file <index>, one LZ4 frame each;
//       offset 0 starts with the WAL header
// A restore takes one generation, its newest snapshot at or before the
// target WAL index, then WAL indexes from the snapshot's index up to the
// target, each one SQLite WAL whose committed frames are applied in order
// (frames the snapshot already holds are full pages: applying them again
// changes nothing).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "ltx/io.h"
#include "ltx/store.h"

namespace ltx {

struct Ls3Segment {
  uint32_t index = 0;
  uint64_t offset = 0;
  ObjectInfo obj;
};

struct Ls3Plan {
  std::string generation;
  uint32_t snapshot_index = 0;
  ObjectInfo snapshot;
  std::vector<Ls3Segment> wal;  // by (index, offset), indexes snapshot..target
  uint32_t target_index = 0;
};

struct Ls3Target {
  std::string generation;   // empty: the generation updated last
  bool has_index = false;
  uint32_t index = 0;       // last WAL index to apply
  bool has_time = false;
  int64_t time_ms = 0;      // newest snapshot and segments at or before (by object time)
};

// One LIST of <path>/generations/. Throws Integrity when there is nothing to
// restore (no generation, no snapshot at or before the target).
Ls3Plan plan_ls3(Store& s, const std::string& path, const Ls3Target& t);

// Streams the plan as LTX: a snapshot (TXID 1, the snapshot's database)
// then one file per WAL index with committed frames (TXIDs 2, 3, ...),
// with the rolling database checksum. Decompression is streamed; the
// snapshot and each WAL pass through unlinked temp files under tmpdir, the
// page state lives in a temp directory there. Returns the LTX file count.
int stream_ls3(Store& s, const Ls3Plan& p, Writer& out, const std::string& tmpdir,
               const std::function<void(const std::string&)>& log = {});

}  // namespace ltx
