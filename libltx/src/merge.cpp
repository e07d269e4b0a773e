// k-way streaming merge of LTX files (ltx/merge.h).
#include "ltx/merge.h"

#include <lz4.h>

#include <algorithm>
#include <limits>
#include <memory>

#include "ltx/bytes.h"
#include "ltx/checksum.h"
#include "ltx/error.h"

namespace ltx {

namespace {

constexpr uint64_t kDone = std::numeric_limits<uint64_t>::max();

std::string range(const Header& h) { return "(" + hex16(h.min_txid) + "," + hex16(h.max_txid) + ")"; }

struct Input {
  std::string name;
  std::unique_ptr<Decoder> dec;
  std::vector<uint8_t> page;
  uint64_t pgno = kDone;  // page in `page`, or kDone once finished
  uint32_t limit = 0;     // smallest Commit of this and every later input
  Reader* reader = nullptr;

  // Reads the next page; at the end marker verifies the index and trailer.
  void advance() {
    with_context(name, [&] {
      uint32_t p;
      if (dec->next_page(&p, page.data())) {
        pgno = p;
        return;
      }
      pgno = kDone;
      dec->finish();
      uint8_t extra;
      if (read_full(*reader, &extra, 1) != 0) fail_integrity("bytes after the trailer");
    });
  }
};

}  // namespace

MergeResult merge(const std::vector<MergeInput>& inputs, Writer& w, const MergeOptions& opt) {
  if (inputs.empty()) fail(Kind::Usage, "merge: no input files");
  std::vector<Input> in(inputs.size());
  for (size_t i = 0; i < inputs.size(); i++) {
    Input& x = in[i];
    x.name = inputs[i].name;
    x.reader = inputs[i].reader;
    x.dec = std::make_unique<Decoder>(*x.reader);
    with_context(x.name, [&] {
      if (!x.dec->read_header()) fail_integrity("decode header: empty input");
    });
  }

  // Check the chain before writing a byte.
  const Header& first = in.front().dec->header();
  const Header& last = in.back().dec->header();
  bool no_checksum = false;
  uint32_t min_commit = last.commit;
  for (size_t i = 0; i < in.size(); i++) {
    const Header& h = in[i].dec->header();
    no_checksum |= h.no_checksum();
    min_commit = std::min(min_commit, h.commit);
    if (i == 0) continue;
    const Header& p = in[i - 1].dec->header();
    if (h.page_size != first.page_size)
      fail_integrity(in[i].name + ": input files have mismatched page sizes: " +
                     std::to_string(first.page_size) + " != " + std::to_string(h.page_size));
    bool exact = h.min_txid == p.max_txid + 1;
    bool overlap = h.min_txid <= p.max_txid + 1 && h.max_txid > p.max_txid;
    if (!exact && !(opt.allow_overlap && overlap))
      fail_integrity(in[i].name + ": non-contiguous transaction ids in input files: " + range(p) +
                     " -> " + range(h) +
                     (overlap ? " (overlapping: allowed only with overlap enabled)" : ""));
  }
  uint32_t lim = std::numeric_limits<uint32_t>::max();
  for (size_t i = in.size(); i-- > 0;) {
    lim = std::min(lim, in[i].dec->header().commit);
    in[i].limit = lim;
  }

  Header out;
  out.flags = no_checksum ? kFlagNoChecksum : 0;
  out.page_size = first.page_size;
  out.commit = last.commit;
  out.min_txid = first.min_txid;
  out.max_txid = last.max_txid;
  out.timestamp = last.timestamp;
  out.pre_apply = no_checksum ? 0 : first.pre_apply;
  if (opt.keep_wal && last.wal_offset > 0) {
    size_t b = in.size() - 1;
    while (b > 0) {
      const Header& p = in[b - 1].dec->header();
      const Header& h = in[b].dec->header();
      if (p.wal_salt1 != last.wal_salt1 || p.wal_salt2 != last.wal_salt2 || p.wal_offset <= 0 ||
          p.wal_offset + p.wal_size != h.wal_offset)
        break;
      b--;
    }
    out.wal_salt1 = last.wal_salt1;
    out.wal_salt2 = last.wal_salt2;
    out.wal_offset = in[b].dec->header().wal_offset;
    out.wal_size = last.wal_offset + last.wal_size - out.wal_offset;
  }

  const uint32_t ps = out.page_size;
  const uint32_t lock = lock_pgno(ps);
  // Page numbers from here up to Commit must be written even if no input
  // holds a surviving version: all of them in a snapshot, and in a delta
  // those some input truncated (the database reads them as zeros).
  const uint64_t must_from = out.snapshot() ? 1 : uint64_t(min_commit) + 1;
  std::vector<uint8_t> zero(ps, 0);

  // A tiny input can claim 2^32-2 pages: bound the zero pages before any.
  check_max_size(out, opt.max_size);
  if (opt.room_fd >= 0 && out.commit >= must_from) {
    uint64_t n = uint64_t(out.commit) - must_from + 1;
    if (lock >= must_from && lock <= out.commit) n--;
    std::vector<char> z(static_cast<size_t>(LZ4_compressBound(int(ps))));
    const int zn = LZ4_compress_default(reinterpret_cast<const char*>(zero.data()), z.data(), int(ps), int(z.size()));
    const uint64_t per_page = kPageHeaderSize + 4 + uint64_t(zn > 0 ? zn : ps) + 15;  // frame + index entry
    check_room(free_bytes(opt.room_fd), n * per_page,
               "up to " + std::to_string(n) + " zero pages to commit " + std::to_string(out.commit));
  }

  Encoder enc(w, out, opt.spool_dir);
  MergeResult res;
  auto emit = [&](uint64_t pgno, const uint8_t* data) {
    with_context("encode page " + std::to_string(pgno), [&] { enc.page(uint32_t(pgno), data); });
    res.pages++;
    if (data == zero.data()) res.zero_pages++;
  };

  for (auto& x : in) {
    x.page.resize(ps);
    x.advance();
  }
  uint64_t fill = must_from;  // next page number that must be written if absent
  for (;;) {
    uint64_t m = kDone;
    for (auto& x : in) m = std::min(m, x.pgno);
    uint64_t upto = std::min<uint64_t>(m == kDone ? out.commit : m - 1, out.commit);
    for (; fill <= upto; fill++)
      if (fill != lock) emit(fill, zero.data());
    if (m == kDone) break;
    if (m <= out.commit) {
      const uint8_t* data = nullptr;
      for (size_t i = in.size(); i-- > 0;)
        if (in[i].pgno == m && m <= in[i].limit) {
          data = in[i].page.data();
          break;
        }
      // No surviving version: m is above some input's Commit, so m >= must_from.
      if (!data) data = zero.data();
      emit(m, data);
    }
    fill = std::max(fill, m + 1);
    for (auto& x : in)
      if (x.pgno == m) x.advance();
  }

  // Every input is verified now; check the checksum chain between them.
  for (size_t i = 1; i < in.size(); i++) {
    const Header& p = in[i - 1].dec->header();
    const Header& h = in[i].dec->header();
    if (h.min_txid != p.max_txid + 1 || h.snapshot() || p.no_checksum() || h.no_checksum()) continue;
    uint64_t post = in[i - 1].dec->trailer().post_apply;
    if (h.pre_apply != post)
      fail_integrity(in[i].name + ": pre-apply checksum " + hex16(h.pre_apply) +
                     " does not match the previous file's post-apply checksum " + hex16(post));
  }
  uint64_t post = no_checksum ? 0 : in.back().dec->trailer().post_apply;
  res.trailer = with_context("encode trailer", [&] { return enc.finish(post); });
  res.header = out;
  return res;
}

}  // namespace ltx
