// credentials.h - AWS credentials: the sources of the SDKs' default chain,
// and a provider that refreshes temporary credentials before they expire.
//
// Mechanism only: the caller says where to look (flags and environment are
// read by the tools, tools/s3common.h); the library reads the named files,
// asks the named endpoints and runs the named command. Errors throw
// ltx::Error (Runtime) and never contain a secret (no key, token or body of
// a credential response is ever put in a message).
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace ltx {

struct Credentials {
  std::string access_key, secret_key, session_token;
  int64_t expires_ms = 0;  // Unix ms; 0: never expires
  std::string source;      // where they came from: "environment", "profile prod", "container", ...
};

// ---- shared files (~/.aws/credentials, ~/.aws/config) ----
// Sections of an AWS INI file: "[default]", "[profile prod]", "[services s3]"
// -> their keys. A key with an empty value followed by indented "k = v"
// lines is a subsection: "s3 =" then "  endpoint_url = X" gives "s3.endpoint_url".
using IniSections = std::map<std::string, std::map<std::string, std::string>>;
IniSections parse_aws_ini(const std::string& text);

// The keys of profile NAME: config file "[profile NAME]" ("[default]" for
// default), overridden by the credentials file "[NAME]". Missing files are
// empty. With "services = X", the "[services X]" keys for s3 are merged as
// "s3.endpoint_url". *found says whether any file has the profile.
std::map<std::string, std::string> load_aws_profile(const std::string& credentials_file,
                                                    const std::string& config_file,
                                                    const std::string& name, bool* found);

// ---- the chain ----
// Every source, in the order tried; the first one that is configured
// (without contacting anything) is the one used, as the SDKs do.
struct CredentialChain {
  Credentials fixed;  // flags, then environment: used when both keys are set
  // STS AssumeRoleWithWebIdentity (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN).
  std::string web_identity_token_file, role_arn, role_session_name;
  std::string sts_endpoint;  // "https://sts.REGION.amazonaws.com" or a test server
  // The profile's keys (load_aws_profile): aws_access_key_id/secret/session
  // token, credential_process, or role_arn + web_identity_token_file.
  std::string profile_name;
  std::map<std::string, std::string> profile;
  // ECS/EKS container credentials: a full URL (http only to a loopback or
  // the link-local container hosts, else https) and an Authorization value,
  // or a file holding it (read at every fetch: it rotates).
  std::string container_url, container_token, container_token_file;
  // EC2 instance metadata (IMDSv2); empty: disabled.
  std::string imds_endpoint;
  std::string ca_bundle;               // for the https endpoints above
  long timeout_s = 5;                  // each request to a credential endpoint
  long imds_timeout_s = 1;             // IMDS: also the connect bound (off EC2 it does not answer)
  long process_timeout_s = 60;         // credential_process: killed after this
  size_t max_response = 64 << 10;      // bound on any credential response or process output
};

// One fetch from the first configured source of the chain (no caching).
// "no credentials: ..." when nothing is configured and IMDS is disabled.
Credentials fetch_credentials(const CredentialChain& c);

// Caches credentials and fetches new ones when the cached ones are within
// refresh_before_ms of their expiry. If a refresh fails while the cached
// ones are still valid, they are kept (the failure is logged) and the next
// refresh is tried retry_ms later. Thread-safe: the stores of a watch share
// one provider.
class CredentialProvider {
 public:
  using Fetch = std::function<Credentials()>;
  using Clock = std::function<int64_t()>;  // Unix ms
  explicit CredentialProvider(Fetch fetch, Clock clock = nullptr, int64_t refresh_before_ms = 5 * 60 * 1000,
                              int64_t retry_ms = 10 * 1000);
  Credentials get();
  // Refresh notes ("credentials: refreshed from container, expire ..."); may be null.
  std::function<void(const std::string&)> log;

 private:
  Fetch fetch_;
  Clock clock_;
  int64_t refresh_before_ms_, retry_ms_;
  std::mutex mu_;
  bool have_ = false;
  Credentials cur_;
  int64_t next_try_ms_ = 0;
};

std::shared_ptr<CredentialProvider> chain_provider(const CredentialChain& c);

}  // namespace ltx
