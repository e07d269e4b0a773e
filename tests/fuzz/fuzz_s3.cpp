// fuzz_s3.cpp - libFuzzer target for what an S3 server sends back (`make
// fuzz`): ListObjectsV2 and ListMultipartUploads pages, error bodies,
// Content-Range, URL-encoded keys, and the escaping of text for messages.
// Every input must end in a clean ltx::Error or a result within the input's
// bounds: never a crash, a sanitizer report or a hang. Corpus:
// tests/fuzz/corpus-s3/.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "ltx/error.h"
#include "ltx/store.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string in(reinterpret_cast<const char*>(data), size);
  try {
    ltx::ListPage pg = ltx::parse_list_page(in);
    for (auto& o : pg.objects)
      if (o.key.empty() || o.key.size() > 1024) std::abort();
  } catch (const ltx::Error&) {
  }
  try {
    ltx::UploadsPage pg = ltx::parse_uploads_page(in);
    for (auto& u : pg.uploads)
      if (u.key.empty() || u.key.size() > 1024 || u.upload_id.empty()) std::abort();
  } catch (const ltx::Error&) {
  }
  std::string e = ltx::parse_error_body(in);
  if (e.size() > 128 + 3 + 2 + 512 + 3) std::abort();
  uint64_t a = 0, b = 0, t = 0;
  if (ltx::parse_content_range(in, &a, &b, &t) && (b < a || (t != UINT64_MAX && b >= t))) std::abort();
  try {
    if (ltx::url_decode(in).size() > in.size()) std::abort();
  } catch (const ltx::Error&) {
  }
  std::string p = ltx::printable(in);
  for (unsigned char c : p)
    if (c < 0x20 || c == 0x7f) std::abort();
  return 0;
}
