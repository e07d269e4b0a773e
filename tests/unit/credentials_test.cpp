// The credential chain's parsers and the refreshing provider (the sources
// that talk HTTP are tested against fake endpoints in tests/credentials.bats).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "ltx/credentials.h"
#include "ltx/error.h"

namespace {

std::string temp_file(const std::string& text) {
  char path[] = "/tmp/walsync-cred-test-XXXXXX";
  int fd = ::mkstemp(path);
  EXPECT_GE(fd, 0);
  EXPECT_EQ(::write(fd, text.data(), text.size()), ssize_t(text.size()));
  ::close(fd);
  return path;
}

TEST(AwsIni, SectionsKeysAndSubsections) {
  auto s = ltx::parse_aws_ini(
      "# comment\n"
      "[default]\n"
      "region = eu-west-1\n"
      "AWS_Access_Key_ID=AKIA1\n"
      "; another comment\n"
      "[profile dev]\n"
      "  s3 =\n"
      "    endpoint_url = http://a:1\n"
      "    addressing_style = path\n"
      "output = json\n"
      "[services x]\n"
      "s3 =\n"
      "  endpoint_url = http://b:2\n");
  EXPECT_EQ(s["default"]["region"], "eu-west-1");
  EXPECT_EQ(s["default"]["aws_access_key_id"], "AKIA1");
  EXPECT_EQ(s["profile dev"]["s3.endpoint_url"], "http://a:1");
  EXPECT_EQ(s["profile dev"]["s3.addressing_style"], "path");
  EXPECT_EQ(s["profile dev"]["output"], "json");
  EXPECT_EQ(s["services x"]["s3.endpoint_url"], "http://b:2");
}

TEST(AwsProfile, CredentialsFileWinsAndServicesMerge) {
  std::string conf = temp_file(
      "[default]\nregion = us-west-2\n"
      "[profile p]\nregion = eu-north-1\naws_access_key_id = FROMCONFIG\nservices = s\n"
      "[services s]\ns3 =\n  endpoint_url = http://127.0.0.1:9\n");
  std::string creds = temp_file("[p]\naws_access_key_id = FROMCREDS\naws_secret_access_key = sk\n");
  bool found = false;
  auto p = ltx::load_aws_profile(creds, conf, "p", &found);
  EXPECT_TRUE(found);
  EXPECT_EQ(p["aws_access_key_id"], "FROMCREDS");
  EXPECT_EQ(p["region"], "eu-north-1");
  EXPECT_EQ(p["s3.endpoint_url"], "http://127.0.0.1:9");
  auto d = ltx::load_aws_profile(creds, conf, "default", &found);
  EXPECT_TRUE(found);
  EXPECT_EQ(d["region"], "us-west-2");
  ltx::load_aws_profile(creds, conf, "nope", &found);
  EXPECT_FALSE(found);
  ltx::load_aws_profile("/nonexistent/c", "/nonexistent/f", "default", &found);
  EXPECT_FALSE(found);
  ::unlink(conf.c_str());
  ::unlink(creds.c_str());
}

ltx::Credentials cred(const std::string& key, int64_t exp) {
  ltx::Credentials c;
  c.access_key = key;
  c.secret_key = "s";
  c.expires_ms = exp;
  c.source = "test";
  return c;
}

TEST(CredentialProvider, RefreshesWithinTheWindowBeforeExpiry) {
  int64_t now = 1000000;
  int fetches = 0;
  ltx::CredentialProvider p([&] { return cred("K" + std::to_string(++fetches), now + 600000); },
                            [&] { return now; }, 300000, 10000);
  EXPECT_EQ(p.get().access_key, "K1");
  now += 299000;  // 301 s left: cached
  EXPECT_EQ(p.get().access_key, "K1");
  now += 2000;  // 299 s left: within the 5-minute window
  EXPECT_EQ(p.get().access_key, "K2");
  EXPECT_EQ(p.get().access_key, "K2");
  EXPECT_EQ(fetches, 2);
}

TEST(CredentialProvider, StaticCredentialsAreFetchedOnce) {
  int fetches = 0;
  int64_t now = 0;
  ltx::CredentialProvider p([&] { fetches++; return cred("K", 0); }, [&] { return now; });
  for (int i = 0; i < 5; i++, now += 86400000) p.get();
  EXPECT_EQ(fetches, 1);
}

TEST(CredentialProvider, FailedRefreshKeepsValidCredentialsThenFails) {
  int64_t now = 0;
  int fetches = 0;
  bool down = false;
  ltx::CredentialProvider p(
      [&] {
        fetches++;
        if (down) ltx::fail_runtime("container credentials: HTTP 500");
        return cred("K", now + 400000);
      },
      [&] { return now; }, 300000, 10000);
  std::vector<std::string> logged;
  p.log = [&](const std::string& m) { logged.push_back(m); };
  p.get();
  down = true;
  now += 200000;  // in the window, 200 s left
  EXPECT_EQ(p.get().access_key, "K");
  EXPECT_EQ(fetches, 2);
  now += 5000;  // before the retry delay: no new fetch
  EXPECT_EQ(p.get().access_key, "K");
  EXPECT_EQ(fetches, 2);
  now += 6000;
  EXPECT_EQ(p.get().access_key, "K");
  EXPECT_EQ(fetches, 3);
  now += 400000;  // expired: the failure surfaces
  EXPECT_THROW(p.get(), ltx::Error);
  ASSERT_GE(logged.size(), 2u);
  EXPECT_NE(logged[1].find("refresh failed"), std::string::npos);
}

ltx::CredentialChain none() {
  ltx::CredentialChain c;
  c.profile_name = "default";
  return c;
}

TEST(CredentialChain, OrderFixedBeforeProfileBeforeProcess) {
  ltx::CredentialChain c = none();
  c.profile["aws_access_key_id"] = "PK";
  c.profile["aws_secret_access_key"] = "PS";
  c.profile["credential_process"] = "exit 7";
  EXPECT_EQ(ltx::fetch_credentials(c).access_key, "PK");
  c.fixed.access_key = "EK";
  c.fixed.secret_key = "ES";
  c.fixed.source = "environment";
  auto r = ltx::fetch_credentials(c);
  EXPECT_EQ(r.access_key, "EK");
  EXPECT_EQ(r.source, "environment");
  c.fixed.secret_key.clear();  // one key alone is not a source
  EXPECT_EQ(ltx::fetch_credentials(c).access_key, "PK");
}

TEST(CredentialChain, CredentialProcessJson) {
  ltx::CredentialChain c = none();
  c.profile["credential_process"] =
      "printf '%s' '{\"Version\": 1, \"AccessKeyId\": \"AK\", \"SecretAccessKey\": \"S\\/K\", "
      "\"SessionToken\": \"T\", \"Expiration\": \"2030-01-02T03:04:05Z\", \"Extra\": {\"a\": [1, 2]}}'";
  auto r = ltx::fetch_credentials(c);
  EXPECT_EQ(r.access_key, "AK");
  EXPECT_EQ(r.secret_key, "S/K");
  EXPECT_EQ(r.session_token, "T");
  EXPECT_EQ(r.expires_ms, 1893553445000);
  EXPECT_EQ(r.source, "profile default: credential_process");
}

// Runs the chain and returns the error message.
std::string error_of(const ltx::CredentialChain& c) {
  try {
    ltx::fetch_credentials(c);
  } catch (const ltx::Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(CredentialChain, ProcessFailuresNeverShowTheOutput) {
  ltx::CredentialChain c = none();
  c.profile["credential_process"] = "echo '{\"Version\": 2, \"AccessKeyId\": \"AK\", \"SecretAccessKey\": \"SECRET1\"}'";
  std::string m = error_of(c);
  EXPECT_EQ(m, "profile default: credential_process: the answer is not Version 1");
  c.profile["credential_process"] = "echo 'SECRET2 is not json'";
  EXPECT_EQ(error_of(c), "profile default: credential_process: the answer is not a JSON object");
  c.profile["credential_process"] = "echo '{\"Version\": 1, \"AccessKeyId\": \"AK\", \"SecretAccessKey\": \"SECRET3\"}'; exit 3";
  EXPECT_EQ(error_of(c), "profile default: credential_process: command failed (exit status 3)");
  c.profile["credential_process"] = "printf '{\"Version\": 1, \"AccessKeyId\": \"A\\\\nB\", \"SecretAccessKey\": \"S\"}'";
  EXPECT_EQ(error_of(c), "profile default: credential_process: access key id holds a character that cannot be sent");
  c.process_timeout_s = 1;
  c.profile["credential_process"] = "sleep 30";
  EXPECT_EQ(error_of(c), "profile default: credential_process: no answer within 1 s");
  c.max_response = 100;
  c.profile["credential_process"] = "head -c 1000 /dev/zero";
  EXPECT_EQ(error_of(c), "profile default: credential_process: output larger than 100 bytes");
}

TEST(CredentialChain, NothingConfigured) {
  ltx::CredentialChain c = none();
  EXPECT_EQ(error_of(c),
            "no credentials: none in the environment, web identity, profile default or the container endpoint, "
            "and instance metadata is disabled");
  c.profile["role_arn"] = "arn:aws:iam::1:role/r";
  c.profile["source_profile"] = "base";
  EXPECT_NE(error_of(c).find("role_arn with source_profile or credential_source is not supported"), std::string::npos);
  c = none();
  c.container_url = "http://example.com/creds";
  EXPECT_NE(error_of(c).find("http only to a loopback address"), std::string::npos);
}

}  // namespace
