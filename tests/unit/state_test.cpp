// PageState: the two alternating journal records survive a torn write.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

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
  p.commit = 3;
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
  // Commit 3 would go to journal.1 (sequence 3): half of a record there.
  std::string slot = d.path + "/journal.1";
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
