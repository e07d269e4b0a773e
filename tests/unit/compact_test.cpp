// Unit tests for compact.h: durations, object reads in ranges, and the
// retention planner on an in-memory replica; request counting (store.h)
// and its metrics (watch.h).
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "ltx/compact.h"
#include "ltx/error.h"
#include "ltx/ltx.h"
#include "ltx/watch.h"

namespace {

using ltx::parse_duration_ms;

// The one duration grammar (s3-get, s3-compact, s3-retain, walsync and its config).
TEST(Duration, Grammar) {
  EXPECT_EQ(parse_duration_ms("0"), 0);
  EXPECT_EQ(parse_duration_ms("5"), 5000);
  EXPECT_EQ(parse_duration_ms("1.5"), 1500);
  EXPECT_EQ(parse_duration_ms("500ms"), 500);
  EXPECT_EQ(parse_duration_ms("30s"), 30000);
  EXPECT_EQ(parse_duration_ms("5m"), 300000);
  EXPECT_EQ(parse_duration_ms("1h30m"), 5400000);
  EXPECT_EQ(parse_duration_ms("1d"), 86400000LL);
  EXPECT_EQ(parse_duration_ms("7d"), 7 * 86400000LL);
  EXPECT_EQ(parse_duration_ms("2w"), 14 * 86400000LL);
  EXPECT_EQ(parse_duration_ms("1.5h"), 5400000);
  for (const char* bad : {"", "m", "-1h", "+1h", "1y", "1h x", "1h5", "5 s", "soon", "1e300h", "inf"})
    EXPECT_EQ(parse_duration_ms(bad), -1) << bad;
}

TEST(Span, Defaults) {
  EXPECT_EQ(ltx::default_interval_ms(1), 30000);
  EXPECT_EQ(ltx::default_interval_ms(2), 300000);
  EXPECT_EQ(ltx::default_interval_ms(3), 3600000);
  EXPECT_EQ(ltx::default_interval_ms(4), 0);
  EXPECT_EQ(ltx::default_interval_ms(9), 86400000);
}

// An in-memory store: objects by key, every call counted by CountingStore.
class MemStore : public ltx::Store {
 public:
  void put(const std::string& key, ltx::Reader& body, const ltx::Metadata&) override {
    std::string s;
    char b[4096];
    for (size_t n; (n = body.read(b, sizeof b));) s.append(b, n);
    obj[key] = s;
  }
  uint64_t get(const std::string& key, ltx::Writer& out, uint64_t off, int64_t len) override {
    auto& s = obj.at(key);
    std::string part = s.substr(off, len < 0 ? std::string::npos : size_t(len));
    out.write(part.data(), part.size());
    return part.size();
  }
  std::string get_tail(const std::string& key, size_t n) override { return obj.at(key).substr(obj.at(key).size() - n); }
  std::vector<ltx::ObjectInfo> list(const std::string& prefix, const std::string& after) override {
    std::vector<ltx::ObjectInfo> v;
    for (auto& kv : obj)
      if (kv.first.compare(0, prefix.size(), prefix) == 0 && kv.first > after) v.push_back({kv.first, kv.second.size()});
    return v;
  }
  bool head(const std::string& key, ltx::ObjectInfo*) override { return obj.count(key); }
  void remove(const std::vector<std::string>& keys) override {
    for (auto& k : keys) obj.erase(k);
  }
  std::map<std::string, std::string> obj;
};

TEST(ObjectReader, ReadsInRanges) {
  MemStore m;
  std::string body(100000, 'x');
  for (size_t i = 0; i < body.size(); i++) body[i] = char(i * 7);
  ltx::MemReader r(body.data(), body.size());
  m.put("k", r, {});
  ltx::CountingStore c(m);
  ltx::ObjectReader o(c, "k", body.size(), 30000);
  std::string got;
  char b[777];
  for (size_t n; (n = o.read(b, sizeof b));) got.append(b, n);
  EXPECT_EQ(got, body);
  EXPECT_EQ(c.gets, 4u);  // 30000 x 3 + 10000
  ltx::ObjectReader shortread(m, "k", body.size() + 5, 1u << 20);
  EXPECT_THROW(shortread.read(b, sizeof b), ltx::Error);
}

// Every kind counted where S3 bills it, into the store's own fields and a
// shared sink (two stores of one database add up).
TEST(CountingStore, KindsPagesAndSharedSink) {
  MemStore m;
  ltx::RequestCounts sink;
  ltx::CountingStore a(m, &sink), b(m, &sink);
  std::string body = "abc";
  ltx::MemReader r(body.data(), body.size());
  a.put("x/0", r, {});
  ltx::StringWriter w;
  a.get("x/0", w);
  a.get_tail("x/0", 1);
  a.head("x/0", nullptr);
  a.list("x/");
  for (int i = 1; i <= 2500; i++) {
    ltx::MemReader e(body.data(), 0);
    m.put("y/" + std::to_string(i), e, {});
  }
  b.list("y/");           // 2500 keys: 3 pages
  b.list("nothing/");     // an empty page is a request all the same
  std::vector<std::string> keys;
  for (int i = 1; i <= 1001; i++) keys.push_back("y/" + std::to_string(i));
  b.remove(keys);         // 2 batches
  b.remove({});           // nothing sent
  EXPECT_EQ(a.summary(), "1 LIST, 2 GET, 1 PUT, 1 HEAD, 0 DELETE");
  EXPECT_EQ(b.summary(), "4 LIST, 0 GET, 0 PUT, 0 HEAD, 2 DELETE");
  EXPECT_EQ(sink.put, 1u);
  EXPECT_EQ(sink.get, 3u);  // HEAD is billed as a GET
  EXPECT_EQ(sink.list, 5u);
  EXPECT_EQ(sink.del, 2u);
}

// The metrics text round-trips, request counts (a second label) included,
// also for a name that needs escaping.
TEST(Metrics, RequestsRoundTrip) {
  ltx::watch::Metrics a, b;
  a.name = "app";
  a.txid = 42;
  a.files = 7;
  a.requests[0] = 7, a.requests[1] = 2, a.requests[2] = 1, a.requests[3] = 0;
  b.name = "we\"ird\\";
  b.requests[0] = 18446744073709551615ull, b.requests[3] = 5;
  std::string text = ltx::watch::format_metrics({a, b});
  EXPECT_NE(text.find("walsync_requests_total{db=\"app\",kind=\"put\"} 7\n"), std::string::npos) << text;
  EXPECT_NE(text.find("walsync_requests_total{db=\"we\\\"ird\\\\\",kind=\"delete\"} 5\n"), std::string::npos) << text;
  auto got = ltx::watch::parse_metrics(text);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].name, "app");
  EXPECT_EQ(got[0].txid, 42u);
  EXPECT_EQ(got[0].files, 7u);
  EXPECT_EQ(got[0].requests[0], 7u);
  EXPECT_EQ(got[0].requests[1], 2u);
  EXPECT_EQ(got[0].requests[2], 1u);
  EXPECT_EQ(got[0].requests[3], 0u);
  EXPECT_EQ(got[1].name, b.name);
  EXPECT_EQ(got[1].requests[0], 18446744073709551615ull);
  EXPECT_EQ(got[1].requests[3], 5u);
}

// A header-only LTX object: enough for plan_retention (names, times).
void add(MemStore& m, ltx::Replica& r, int level, uint64_t lo, uint64_t hi, int64_t ts) {
  ltx::Header h;
  h.flags = ltx::kFlagNoChecksum;
  h.page_size = 4096;
  h.commit = 1;
  h.min_txid = lo;
  h.max_txid = hi;
  h.timestamp = ts;
  uint8_t b[ltx::kHeaderSize];
  h.marshal(b);
  std::string s(reinterpret_cast<char*>(b), sizeof b);
  s.append(16, '\0');
  ltx::MemReader rd(s.data(), s.size());
  m.put(r.key(level, lo, hi), rd, {});
}

std::set<std::string> names(const std::vector<ltx::ReplicaFile>& v) {
  std::set<std::string> s;
  for (auto& f : v) s.insert(f.name());
  return s;
}

TEST(Retention, WindowBaseAndGfs) {
  MemStore m;
  ltx::Location loc = ltx::parse_url("s3://b/app");
  ltx::Replica r(m, loc);
  const int64_t H = 3600000;
  add(m, r, 0, 1, 1, 0);
  for (uint64_t t = 2; t <= 40; t++) add(m, r, 0, t, t, int64_t(t) * H);  // one file an hour
  add(m, r, 9, 1, 10, 10 * H);
  add(m, r, 9, 1, 24, 24 * H);
  add(m, r, 9, 1, 30, 30 * H);
  auto files = r.list();
  ltx::RetainOptions o;
  o.now_ms = 40 * H;
  o.retention_ms = 12 * H;  // cutoff 28h: keep 1-30, and 1-24 as the base
  auto p = ltx::plan_retention(r, files, o);
  ASSERT_TRUE(p.have_base);
  EXPECT_EQ(p.base.name(), "9/0000000000000001-0000000000000018.ltx");
  auto gone = names(p.remove);
  EXPECT_TRUE(gone.count("9/0000000000000001-000000000000000a.ltx"));
  EXPECT_TRUE(gone.count("0/0000000000000001-0000000000000001.ltx"));
  EXPECT_TRUE(gone.count("0/0000000000000018-0000000000000018.ltx"));
  EXPECT_FALSE(gone.count("0/0000000000000019-0000000000000019.ltx"));
  EXPECT_FALSE(gone.count("9/0000000000000001-0000000000000018.ltx"));
  EXPECT_EQ(gone.size(), 1u + 1u + 23u);  // 9/1-10, 0/1-1, 0/2..0/24
  // GFS only: the base is the newest snapshot; daily 2 keeps day 0's (1-10) and day 1's (1-30).
  o.retention_ms = -1;
  o.daily = 2;
  p = ltx::plan_retention(r, files, o);
  gone = names(p.remove);
  EXPECT_EQ(p.base.name(), "9/0000000000000001-000000000000001e.ltx");
  EXPECT_FALSE(gone.count("9/0000000000000001-000000000000000a.ltx"));
  EXPECT_TRUE(gone.count("9/0000000000000001-0000000000000018.ltx"));
  EXPECT_TRUE(gone.count("0/000000000000001e-000000000000001e.ltx"));
  EXPECT_FALSE(gone.count("0/000000000000001f-000000000000001f.ltx"));
}

TEST(Retention, CompactedLevelsGoInsideOldCoversOnly) {
  MemStore m;
  ltx::Replica r(m, ltx::parse_url("s3://b/app"));
  const int64_t H = 3600000;
  add(m, r, 9, 1, 1, 0);
  for (uint64_t t = 2; t <= 9; t++) add(m, r, 0, t, t, int64_t(t) * H);
  add(m, r, 3, 2, 5, 5 * H);  // old cover
  add(m, r, 3, 6, 9, 9 * H);  // recent cover
  ltx::RetainOptions o;
  o.now_ms = 10 * H;
  o.retention_ms = 30 * H;
  o.compacted_retention_ms = 3 * H;  // covers stamped before 7h
  auto p = ltx::plan_retention(r, r.list(), o);
  auto gone = names(p.remove);
  EXPECT_EQ(gone, (std::set<std::string>{"0/0000000000000002-0000000000000002.ltx", "0/0000000000000003-0000000000000003.ltx",
                                         "0/0000000000000004-0000000000000004.ltx", "0/0000000000000005-0000000000000005.ltx"}));
  // newest first: an interrupted run leaves a prefix that still chains
  EXPECT_EQ(p.remove.front().name(), "0/0000000000000005-0000000000000005.ltx");
}

TEST(Retention, NoLevel9SnapshotNothingGoes) {
  MemStore m;
  ltx::Replica r(m, ltx::parse_url("s3://b/app"));
  add(m, r, 0, 1, 1, 0);
  add(m, r, 0, 2, 2, 1000);
  ltx::RetainOptions o;
  o.now_ms = 1e9;
  o.retention_ms = 0;
  auto p = ltx::plan_retention(r, r.list(), o);
  EXPECT_FALSE(p.have_base);
  EXPECT_TRUE(p.remove.empty());
}

}  // namespace
