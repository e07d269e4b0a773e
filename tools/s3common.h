// s3common.h - flags and environment shared by the tools that talk to S3:
// the one place where S3Config is filled. Flags override the standard AWS
// environment variables, which override the shared files' profile; the
// credential chain's order is in man/walsync-credentials.7.
#pragma once
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
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
  // age encryption (age.h): recipients to write to, identity files to read with.
  std::vector<std::string> age_recipients;
  std::string age_recipients_file, age_identity, age_passphrase_file;
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
  app.add_option("--age-recipient", f.age_recipients, "encrypt objects to this age recipient (age1...; repeatable)");
  app.add_option("--age-recipients-file", f.age_recipients_file, "encrypt objects to the recipients in FILE");
  app.add_option("--age-identity", f.age_identity,
                 "decrypt objects with the age identities in FILE (env WALSYNC_AGE_IDENTITY_FILE)");
  app.add_option("--age-passphrase-file", f.age_passphrase_file, "encrypt and decrypt with the passphrase in FILE (scrypt)");
}

// A key file named by a flag: at most 1 MiB, read whole.
inline std::string read_key_file(const std::string& flag, const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) ltx::fail_errno(flag + " " + path);
  std::string s(1 << 20, '\0');
  size_t n = std::fread(&s[0], 1, s.size(), f);
  bool more = n == s.size() && std::fgetc(f) != EOF;
  std::fclose(f);
  if (more) ltx::fail(ltx::Kind::Usage, flag + " " + path + ": longer than 1 MiB");
  s.resize(n);
  return s;
}

// The age keys the flags (or WALSYNC_AGE_* variables) name; null for a plain replica.
inline std::shared_ptr<const ltx::age::Keys> age_keys(const Flags& f) {
  std::vector<std::string> recips = f.age_recipients;
  if (recips.empty())  // "age1...,age1..." (age recipients hold no comma)
    for (std::string v = env("WALSYNC_AGE_RECIPIENT"); !v.empty();) {
      size_t c = v.find(',');
      recips.push_back(v.substr(0, c));
      v = c == std::string::npos ? "" : v.substr(c + 1);
    }
  std::string rfile = !f.age_recipients_file.empty() ? f.age_recipients_file : env("WALSYNC_AGE_RECIPIENTS_FILE");
  std::string ifile = !f.age_identity.empty() ? f.age_identity : env("WALSYNC_AGE_IDENTITY_FILE");
  std::string pfile = !f.age_passphrase_file.empty() ? f.age_passphrase_file : env("WALSYNC_AGE_PASSPHRASE_FILE");
  if (recips.empty() && rfile.empty() && ifile.empty() && pfile.empty()) return nullptr;
  auto k = std::make_shared<ltx::age::Keys>();
  for (const auto& r : recips)
    k->recipients.push_back(ltx::with_context("--age-recipient", [&] { return ltx::age::parse_recipient(r); }));
  if (!rfile.empty()) {
    auto v = ltx::age::parse_recipients_text(read_key_file("--age-recipients-file", rfile), rfile);
    k->recipients.insert(k->recipients.end(), v.begin(), v.end());
  }
  if (!ifile.empty()) {
    k->identities = ltx::age::parse_identities_text(read_key_file("--age-identity", ifile), ifile);
    // Like `age -e -i`: with no recipient named, encrypt to the identities' own.
    if (k->recipients.empty() && pfile.empty())
      for (const auto& id : k->identities)
        k->recipients.push_back(ltx::age::parse_recipient(ltx::age::recipient_of(id)));
  }
  if (!pfile.empty()) {
    std::string p = read_key_file("--age-passphrase-file", pfile);
    p = p.substr(0, p.find('\n'));
    if (!p.empty() && p.back() == '\r') p.pop_back();
    if (p.empty()) ltx::fail(ltx::Kind::Usage, "--age-passphrase-file " + pfile + ": empty passphrase");
    if (!k->recipients.empty())
      ltx::fail(ltx::Kind::Usage, "--age-passphrase-file: a passphrase can't be combined with recipients");
    ltx::age::Key pk;
    pk.type = ltx::age::Key::Type::Passphrase;
    pk.passphrase = p;
    k->recipients.push_back(pk);
    k->identities.push_back(pk);
  }
  return k;
}

using cli::parse_size;

// The profile of the AWS shared files (AWS_PROFILE, default "default").
struct Profile {
  std::string name;
  std::map<std::string, std::string> keys;
  std::string get(const std::string& k) const {
    auto it = keys.find(k);
    return it == keys.end() ? "" : it->second;
  }
};

inline Profile profile() {
  Profile p;
  p.name = env("AWS_PROFILE");
  bool named = !p.name.empty();
  if (!named) p.name = "default";
  std::string home = env("HOME");
  std::string creds = env("AWS_SHARED_CREDENTIALS_FILE"), conf = env("AWS_CONFIG_FILE");
  if (creds.empty() && !home.empty()) creds = home + "/.aws/credentials";
  if (conf.empty() && !home.empty()) conf = home + "/.aws/config";
  bool found = false;
  p.keys = ltx::load_aws_profile(creds, conf, p.name, &found);
  if (named && !found) ltx::fail(ltx::Kind::Usage, "AWS_PROFILE " + p.name + ": no such profile in " + creds + " or " + conf);
  return p;
}

// An endpoint as the SDKs find it: AWS_ENDPOINT_URL_<SERVICE>, AWS_ENDPOINT_URL,
// the profile's services section, the profile's endpoint_url.
inline std::string service_endpoint(const char* env_service, const std::string& service, const Profile& p) {
  if (env("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS") == "true") return "";
  std::string e = env(env_service, "AWS_ENDPOINT_URL");
  if (e.empty()) e = p.get(service + ".endpoint_url");
  if (e.empty()) e = p.get("endpoint_url");
  return e;
}

// Every credential source of the chain, from flags and the environment.
inline ltx::CredentialChain chain(const Flags& f, const Profile& p, const std::string& region, const std::string& ca) {
  ltx::CredentialChain ch;
  ch.fixed.access_key = !f.access_key.empty() ? f.access_key : env("AWS_ACCESS_KEY_ID");
  ch.fixed.secret_key = !f.secret_key.empty() ? f.secret_key : env("AWS_SECRET_ACCESS_KEY");
  ch.fixed.session_token = !f.session_token.empty() ? f.session_token : env("AWS_SESSION_TOKEN");
  ch.fixed.source = !f.access_key.empty() ? "flags" : "environment";
  ch.web_identity_token_file = env("AWS_WEB_IDENTITY_TOKEN_FILE");
  ch.role_arn = env("AWS_ROLE_ARN");
  ch.role_session_name = env("AWS_ROLE_SESSION_NAME");
  ch.sts_endpoint = service_endpoint("AWS_ENDPOINT_URL_STS", "sts", p);
  if (ch.sts_endpoint.empty()) ch.sts_endpoint = "https://sts." + region + ".amazonaws.com";
  ch.profile_name = p.name;
  ch.profile = p.keys;
  std::string rel = env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
  ch.container_url = !rel.empty() ? "http://169.254.170.2" + rel : env("AWS_CONTAINER_CREDENTIALS_FULL_URI");
  ch.container_token_file = env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
  ch.container_token = env("AWS_CONTAINER_AUTHORIZATION_TOKEN");
  std::string off = env("AWS_EC2_METADATA_DISABLED");
  if (off != "true" && off != "TRUE" && off != "1") {
    ch.imds_endpoint = env("AWS_EC2_METADATA_SERVICE_ENDPOINT");
    if (ch.imds_endpoint.empty()) ch.imds_endpoint = "http://169.254.169.254";
    std::string t = env("AWS_METADATA_SERVICE_TIMEOUT");
    if (!t.empty()) {
      char* e = nullptr;
      long v = std::strtol(t.c_str(), &e, 10);
      if (*e || v < 1 || v > 60) ltx::fail(ltx::Kind::Usage, "AWS_METADATA_SERVICE_TIMEOUT " + t + ": want 1 to 60 seconds");
      ch.imds_timeout_s = v;
    }
  }
  ch.ca_bundle = ca;
  return ch;
}

inline ltx::S3Config config(const Flags& f, const ltx::Location& loc) {
  ltx::S3Config c;
  bool s3 = loc.scheme == ltx::Location::Scheme::S3;
  Profile p;
  if (s3) p = profile();
  c.endpoint = !f.endpoint.empty() ? f.endpoint : service_endpoint("AWS_ENDPOINT_URL_S3", "s3", p);
  c.region = !f.region.empty() ? f.region : env("AWS_REGION", "AWS_DEFAULT_REGION");
  if (c.region.empty()) c.region = p.get("region");
  if (c.region.empty()) c.region = "us-east-1";
  c.ca_bundle = !f.ca_bundle.empty() ? f.ca_bundle : env("AWS_CA_BUNDLE");
  if (c.ca_bundle.empty()) c.ca_bundle = p.get("ca_bundle");
  c.addressing = f.addressing == "path"      ? ltx::S3Config::Addressing::Path
                 : f.addressing == "virtual" ? ltx::S3Config::Addressing::Virtual
                                             : ltx::S3Config::Addressing::Auto;
  c.max_retries = f.retries;
  c.connect_timeout_s = f.connect_timeout;
  c.low_speed_time_s = f.timeout;
  c.max_keys = f.max_keys;
  std::string mlk = env("WALSYNC_S3_MAX_LIST_KEYS");
  if (!mlk.empty()) {
    c.max_list_keys = std::strtoull(mlk.c_str(), nullptr, 10);
    if (c.max_list_keys < 1 || mlk.find_first_not_of("0123456789") != std::string::npos)
      ltx::fail(ltx::Kind::Usage, "WALSYNC_S3_MAX_LIST_KEYS=" + mlk + ": want a positive number");
  }
  if (!f.part_size.empty()) {
    c.part_size = parse_size(f.part_size);
    if (c.part_size < (5u << 20)) ltx::fail(ltx::Kind::Usage, "--part-size " + f.part_size + ": want at least 5M");
  }
  c.age = age_keys(f);
  c.tmpdir = cli::tmpdir();
  if (f.verbose) c.log = [](const std::string& m) { cli::error(m); };
  // Tools holding sockets ignore SIGPIPE (curl uses CURLOPT_NOSIGNAL).
  ::signal(SIGPIPE, SIG_IGN);
  if (!s3) return c;
  c.credentials = ltx::chain_provider(chain(f, p, c.region, c.ca_bundle));
  c.credentials->log = c.log;
  try {
    c.credentials->get();  // fail now, not at the first request
  } catch (const ltx::Error& e) {
    ltx::fail(e.kind(), std::string(e.what()) + " (see walsync-credentials(7))");
  }
  return c;
}

}  // namespace s3cli
