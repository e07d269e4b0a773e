// fuzz_decode.cpp - libFuzzer target for the LTX decoder and the WAL event
// reader (`make fuzz`). Every input must end in a clean ltx::Error or a
// successful decode: never a crash, a sanitizer report, a hang or an
// unbounded allocation. Corpus: tests/fuzz/corpus/.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "ltx/error.h"
#include "ltx/io.h"
#include "ltx/ltx.h"
#include "ltx/wal.h"

namespace {

// The input as a concatenated LTX stream, the way ltx-verify reads stdin.
void decode_ltx(const uint8_t* data, size_t size) {
  ltx::MemReader in(data, size);
  std::vector<uint8_t> page;
  try {
    for (int files = 0; files < 64; files++) {
      ltx::Decoder d(in);
      if (!d.read_header()) return;
      page.assign(d.header().page_size, 0);
      uint32_t pgno = 0;
      while (d.next_page(&pgno, page.data())) {
      }
      d.finish();
    }
  } catch (const ltx::Error&) {
  }
}

// The input as a plain -wal file or a WAL stream, drained to its end.
void decode_wal(const uint8_t* data, size_t size) {
  ltx::MemReader in(data, size);
  try {
    ltx::wal::EventReader events(in);
    (void)events.is_stream();
    volatile uint8_t sink = 0;
    for (;;) {
      ltx::wal::Event e = events.next();
      if (e.type == ltx::wal::Event::End) break;
      if (e.data && e.page_size) sink = sink ^ e.data[0] ^ e.data[e.page_size - 1];
    }
  } catch (const ltx::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  decode_ltx(data, size);
  decode_wal(data, size);
  return 0;
}
