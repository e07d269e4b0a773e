// PageState: the ring of journal records survives a torn write and lost page writes.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/types.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include <memory>

#include "ltx/error.h"
#include "ltx/state.h"

namespace {

using V = std::vector<std::pair<uint32_t, uint64_t>>;

struct TmpDir {
  std::string path;
  TmpDir() {
    char t[] = "/tmp/state-test-XXXXXX";
    path = mkdtemp(t);
  }
  ~TmpDir() { std::system(("rm -rf '" + path + "'").c_str()); }
};

ltx::Position pos(uint64_t txid) {
  ltx::Position p;
  p.txid = txid;
  p.checksum = 0x8000000000000000ull | txid;
  p.page_size = 4096;
  // No page within Commit: these records' values are not page checksums,
  // and the pages within Commit must hold real ones (see the tests below).
  p.commit = 0;
  return p;
}

}  // namespace

TEST(PageState, ReopenGivesTheLastCommit) {
  TmpDir d;
  {
    ltx::PageState st(d.path);
    EXPECT_FALSE(st.initialized());
    st.commit(pos(1), V{{1, 11}, {2, 12}, {3, 13}});
    st.commit(pos(2), V{{2, 22}});
    st.commit(pos(3), V{{3, 33}, {2, 0}});
  }
  ltx::PageState st(d.path);
  EXPECT_EQ(st.position().txid, 3u);
  EXPECT_EQ(st.position().checksum, pos(3).checksum);
  EXPECT_EQ(st.get(1), 11u);
  EXPECT_EQ(st.get(2), 0u);
  EXPECT_EQ(st.get(3), 33u);
}

// A crash while the next record is written leaves a torn record in the
// older slot (and no page written for it): the other slot is the state.
TEST(PageState, TornRecordFallsBackToThePreviousCommit) {
  TmpDir d;
  {
    ltx::PageState st(d.path);
    st.commit(pos(1), V{{1, 11}, {2, 12}});
    st.commit(pos(2), V{{2, 22}});
  }
  // Commit 3 would go to journal.3 (sequence 3): half of a record there.
  std::string slot = d.path + "/journal.3";
  int fd = ::open(slot.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pwrite(fd, "LTXJ\0\0\0\0\0\0\0\3garbage", 19, 0), 19);
  ::close(fd);
  {
    ltx::PageState st(d.path);
    EXPECT_EQ(st.position().txid, 2u);
    EXPECT_EQ(st.get(2), 22u);
    st.commit(pos(3), V{{1, 31}});
  }
  ltx::PageState st(d.path);
  EXPECT_EQ(st.position().txid, 3u);
  EXPECT_EQ(st.get(1), 31u);
  EXPECT_EQ(st.get(2), 22u);
}

// Pages written after a record but lost (not synced) are redone from it.
TEST(PageState, PagesAreRedoneFromTheNewestRecord) {
  TmpDir d;
  {
    ltx::PageState st(d.path);
    st.commit(pos(1), V{{1, 11}, {2, 12}});
    st.commit(pos(2), V{{2, 22}});
  }
  ASSERT_EQ(::truncate((d.path + "/pages").c_str(), 8), 0);  // page 2 lost
  ltx::PageState st(d.path);
  EXPECT_EQ(st.position().txid, 2u);
  EXPECT_EQ(st.get(2), 22u);
}

namespace {
void zero_page(const std::string& dir, uint32_t pgno) {
  int fd = ::open((dir + "/pages").c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pwrite(fd, "\0\0\0\0\0\0\0\0", 8, off_t(pgno - 1) * 8), 8);
  ::close(fd);
}
}  // namespace

// The pages file is synced only before a slot is reused: the page writes of
// up to eight commits may be lost, and all of them are redone, in order.
TEST(PageState, PagesOfEveryUnsyncedRecordAreRedone) {
  TmpDir d;
  {
    ltx::PageState st(d.path);
    for (uint64_t k = 1; k <= 12; k++) st.commit(pos(k), V{{1, 100 + k}, {uint32_t(k + 1), 1000 + k}});
  }
  // Commit 9 synced the pages of 1..8; lose what 9..12 wrote.
  for (uint32_t pg : {1u, 10u, 11u, 12u, 13u}) zero_page(d.path, pg);
  ltx::PageState st(d.path);
  EXPECT_EQ(st.position().txid, 12u);
  EXPECT_EQ(st.get(1), 112u);  // the newest of the records that set it
  for (uint64_t k = 1; k <= 12; k++) EXPECT_EQ(st.get(uint32_t(k + 1)), 1000 + k) << "page " << k + 1;
}

// Only the consecutive run ending at the newest record is replayed: an older
// intact record before a gap is durable, and replaying it would undo a newer
// durable value.
TEST(PageState, RecordsBeforeAGapAreNotReplayed) {
  TmpDir d;
  {
    ltx::PageState st(d.path);
    for (uint64_t k = 1; k <= 10; k++) st.commit(pos(k), V{{k <= 6 ? 5u : 6u, 10 * k}});
  }
  // Slots now hold 3..10, page 5 is 60 (record 6) and page 6 is 100. Break
  // record 6: the run is 7..10, and replaying 3..5 would set page 5 to 50.
  int fd = ::open((d.path + "/journal.6").c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pwrite(fd, "XXXX", 4, 0), 4);
  ::close(fd);
  zero_page(d.path, 6);
  {
    ltx::PageState st(d.path);
    EXPECT_EQ(st.position().txid, 10u);
    EXPECT_EQ(st.get(5), 60u);
    EXPECT_EQ(st.get(6), 100u);
    for (uint64_t k = 11; k <= 30; k++) st.commit(pos(k), V{{5, 10 * k}});
  }
  ltx::PageState st(d.path);
  EXPECT_EQ(st.position().txid, 30u);
  EXPECT_EQ(st.get(5), 300u);
  EXPECT_EQ(st.get(6), 100u);
}

// A real position over real page checksums: the fold of pages 1..Commit.
namespace {
ltx::Position folded(uint64_t txid, const V& pages, uint32_t commit) {
  ltx::Position p;
  p.txid = txid;
  p.page_size = 4096;
  p.commit = commit;
  p.checksum = 0x8000000000000000ull;
  for (const auto& e : pages) p.checksum = 0x8000000000000000ull | (p.checksum ^ e.second);
  return p;
}
constexpr uint64_t F = 0x8000000000000000ull;
}  // namespace

TEST(PageState, CheckFindsTruncatedAndChangedPages) {
  TmpDir d;
  const V pages{{1, F | 11}, {2, F | 12}, {3, F | 13}};
  {
    ltx::PageState st(d.path);
    st.commit(folded(1, pages, 3), pages);
    EXPECT_EQ(st.check(), "");
  }
  {
    ltx::PageState st(d.path);
    EXPECT_EQ(st.check(), "");
  }
  // Truncated under a running process: the next use of a page says so.
  ltx::PageState st(d.path);
  ASSERT_EQ(::truncate((d.path + "/pages").c_str(), 8), 0);
  EXPECT_EQ(st.get(1), F | 11);
  try {
    st.get(2);
    FAIL() << "no throw";
  } catch (const ltx::Error& e) {
    EXPECT_EQ(e.kind(), ltx::Kind::Integrity);
    EXPECT_EQ(std::string(e.what()), "state " + d.path + ": damaged: page 2 of 3 has no checksum in " + d.path + "/pages");
  }
  EXPECT_EQ(st.check(), "page 2 of 3 has no checksum in " + d.path + "/pages");
  // A changed value: the fold no longer matches.
  int fd = ::open((d.path + "/pages").c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  uint8_t b[16] = {0x80, 0, 0, 0, 0, 0, 0, 12, 0x80, 0, 0, 0, 0, 0, 0, 14};
  ASSERT_EQ(::pwrite(fd, b, 16, 8), 16);
  ::close(fd);
  EXPECT_NE(st.check().find("fold to 8000000000000009, not to the checksum 800000000000000a of TXID"), std::string::npos)
      << st.check();
  // Reset: a fresh state that checks out and takes a new first record.
  st.reset();
  EXPECT_FALSE(st.initialized());
  EXPECT_EQ(st.check(), "");
  st.commit(folded(7, pages, 3), pages);
  ltx::PageState again(d.path);
  EXPECT_EQ(again.position().txid, 7u);
  EXPECT_EQ(again.check(), "");
}

TEST(StateLock, OneHolderAtATime) {
  TmpDir d;
  const std::string path = d.path + "/lock";
  auto a = std::make_unique<ltx::StateLock>(path);
  try {
    ltx::StateLock b(path);
    FAIL() << "second lock taken";
  } catch (const ltx::Error& e) {
    EXPECT_EQ(e.kind(), ltx::Kind::Runtime);
    EXPECT_EQ(std::string(e.what()), path + ": in use by pid " + std::to_string(::getpid()) +
                                         " (one walsync watch, wal-tail --ack or ltx-encode --state at a time)");
  }
  // Removed under the holder: renew takes a new one, which still excludes.
  ASSERT_EQ(::unlink(path.c_str()), 0);
  a->renew();
  EXPECT_THROW(ltx::StateLock c(path), ltx::Error);
  a.reset();
  ltx::StateLock c(path);  // released with its holder
}
