// Unit tests for vfs.h: a replica read in place, page by page, on a
// file:// replica in a temp directory: every page at every TXID, planning
// again when compaction and retention take a file away, polling, damage.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <map>

#include "ltx/error.h"
#include "ltx/ltx.h"
#include "ltx/replica.h"
#include "ltx/vfs.h"

namespace {

constexpr uint32_t kPs = 512;

// A database as pages, and the LTX files that build it.
struct Db {
  std::map<uint32_t, std::vector<uint8_t>> pages;
  uint32_t commit = 0;
  uint64_t checksum() const {
    uint64_t c = ltx::kChecksumFlag;
    for (auto& kv : pages)
      if (kv.first <= commit) c = ltx::fold(c, ltx::page_checksum(kv.first, kv.second.data(), kPs));
    return c;
  }
  static std::vector<uint8_t> page(uint32_t pgno, uint64_t txid) {
    std::vector<uint8_t> p(kPs);
    for (uint32_t i = 0; i < kPs; i++) p[i] = uint8_t(pgno * 31 + txid * 7 + i / 3);
    return p;
  }
};

class ReplicaView : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/vfs-test-XXXXXX";
    ASSERT_TRUE(::mkdtemp(tmpl));
    dir = tmpl;
    loc = ltx::parse_url("file://" + dir + "/app");
    store = ltx::open_file_store();
    rep = std::make_unique<ltx::Replica>(*store, loc);
  }
  void TearDown() override { ASSERT_EQ(std::system(("rm -rf " + dir).c_str()), 0); }

  // Stores an LTX file at level: TXIDs [min, max], pages of db (all of them
  // for a snapshot, else those named), pre-apply the checksum before.
  void put(int level, uint64_t min, uint64_t max, const Db& db, const std::vector<uint32_t>& pgnos, uint64_t pre) {
    ltx::StringWriter w;
    ltx::Header h;
    h.page_size = kPs;
    h.commit = db.commit;
    h.min_txid = min;
    h.max_txid = max;
    h.timestamp = int64_t(1000 * max);
    h.pre_apply = min == 1 ? 0 : pre;
    ltx::Encoder e(w, h);
    for (uint32_t p : pgnos) e.page(p, db.pages.at(p).data());
    e.finish(db.checksum());
    ltx::MemReader r(w.s.data(), w.s.size());
    store->put(rep->key(level, min, max), r);
  }

  // TXID 1: a snapshot of 10 pages; 2: pages 3 and 5; 3: pages 5, 9 and
  // growth to 12 (11 and 12 written). states[txid] is the database.
  void build() {
    Db db;
    db.commit = 10;
    std::vector<uint32_t> all;
    for (uint32_t p = 1; p <= 10; p++) db.pages[p] = Db::page(p, 1), all.push_back(p);
    put(0, 1, 1, db, all, 0);
    states[1] = db;
    uint64_t c1 = db.checksum();
    for (uint32_t p : {3u, 5u}) db.pages[p] = Db::page(p, 2);
    put(0, 2, 2, db, {3, 5}, c1);
    states[2] = db;
    uint64_t c2 = db.checksum();
    db.commit = 12;
    for (uint32_t p : {5u, 9u, 11u, 12u}) db.pages[p] = Db::page(p, 3);
    put(0, 3, 3, db, {5, 9, 11, 12}, c2);
    states[3] = db;
  }

  // Every page of the view equals the database at its TXID.
  void expect_state(ltx::ReplicaView& v, uint64_t txid) {
    const Db& db = states.at(txid);
    ASSERT_EQ(v.txid(), txid);
    ASSERT_EQ(v.commit(), db.commit);
    std::vector<uint8_t> got(kPs);
    for (uint32_t p = 1; p <= db.commit; p++) {
      v.read_page(p, got.data());
      EXPECT_EQ(got, db.pages.at(p)) << "txid " << txid << " page " << p;
    }
  }

  std::string dir;
  ltx::Location loc;
  std::unique_ptr<ltx::Store> store;
  std::unique_ptr<ltx::Replica> rep;
  std::map<uint64_t, Db> states;
};

TEST_F(ReplicaView, EveryPageAtEveryTxidReadInRangesOrWhole) {
  build();
  for (size_t whole : {size_t(0), size_t(1) << 20})
    for (uint64_t txid : {1, 2, 3}) {
      ltx::ViewOptions o;
      o.verify = ltx::ViewOptions::Verify::Structure;
      o.whole_max = whole;
      o.head_bytes = 600;  // the header and a frame or so: the rest by ranged reads
      o.target.has_txid = true;
      o.target.txid = txid;
      ltx::ReplicaView v(ltx::open_file_store(), loc, o);
      v.open();
      expect_state(v, txid);
      for (auto& i : v.plan()) {
        EXPECT_EQ(i->verified, whole != 0);
        EXPECT_EQ(i->hashes.size(), whole ? i->pgnos.size() : 0);
        EXPECT_LE(i->memory(), sizeof(ltx::PageIndex) + (whole ? 16 : 8) * i->pgnos.size()) << i->file.key;
      }
    }
}

// The default: every planned file streamed once (one GET each) and
// verified, each frame's hash kept; 16 bytes of index a page.
TEST_F(ReplicaView, TheDefaultStreamsEachFileOnceAndKeepsAHashPerFrame) {
  build();
  ltx::ViewOptions o;
  o.whole_max = 0;
  o.cache_bytes = 0;
  ltx::ReplicaView v(ltx::open_file_store(), loc, o);
  v.open();
  EXPECT_EQ(v.requests().gets, 3u);  // the three files, one GET each
  for (auto& i : v.plan()) {
    EXPECT_TRUE(i->verified);
    EXPECT_EQ(i->hashes.size(), i->pgnos.size());
    EXPECT_LE(i->memory(), sizeof(ltx::PageIndex) + 16 * i->pgnos.size()) << i->file.key;
  }
  expect_state(v, 3);
  EXPECT_EQ(v.requests().gets, 3u + 12u);  // no cache, no read-ahead: a ranged GET a page
}

// The streamed pass fills the page cache: with room for the database,
// every page after opening comes from memory.
TEST_F(ReplicaView, TheStreamedPassFillsTheCache) {
  build();
  ltx::ViewOptions o;
  o.whole_max = 0;
  ltx::ReplicaView v(ltx::open_file_store(), loc, o);
  v.open();
  expect_state(v, 3);
  EXPECT_EQ(v.requests().gets, 3u);
  EXPECT_EQ(v.cache().misses, 0u);
}

// Frame offsets past 4 GiB: the low 32 bits per frame and the positions
// where the high bits step up give every offset and frame size back.
TEST(PageIndex, OffsetsPast4GiB) {
  ltx::PageIndex idx;
  std::vector<uint64_t> offs;
  uint64_t at = 100;
  for (uint32_t p = 1; p <= 2000; p++) {
    offs.push_back(at);
    idx.add(p, at);
    at += p % 7 == 0 ? (uint64_t(3) << 30) : 4000 + p;  // some frames "jump" (for the test) across 4 GiB lines
  }
  idx.frames_end = at;
  ASSERT_GT(at, uint64_t(1) << 39);  // some 200 lines of 4 GiB crossed
  for (size_t i = 0; i < offs.size(); i++) {
    ASSERT_EQ(idx.offset(i), offs[i]) << i;
    ASSERT_EQ(idx.frame_bytes(i), uint32_t((i + 1 < offs.size() ? offs[i + 1] : at) - offs[i])) << i;
  }
}

// The plan's level-0 files are compacted into one level-1 file and deleted
// while the view reads TXID 3: it plans TXID 3 again from what is there.
TEST_F(ReplicaView, AFileGoneUnderCompactionIsReplacedByTheSameTxid) {
  build();
  ltx::ViewOptions o;
  o.cache_bytes = 0;  // every read goes to the store
  o.whole_max = 0;
  ltx::ReplicaView v(ltx::open_file_store(), loc, o);
  v.open();
  expect_state(v, 3);
  put(1, 2, 3, states[3], {3, 5, 9, 11, 12}, states[1].checksum());
  store->remove({rep->key(0, 2, 2), rep->key(0, 3, 3)});
  expect_state(v, 3);
  EXPECT_EQ(v.regone(), 1u);
  ASSERT_EQ(v.plan().size(), 2u);
  EXPECT_EQ(v.plan()[1]->file.level, 1);
  // The TXID gone altogether (no file reaches it): the read fails, naming it.
  store->remove({rep->key(1, 2, 3)});
  std::vector<uint8_t> page(kPs);
  try {
    v.read_page(5, page.data());
    FAIL() << "read a page of a TXID no longer in the replica";
  } catch (const ltx::Error& e) {
    EXPECT_NE(std::string(e.what()).find("is gone; planning TXID 0000000000000003 again"), std::string::npos) << e.what();
  }
}

// Following the newest TXID: polls at most once per interval, one LIST when
// nothing changed, and the TXID moves only in begin().
TEST_F(ReplicaView, PollsBetweenTransactions) {
  build();
  store->remove({rep->key(0, 3, 3)});
  int64_t clock = 0;
  ltx::ViewOptions o;
  o.poll_ms = 1000;
  o.now_ms = [&] { return clock; };
  ltx::ReplicaView v(ltx::open_file_store(), loc, o);
  v.open();
  expect_state(v, 2);
  Db db = states[3];
  put(0, 3, 3, db, {5, 9, 11, 12}, states[2].checksum());
  clock = 999;
  v.begin();
  EXPECT_EQ(v.polls(), 0u);
  expect_state(v, 2);  // the transaction's TXID holds
  clock = 1000;
  v.begin();
  EXPECT_EQ(v.polls(), 1u);
  expect_state(v, 3);
  uint64_t lists = v.requests().lists, gets = v.requests().gets;
  clock = 2000;
  v.begin();  // nothing new: one LIST
  EXPECT_EQ(v.polls(), 2u);
  EXPECT_EQ(v.requests().lists, lists + 1);
  EXPECT_EQ(v.requests().gets, gets);
  EXPECT_EQ(v.txid(), 3u);
}

// Past 1 GiB (at 512-byte pages, page 2097153 holds SQLite's lock byte):
// no file stores the lock page, so it reads as zeros, as do pages a grown
// database never wrote; the pages around it are the replica's.
TEST_F(ReplicaView, TheLockPageAndUnwrittenGrowthReadAsZeros) {
  build();
  const uint32_t lock = ltx::lock_pgno(kPs);
  Db db = states[3];
  db.commit = lock + 1;
  for (uint32_t p : {lock - 1, lock + 1}) db.pages[p] = Db::page(p, 4);
  put(0, 4, 4, db, {lock - 1, lock + 1}, states[3].checksum());
  ltx::ViewOptions o;
  ltx::ReplicaView v(ltx::open_file_store(), loc, o);
  v.open();
  ASSERT_EQ(v.txid(), 4u);
  ASSERT_EQ(v.commit(), lock + 1);
  std::vector<uint8_t> got(kPs), zero(kPs);
  for (uint32_t p : {lock - 1, lock + 1}) {
    v.read_page(p, got.data());
    EXPECT_EQ(got, db.pages[p]) << p;
  }
  for (uint32_t p : {13u, lock - 2, lock}) {
    v.read_page(p, got.data());
    EXPECT_EQ(got, zero) << p;
  }
  v.read_page(12, got.data());
  EXPECT_EQ(got, db.pages[12]);
}

TEST_F(ReplicaView, ADamagedFrameIsAnIntegrityError) {
  build();
  std::string path = "/" + rep->key(0, 1, 1);
  ltx::ViewOptions o;
  o.verify = ltx::ViewOptions::Verify::Structure;
  o.whole_max = 0;
  o.head_bytes = 100;
  o.cache_bytes = 0;
  o.target.has_txid = true;
  o.target.txid = 1;
  ltx::ReplicaView v(ltx::open_file_store(), loc, o);
  v.open();
  const ltx::PageIndex& idx = *v.plan()[0];
  // page 4's frame claims to be page 7
  FILE* f = std::fopen(path.c_str(), "r+b");
  ASSERT_TRUE(f);
  std::fseek(f, long(idx.offset(3)) + 3, SEEK_SET);
  std::fputc(7, f);
  std::fclose(f);
  std::vector<uint8_t> page(kPs);
  v.read_page(3, page.data());
  EXPECT_EQ(page, states[1].pages[3]);
  try {
    v.read_page(4, page.data());
    FAIL() << "served a damaged page";
  } catch (const ltx::Error& e) {
    EXPECT_EQ(e.kind(), ltx::Kind::Integrity);
    EXPECT_NE(std::string(e.what()).find("page 4 at offset " + std::to_string(idx.offset(3))), std::string::npos) << e.what();
  }
}

// A byte of a frame's compressed data changed after the file was
// verified (the store changed under the view): the frame's bytes no longer
// hash to the recorded value, so the read fails before decoding; the pages
// of the other frames are still served.
TEST_F(ReplicaView, AFrameChangedAfterVerificationIsAnIntegrityError) {
  build();
  std::string path = "/" + rep->key(0, 1, 1);
  ltx::ViewOptions o;
  o.cache_bytes = 0;
  o.target.has_txid = true;
  o.target.txid = 1;
  ltx::ReplicaView v(ltx::open_file_store(), loc, o);
  v.open();
  const ltx::PageIndex& idx = *v.plan()[0];
  ASSERT_TRUE(idx.verified);
  const uint64_t last = idx.offset(3) + idx.frame_bytes(3) - 1;  // page 4's last literal
  FILE* f = std::fopen(path.c_str(), "r+b");
  ASSERT_TRUE(f);
  std::fseek(f, long(last), SEEK_SET);
  int c = std::fgetc(f);
  std::fseek(f, long(last), SEEK_SET);
  std::fputc(c ^ 1, f);
  std::fclose(f);
  std::vector<uint8_t> page(kPs);
  v.read_page(3, page.data());
  EXPECT_EQ(page, states[1].pages[3]);
  try {
    v.read_page(4, page.data());
    FAIL() << "served a changed page";
  } catch (const ltx::Error& e) {
    EXPECT_EQ(e.kind(), ltx::Kind::Integrity);
    EXPECT_NE(std::string(e.what()).find("page 4 at offset " + std::to_string(idx.offset(3)) +
                                         ": frame bytes changed since the file was verified"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
