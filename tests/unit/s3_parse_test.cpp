// The S3 response parsers and the message escaping, on the odd answers
// servers really send (tests/fake-s3.py plays them end to end).
#include <gtest/gtest.h>

#include "ltx/error.h"
#include "ltx/store.h"

namespace {

TEST(S3Parse, ListPageDecodesUrlEncodedKeys) {
  // Swift and AWS with encoding-type=url: keys percent-encoded, '+' a space.
  auto pg = ltx::parse_list_page(
      "<ListBucketResult><EncodingType>url</EncodingType><Contents><Key>p/bad%01key</Key><Size>3</Size>"
      "</Contents><Contents><Key>p/a+b%2Bc%26</Key><Size>1</Size></Contents>"
      "<IsTruncated>true</IsTruncated><NextContinuationToken>tok%2B&amp;</NextContinuationToken>"
      "</ListBucketResult>");
  ASSERT_EQ(pg.objects.size(), 2u);
  EXPECT_EQ(pg.objects[0].key, std::string("p/bad\x01key"));
  EXPECT_EQ(pg.objects[0].size, 3u);
  EXPECT_EQ(pg.objects[1].key, "p/a b+c&");
  EXPECT_TRUE(pg.truncated);
  EXPECT_EQ(pg.next_token, "tok%2B&");  // opaque: never URL-decoded
}

TEST(S3Parse, ListPageWithoutEncodingTypeIsTakenAsIs) {
  auto pg = ltx::parse_list_page("<ListBucketResult><Contents><Key>a+b%41</Key></Contents></ListBucketResult>");
  ASSERT_EQ(pg.objects.size(), 1u);
  EXPECT_EQ(pg.objects[0].key, "a+b%41");
  EXPECT_FALSE(pg.truncated);
}

TEST(S3Parse, ListPageRefusesWhatItCannotUse) {
  EXPECT_THROW(ltx::parse_list_page("<Error><Code>x</Code></Error>"), ltx::Error);
  EXPECT_THROW(ltx::parse_list_page("<ListBucketResult><Contents><Size>1</Size></Contents></ListBucketResult>"),
               ltx::Error);
  EXPECT_THROW(ltx::parse_list_page("<ListBucketResult><EncodingType>url</EncodingType><Contents><Key>a%G1"
                                    "</Key></Contents></ListBucketResult>"),
               ltx::Error);
  std::string big(1025, 'k');
  EXPECT_THROW(ltx::parse_list_page("<ListBucketResult><Contents><Key>" + big + "</Key></Contents></ListBucketResult>"),
               ltx::Error);
}

TEST(S3Parse, UploadsPage) {
  auto pg = ltx::parse_uploads_page(
      "<ListMultipartUploadsResult><EncodingType>url</EncodingType><NextKeyMarker>p/b%20c</NextKeyMarker>"
      "<NextUploadIdMarker>id2</NextUploadIdMarker><IsTruncated>true</IsTruncated>"
      "<Upload><Key>p/b%20c</Key><UploadId>id2</UploadId><Initiated>2024-01-01T00:00:01.000Z</Initiated></Upload>"
      "</ListMultipartUploadsResult>");
  ASSERT_EQ(pg.uploads.size(), 1u);
  EXPECT_EQ(pg.uploads[0].key, "p/b c");
  EXPECT_EQ(pg.uploads[0].upload_id, "id2");
  EXPECT_EQ(pg.uploads[0].initiated_ms, 1704067201000);
  EXPECT_TRUE(pg.truncated);
  EXPECT_EQ(pg.next_key, "p/b c");
  EXPECT_EQ(pg.next_upload_id, "id2");
  EXPECT_THROW(ltx::parse_uploads_page("<ListMultipartUploadsResult><Upload><Key>k</Key></Upload>"
                                       "</ListMultipartUploadsResult>"),
               ltx::Error);
}

TEST(S3Parse, ContentRange) {
  uint64_t a, b, t;
  ASSERT_TRUE(ltx::parse_content_range("bytes 1059-1074/1075", &a, &b, &t));
  EXPECT_EQ(a, 1059u);
  EXPECT_EQ(b, 1074u);
  EXPECT_EQ(t, 1075u);
  ASSERT_TRUE(ltx::parse_content_range("bytes 0-9/*", &a, &b, &t));
  EXPECT_EQ(t, UINT64_MAX);
  EXPECT_FALSE(ltx::parse_content_range("bytes 0-16/16", &a, &b, &t));   // last past the end
  EXPECT_FALSE(ltx::parse_content_range("bytes 5-4/10", &a, &b, &t));
  EXPECT_FALSE(ltx::parse_content_range("bytes */10", &a, &b, &t));
  EXPECT_FALSE(ltx::parse_content_range("bytes 0-1/2x", &a, &b, &t));
  EXPECT_FALSE(ltx::parse_content_range("bytes 0-99999999999999999999/1", &a, &b, &t));
  EXPECT_FALSE(ltx::parse_content_range("", &a, &b, &t));
}

TEST(S3Parse, ErrorBody) {
  EXPECT_EQ(ltx::parse_error_body("<Error><Code>NoSuchKey</Code><Message>a &amp; b</Message></Error>"),
            "NoSuchKey: a & b");
  EXPECT_EQ(ltx::parse_error_body("<Error><Code>X</Code></Error>"), "X: no error details");
  EXPECT_EQ(ltx::parse_error_body("<html>503</html>"), "");
  std::string m = ltx::parse_error_body("<Error><Code>X</Code><Message>" + std::string(5000, 'm') + "</Message></Error>");
  EXPECT_EQ(m.size(), 3u + 512 + 3);
}

TEST(Printable, EscapesControlsKeepsUtf8) {
  EXPECT_EQ(ltx::printable("a\x1b[31mb\nc\x7f"), "a\\x1b[31mb\\x0ac\\x7f");
  EXPECT_EQ(ltx::printable("caf\xc3\xa9 \xe2\x82\xac"), "caf\xc3\xa9 \xe2\x82\xac");
  EXPECT_EQ(ltx::printable("\xc2\x9b" "1m"), "\\xc2\\x9b1m");  // C1 CSI
  EXPECT_EQ(ltx::printable("\x9b\xff\xc0\xaf"), "\\x9b\\xff\\xc0\\xaf");
  EXPECT_EQ(ltx::printable("\xe2\x82"), "\\xe2\\x82");  // cut short
}

TEST(Url, QueryIsRefused) {
  EXPECT_THROW(ltx::parse_url("s3://bucket/app?versionId=1"), ltx::Error);
  try {
    ltx::parse_url("s3://bucket/app?x");
  } catch (const ltx::Error& e) {
    EXPECT_EQ(e.kind(), ltx::Kind::Usage);
    EXPECT_STREQ(e.what(), "malformed URL s3://bucket/app?x: '?' has no meaning in a replica URL");
  }
}

}  // namespace
