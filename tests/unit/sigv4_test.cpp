// SigV4 against the worked examples in AWS's S3 documentation
// ("Signature Calculations for the Authorization Header", examplebucket).
#include <gtest/gtest.h>

#include "ltx/error.h"
#include "ltx/replica.h"
#include "ltx/store.h"

namespace {

const char* kAK = "AKIAIOSFODNN7EXAMPLE";
const char* kSK = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const char* kEmpty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

std::string auth(const std::vector<std::pair<std::string, std::string>>& h) {
  for (auto& kv : h)
    if (kv.first == "Authorization") return kv.second;
  return "";
}

TEST(SigV4, GetObjectWithRange) {
  ltx::SigV4Request r;
  r.method = "GET";
  r.host = "examplebucket.s3.amazonaws.com";
  r.path = "/test.txt";
  r.headers = {{"Range", "bytes=0-9"}};
  r.payload_hash = kEmpty;
  auto h = ltx::sigv4_sign(r, "20130524T000000Z", "us-east-1", kAK, kSK, "");
  EXPECT_EQ(auth(h),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
            "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
            "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
}

TEST(SigV4, ListObjectsQueryIsSortedAndEncoded) {
  ltx::SigV4Request r;
  r.method = "GET";
  r.host = "examplebucket.s3.amazonaws.com";
  r.path = "/";
  r.query = {{"prefix", "J"}, {"max-keys", "2"}};
  r.payload_hash = kEmpty;
  auto h = ltx::sigv4_sign(r, "20130524T000000Z", "us-east-1", kAK, kSK, "");
  EXPECT_NE(auth(h).find("Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"),
            std::string::npos)
      << auth(h);
  EXPECT_EQ(ltx::canonical_query(r.query), "max-keys=2&prefix=J");
  EXPECT_EQ(ltx::canonical_query({{"uploads", ""}}), "uploads=");
  EXPECT_EQ(ltx::canonical_query({{"continuation-token", "a/b=c+d e"}}), "continuation-token=a%2Fb%3Dc%2Bd%20e");
}

TEST(SigV4, SessionTokenIsSigned) {
  ltx::SigV4Request r;
  r.method = "GET";
  r.host = "h";
  r.path = "/";
  r.payload_hash = kEmpty;
  auto h = ltx::sigv4_sign(r, "20130524T000000Z", "us-east-1", kAK, kSK, "TOKEN");
  EXPECT_NE(auth(h).find("x-amz-security-token"), std::string::npos);
}

TEST(SigV4, UriEncode) {
  EXPECT_EQ(ltx::uri_encode("a b/ü~._-", true), "a%20b/%C3%BC~._-");
  EXPECT_EQ(ltx::uri_encode("a/b", false), "a%2Fb");
}

TEST(Url, Parse) {
  auto l = ltx::parse_url("s3://bucket/a/b/");
  EXPECT_EQ(l.bucket, "bucket");
  EXPECT_EQ(l.path, "a/b");
  l = ltx::parse_url("file:///var/backups/app");
  EXPECT_EQ(l.path, "var/backups/app");
  EXPECT_THROW(ltx::parse_url("s3:///x"), ltx::Error);
  EXPECT_THROW(ltx::parse_url("file://rel"), ltx::Error);
  EXPECT_THROW(ltx::parse_url("http://x"), ltx::Error);
}

TEST(Replica, Names) {
  int lv;
  uint64_t a, b;
  EXPECT_TRUE(ltx::parse_replica_name("9/0000000000000001-0000000000000064.ltx", &lv, &a, &b));
  EXPECT_EQ(lv, 9);
  EXPECT_EQ(b, 0x64u);
  EXPECT_FALSE(ltx::parse_replica_name("10/0000000000000001-0000000000000064.ltx", &lv, &a, &b));
}

}  // namespace
