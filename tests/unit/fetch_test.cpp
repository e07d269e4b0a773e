// Unit tests for fetch.h: parallel downloads delivered in order, within
// their memory window, failures rethrown in order and nothing after them.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "ltx/error.h"
#include "ltx/fetch.h"

namespace {

constexpr uint64_t kPart = 64 * 1024;

// Objects shared by every connection; each GET sleeps a little (a random
// few ms, so parts finish out of order) and checks the window: a part is
// never requested while more than parallel+1 parts' bytes wait unconsumed.
struct Shared {
  std::map<std::string, std::string> obj;
  std::map<std::string, uint64_t> base;  // offset of each object in the concatenation
  std::atomic<uint64_t> delivered{0};
  std::atomic<int> inflight{0}, max_inflight{0};
  std::atomic<bool> window_broken{false};
  std::string fail_key;  // a GET of this key at fail_off throws Integrity
  uint64_t fail_off = UINT64_MAX;
  int parallel = 1;
};

class SlowStore : public ltx::Store {
 public:
  SlowStore(Shared& s, unsigned seed) : s_(s), rng_(seed) {}
  void put(const std::string&, ltx::Reader&, const ltx::Metadata&) override {}
  uint64_t get(const std::string& key, ltx::Writer& out, uint64_t off, int64_t len) override {
    int now = ++s_.inflight;
    for (int m = s_.max_inflight; now > m && !s_.max_inflight.compare_exchange_weak(m, now);) {
    }
    if (s_.base.at(key) + off >= s_.delivered + uint64_t(s_.parallel + 1) * kPart) s_.window_broken = true;
    std::this_thread::sleep_for(std::chrono::microseconds(rng_() % 3000));
    --s_.inflight;
    if (key == s_.fail_key && off == s_.fail_off) ltx::fail_integrity("get " + key + ": damaged");
    const std::string& b = s_.obj.at(key);
    std::string part = b.substr(off, len < 0 ? std::string::npos : size_t(len));
    for (size_t i = 0; i < part.size(); i += 10000) out.write(part.data() + i, std::min<size_t>(10000, part.size() - i));
    return part.size();
  }
  std::string get_tail(const std::string&, size_t) override { return ""; }
  std::vector<ltx::ObjectInfo> list(const std::string&, const std::string&) override { return {}; }
  bool head(const std::string&, ltx::ObjectInfo*) override { return false; }
  void remove(const std::vector<std::string>&) override {}

 private:
  Shared& s_;
  std::minstd_rand rng_;
};

// Counts what reaches the consumer.
struct Out : ltx::Writer {
  explicit Out(Shared& s) : s_(s) {}
  void write(const void* p, size_t n) override {
    s.append(static_cast<const char*>(p), n);
    s_.delivered += n;
  }
  std::string s;
  Shared& s_;
};

struct Fixture {
  Shared sh;
  std::vector<ltx::FetchObject> objs;
  std::string all;
  explicit Fixture(std::vector<uint64_t> sizes) {
    for (size_t i = 0; i < sizes.size(); i++) {
      std::string k = "k" + std::to_string(i), b(sizes[i], '\0');
      for (size_t j = 0; j < b.size(); j++) b[j] = char((j * 131 + i * 7) >> 3);
      sh.base[k] = all.size();
      all += b;
      sh.obj[k] = b;
      objs.push_back({k, sizes[i]});
    }
  }
  // Runs the fetch; returns the begin/end trace "b0 e0:5 b1 ...".
  std::string run(int parallel, Out& out, bool ranged = true) {
    sh.parallel = parallel;
    ltx::FetchOptions o;
    o.parallel = parallel;
    o.part_size = kPart;
    o.ranged = ranged;
    unsigned seed = 1;
    std::string trace;
    ltx::fetch_ordered(
        objs, [&] { return std::make_unique<SlowStore>(sh, seed++); }, o, out,
        [&](size_t i) { trace += "b" + std::to_string(i) + " "; },
        [&](size_t i, uint64_t n) { trace += "e" + std::to_string(i) + ":" + std::to_string(n) + " "; });
    return trace;
  }
};

TEST(FetchOrdered, DeliversInOrderAtEveryWidth) {
  for (int par : {1, 2, 3, 8}) {
    Fixture f({0, 1, kPart, kPart + 1, 3 * kPart + kPart / 2, 777, 10 * kPart});
    Out out(f.sh);
    std::string trace = f.run(par, out);
    EXPECT_EQ(out.s, f.all) << par;
    EXPECT_EQ(trace, "b0 e0:0 b1 e1:1 b2 e2:65536 b3 e3:65537 b4 e4:229376 b5 e5:777 b6 e6:655360 ") << par;
    EXPECT_LE(f.sh.max_inflight, par);
    EXPECT_FALSE(f.sh.window_broken) << par;
  }
}

TEST(FetchOrdered, WholeObjectsWhenNotRanged) {
  Fixture f({3 * kPart, 5, 2 * kPart + 3});
  Out out(f.sh);
  f.run(4, out, false);
  EXPECT_EQ(out.s, f.all);
}

TEST(FetchOrdered, FailureIsRethrownInOrderAfterTheBytesBeforeIt) {
  for (int par : {1, 8}) {
    Fixture f({2 * kPart, 5 * kPart, 4 * kPart});
    f.sh.fail_key = "k1";
    f.sh.fail_off = 3 * kPart;
    Out out(f.sh);
    try {
      f.run(par, out);
      FAIL() << "no error";
    } catch (const ltx::Error& e) {
      EXPECT_EQ(e.kind(), ltx::Kind::Integrity);
      EXPECT_STREQ(e.what(), "get k1: damaged");
    }
    EXPECT_EQ(out.s, f.all.substr(0, 5 * kPart)) << par;  // k0 and k1's first three parts
  }
}

TEST(FetchOrdered, ObjectLongerOrShorterThanListedIsIntegrity) {
  Fixture f({kPart / 2, 3 * kPart});
  f.objs[1].size = 3 * kPart - 10;  // longer than listed: the open-ended last part sees it
  Out out(f.sh);
  EXPECT_THROW(f.run(4, out), ltx::Error);
  Fixture g({3 * kPart});
  g.objs[0].size = 3 * kPart + 2 * kPart;  // shorter: a middle part comes back short
  Out out2(g.sh);
  try {
    g.run(4, out2);
    FAIL() << "no error";
  } catch (const ltx::Error& e) {
    EXPECT_EQ(e.kind(), ltx::Kind::Integrity);
    EXPECT_STREQ(e.what(), "k0: shorter than the listed 327680 bytes");
  }
}

TEST(FetchOrdered, RefusesWidthOutOfRange) {
  Fixture f({1});
  Out out(f.sh);
  EXPECT_THROW(f.run(0, out), ltx::Error);
  EXPECT_THROW(f.run(ltx::kMaxParallel + 1, out), ltx::Error);
}

}  // namespace
