// s3common.h - flags and environment shared by s3-put, s3-get, s3-ls, s3-rm.
// Flags override the standard AWS environment variables.
#pragma once
#include <signal.h>

#include <cstdlib>
#include <string>

#include "cli.h"
#include "ltx/store.h"

namespace s3cli {

struct Flags {
  std::string endpoint, region, access_key, secret_key, session_token, ca_bundle;
  std::string addressing = "auto";
  std::string part_size;
  int max_keys = 1000;
  int retries = 5;
  long connect_timeout = 10, timeout = 30;
  bool insecure = false, verbose = false;
};

inline std::string env(const char* a, const char* b = nullptr) {
  const char* v = std::getenv(a);
  if ((!v || !*v) && b) v = std::getenv(b);
  return v ? v : "";
}

inline void add_flags(CLI::App& app, Flags& f) {
  app.add_option("--endpoint", f.endpoint, "S3 endpoint URL (env AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL)");
  app.add_option("--region", f.region, "region (env AWS_REGION, AWS_DEFAULT_REGION; default us-east-1)");
  app.add_option("--access-key", f.access_key, "access key id (env AWS_ACCESS_KEY_ID)");
  app.add_option("--secret-key", f.secret_key, "secret access key (env AWS_SECRET_ACCESS_KEY)");
  app.add_option("--session-token", f.session_token, "session token (env AWS_SESSION_TOKEN)");
  app.add_option("--ca-bundle", f.ca_bundle, "PEM file of CA certificates (env AWS_CA_BUNDLE)");
  app.add_option("--addressing", f.addressing, "path, virtual or auto (virtual on AWS, path elsewhere)")
      ->check(CLI::IsMember({"auto", "path", "virtual"}));
  app.add_option("--retries", f.retries, "retries after a transient failure (default 5)")
      ->check(CLI::Range(0, 100));
  app.add_option("--connect-timeout", f.connect_timeout, "seconds to connect (default 10)")
      ->check(CLI::Range(1, 3600));
  app.add_option("--timeout", f.timeout, "abort a stalled transfer after SECONDS (default 30)")
      ->check(CLI::Range(1, 3600));
  app.add_flag("-v,--verbose", f.verbose, "report progress and retries on stderr");
}

// "8M", "5MiB", "1048576" -> bytes; 0 on bad syntax.
inline uint64_t parse_size(const std::string& s) {
  char* end = nullptr;
  unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  if (end == s.c_str()) return 0;
  std::string u = end;
  if (u.empty() || u == "B") return v;
  if (u == "K" || u == "KiB" || u == "k") return v << 10;
  if (u == "M" || u == "MiB") return v << 20;
  if (u == "G" || u == "GiB") return v << 30;
  return 0;
}

inline ltx::S3Config config(const Flags& f, const ltx::Location& loc) {
  ltx::S3Config c;
  c.endpoint = !f.endpoint.empty() ? f.endpoint : env("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL");
  c.region = !f.region.empty() ? f.region : env("AWS_REGION", "AWS_DEFAULT_REGION");
  if (c.region.empty()) c.region = "us-east-1";
  c.access_key = !f.access_key.empty() ? f.access_key : env("AWS_ACCESS_KEY_ID");
  c.secret_key = !f.secret_key.empty() ? f.secret_key : env("AWS_SECRET_ACCESS_KEY");
  c.session_token = !f.session_token.empty() ? f.session_token : env("AWS_SESSION_TOKEN");
  c.ca_bundle = !f.ca_bundle.empty() ? f.ca_bundle : env("AWS_CA_BUNDLE");
  c.addressing = f.addressing == "path"      ? ltx::S3Config::Addressing::Path
                 : f.addressing == "virtual" ? ltx::S3Config::Addressing::Virtual
                                             : ltx::S3Config::Addressing::Auto;
  c.max_retries = f.retries;
  c.connect_timeout_s = f.connect_timeout;
  c.low_speed_time_s = f.timeout;
  c.max_keys = f.max_keys;
  if (!f.part_size.empty()) {
    c.part_size = parse_size(f.part_size);
    if (c.part_size < (5u << 20)) ltx::fail(ltx::Kind::Usage, "--part-size " + f.part_size + ": want at least 5M");
  }
  if (f.verbose) c.log = [](const std::string& m) { cli::error(m); };
  if (loc.scheme == ltx::Location::Scheme::S3 && (c.access_key.empty() || c.secret_key.empty()))
    ltx::fail_runtime("no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or --access-key, --secret-key)");
  // Tools holding sockets ignore SIGPIPE (curl uses CURLOPT_NOSIGNAL).
  ::signal(SIGPIPE, SIG_IGN);
  return c;
}

}  // namespace s3cli
