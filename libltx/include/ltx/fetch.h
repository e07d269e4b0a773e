// fetch.h - downloads a list of objects over several connections at once
// and hands their bytes on in order: the restore plan of s3-get, whose
// reader (ltx-apply) consumes one stream while the next parts arrive.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "ltx/io.h"
#include "ltx/store.h"

namespace ltx {

constexpr int kMaxParallel = 64;
constexpr uint64_t kFetchPartSize = 4u << 20;

struct FetchOptions {
  int parallel = 8;                     // concurrent GETs, 1..kMaxParallel
  uint64_t part_size = kFetchPartSize;  // bytes per ranged GET
  // false: one GET per whole object; a part above part_size is then
  // spooled to an unlinked file in tmpdir instead of memory. (A sealed
  // store reads ranges of its payload: give objects their payload size.)
  bool ranged = true;
  std::string tmpdir = "/tmp";
};

struct FetchObject {
  std::string key;
  uint64_t size = 0;  // listed bytes: ranged GETs split [0, size)
};

// Fetches objs with up to o.parallel GETs at once and writes their bytes to
// out in order, calling begin(i) before object i's first byte and end(i,
// bytes) after its last (in the calling thread). Each worker thread has its
// own Store from open() (one connection each); open() is called in the
// calling thread. Objects above part_size are fetched as ranged GETs of
// part_size (the last one open-ended, so an object longer than listed is
// seen: Integrity). Memory: a part is claimed only while fewer than
// parallel+1 parts are fetched or waiting, so at most (parallel+1) x
// part_size bytes are held. A failure is rethrown in order: out receives
// every byte before the first failing part, then the error propagates
// (the other downloads are cancelled and joined first).
void fetch_ordered(const std::vector<FetchObject>& objs, const std::function<std::unique_ptr<Store>()>& open,
                   const FetchOptions& o, Writer& out, const std::function<void(size_t)>& begin,
                   const std::function<void(size_t, uint64_t)>& end);

}  // namespace ltx
