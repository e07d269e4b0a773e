// credentials.cpp - the sources of the AWS default credential chain (static
// keys, STS web identity, shared-file profiles, credential_process, ECS/EKS
// container endpoint, EC2 IMDSv2) and the caching, refreshing provider.
#include "ltx/credentials.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "ltx/encode.h"
#include "ltx/error.h"
#include "ltx/ltx.h"
#include "ltx/store.h"

extern char** environ;

namespace ltx {

namespace {

constexpr size_t kMaxFile = 1 << 20;     // a shared config or credentials file
constexpr size_t kMaxField = 16 << 10;   // one key, secret or token (a header value)

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n"), e = s.find_last_not_of(" \t\r\n");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

std::string lower(std::string s) {
  for (auto& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// The whole of a small file; false if it does not exist.
bool read_small(const std::string& path, size_t max, std::string* out, const std::string& what) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return false;
    fail_errno(what + " " + path);
  }
  out->clear();
  char buf[8192];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      ::close(fd);
      errno = e;
      fail_errno(what + " " + path);
    }
    if (n == 0) break;
    if (out->size() + size_t(n) > max) {
      ::close(fd);
      fail_runtime(what + " " + path + ": larger than " + std::to_string(max) + " bytes");
    }
    out->append(buf, size_t(n));
  }
  ::close(fd);
  return true;
}

// A credential field must fit in an HTTP header: printable ASCII (spaces
// only where allowed, e.g. "Bearer X"), bounded.
void check_field(const std::string& v, const std::string& what, const std::string& name, bool spaces = false) {
  if (v.size() > kMaxField) fail_runtime(what + ": " + name + " longer than " + std::to_string(kMaxField) + " bytes");
  for (unsigned char c : v)
    if (c < (spaces ? 0x20 : 0x21) || c > 0x7e) fail_runtime(what + ": " + name + " holds a character that cannot be sent");
}

Credentials finish(Credentials c, const std::string& what) {
  if (c.access_key.empty() || c.secret_key.empty()) fail_runtime(what + ": no access key id or secret access key in the answer");
  check_field(c.access_key, what, "access key id");
  check_field(c.secret_key, what, "secret access key");
  check_field(c.session_token, what, "session token");
  c.source = what;
  return c;
}

int64_t expiry(const std::string& s, const std::string& what) {
  if (s.empty()) return 0;
  int64_t ms = 0;
  if (!parse_timestamp(s, &ms)) fail_runtime(what + ": Expiration is not an RFC 3339 time");
  return ms;
}

// ---- a flat JSON object: top-level string, number and boolean members ----
class Json {
 public:
  explicit Json(const std::string& s) : s_(s) {}
  // False on bad syntax; nested values are skipped (depth-bounded).
  bool parse(std::map<std::string, std::string>* out) {
    ws();
    if (!eat('{')) return false;
    ws();
    if (eat('}')) return tail();
    for (;;) {
      std::string k, v;
      ws();
      if (!str(&k)) return false;
      ws();
      if (!eat(':')) return false;
      ws();
      if (peek() == '"') {
        if (!str(&v)) return false;
        (*out)[k] = v;
      } else if (peek() == '{' || peek() == '[') {
        if (!skip(0)) return false;
      } else {
        size_t b = i_;
        while (i_ < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[i_])) || std::strchr("+-.", s_[i_]))) i_++;
        if (b == i_) return false;
        (*out)[k] = s_.substr(b, i_ - b);
      }
      ws();
      if (eat('}')) return tail();
      if (!eat(',')) return false;
    }
  }

 private:
  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  bool eat(char c) {
    if (peek() != c) return false;
    i_++;
    return true;
  }
  void ws() {
    while (i_ < s_.size() && std::strchr(" \t\r\n", s_[i_])) i_++;
  }
  bool tail() {
    ws();
    return i_ == s_.size();
  }
  bool str(std::string* out) {
    if (!eat('"')) return false;
    while (i_ < s_.size()) {
      char c = s_[i_++];
      if (c == '"') return true;
      if (c != '\\') {
        *out += c;
        continue;
      }
      if (i_ >= s_.size()) return false;
      char e = s_[i_++];
      switch (e) {
        case 'n': *out += '\n'; break;
        case 't': *out += '\t'; break;
        case 'r': *out += '\r'; break;
        case 'b': *out += '\b'; break;
        case 'f': *out += '\f'; break;
        case 'u': {
          if (i_ + 4 > s_.size()) return false;
          unsigned long cp = std::strtoul(s_.substr(i_, 4).c_str(), nullptr, 16);
          i_ += 4;
          *out += cp < 0x80 ? char(cp) : '?';  // credentials are ASCII
          break;
        }
        default: *out += e;
      }
    }
    return false;
  }
  bool skip(int depth) {
    if (depth > 16) return false;
    char open = s_[i_++], close = open == '{' ? '}' : ']';
    while (i_ < s_.size()) {
      char c = peek();
      if (c == close) {
        i_++;
        return true;
      }
      if (c == '"') {
        std::string ignored;
        if (!str(&ignored)) return false;
      } else if (c == '{' || c == '[') {
        if (!skip(depth + 1)) return false;
      } else {
        i_++;
      }
    }
    return false;
  }
  const std::string& s_;
  size_t i_ = 0;
};

std::map<std::string, std::string> json_object(const std::string& body, const std::string& what) {
  std::map<std::string, std::string> m;
  if (!Json(body).parse(&m)) fail_runtime(what + ": the answer is not a JSON object");
  return m;
}

Credentials from_json(const std::map<std::string, std::string>& m, const char* token_key, const std::string& what) {
  auto get = [&](const char* k) {
    auto it = m.find(k);
    return it == m.end() ? std::string() : it->second;
  };
  Credentials c;
  c.access_key = get("AccessKeyId");
  c.secret_key = get("SecretAccessKey");
  c.session_token = get(token_key);
  c.expires_ms = expiry(get("Expiration"), what);
  return finish(c, what);
}

// Text of <tag>...</tag> in an STS answer (its fields are base64 and times:
// no entities to decode).
std::string xml_text(const std::string& x, const std::string& tag) {
  std::string open = "<" + tag + ">", close = "</" + tag + ">";
  size_t a = x.find(open);
  if (a == std::string::npos) return "";
  a += open.size();
  size_t b = x.find(close, a);
  return b == std::string::npos ? "" : x.substr(a, b - a);
}

// ---- HTTP ----
struct Http {
  long status = 0;
  std::string body;
};

struct Sink {
  std::string* body;
  size_t max;
  bool over = false;
};

size_t on_body(char* p, size_t sz, size_t n, void* ud) {
  auto* s = static_cast<Sink*>(ud);
  if (s->body->size() + sz * n > s->max) {
    s->over = true;
    return 0;
  }
  s->body->append(p, sz * n);
  return sz * n;
}

// direct: never through an http_proxy (link-local endpoints, as the SDKs).
Http http(const CredentialChain& c, const std::string& method, const std::string& url,
          const std::vector<std::string>& headers, const std::string& body, long timeout_s,
          const std::string& what, bool direct = false) {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  CURL* h = curl_easy_init();
  if (!h) fail_runtime(what + ": curl_easy_init failed");
  Http r;
  Sink sink{&r.body, c.max_response};
  struct curl_slist* hl = nullptr;
  for (const auto& x : headers) hl = curl_slist_append(hl, x.c_str());
  hl = curl_slist_append(hl, "Expect:");
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
  if (direct) curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &sink);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, timeout_s);
  curl_easy_setopt(h, CURLOPT_TIMEOUT, timeout_s);
  if (!c.ca_bundle.empty()) curl_easy_setopt(h, CURLOPT_CAINFO, c.ca_bundle.c_str());
  if (method == "POST") {
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body.c_str());
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(body.size()));
  } else if (method != "GET") {
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method.c_str());
  }
  CURLcode rc = curl_easy_perform(h);
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r.status);
  curl_slist_free_all(hl);
  curl_easy_cleanup(h);
  // The URL is not secret (tokens travel in headers and bodies).
  if (sink.over) fail_runtime(what + ": answer larger than " + std::to_string(c.max_response) + " bytes (" + url + ")");
  if (rc != CURLE_OK) fail_runtime(what + ": " + curl_easy_strerror(rc) + " (" + method + " " + url + ")");
  return r;
}

void need_200(const Http& r, const std::string& what, const std::string& url) {
  if (r.status != 200) fail_runtime(what + ": HTTP " + std::to_string(r.status) + " from " + url);
}

// ---- the sources ----
Credentials web_identity(const CredentialChain& c, const std::string& token_file, const std::string& role_arn,
                         const std::string& session_name, const std::string& what) {
  std::string token;
  if (!read_small(token_file, kMaxField, &token, what + ": token file"))
    fail_runtime(what + ": token file " + token_file + ": No such file or directory");
  token = trim(token);
  if (token.empty()) fail_runtime(what + ": token file " + token_file + " is empty");
  std::string name = !session_name.empty() ? session_name : "walsync-" + std::to_string(now_ms());
  std::string form = "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=" + uri_encode(role_arn, false) +
                     "&RoleSessionName=" + uri_encode(name, false) + "&WebIdentityToken=" + uri_encode(token, false);
  Http r = http(c, "POST", c.sts_endpoint, {"Content-Type: application/x-www-form-urlencoded; charset=utf-8"}, form,
                c.timeout_s, what);
  if (r.status != 200) {
    std::string code = xml_text(r.body, "Code"), msg = xml_text(r.body, "Message");
    if (msg.size() > 200) msg = msg.substr(0, 200);
    fail_runtime(what + ": HTTP " + std::to_string(r.status) + " from " + c.sts_endpoint +
                 (code.empty() ? "" : ": " + code + ": " + msg));
  }
  Credentials cr;
  cr.access_key = xml_text(r.body, "AccessKeyId");
  cr.secret_key = xml_text(r.body, "SecretAccessKey");
  cr.session_token = xml_text(r.body, "SessionToken");
  cr.expires_ms = expiry(xml_text(r.body, "Expiration"), what);
  return finish(cr, what);
}

// http only to loopback or the link-local container hosts (as the SDKs).
void check_container_url(const std::string& url) {
  if (url.compare(0, 8, "https://") == 0) return;
  if (url.compare(0, 7, "http://") != 0) fail(Kind::Usage, "container credentials: " + url + ": not an http(s) URL");
  std::string rest = url.substr(7);
  std::string host;
  if (!rest.empty() && rest[0] == '[') host = rest.substr(1, rest.find(']') == std::string::npos ? 0 : rest.find(']') - 1);
  else host = rest.substr(0, rest.find_first_of(":/?"));
  host = lower(host);
  bool ok = host == "localhost" || host == "::1" || host == "169.254.170.2" || host == "169.254.170.23" ||
            host == "fd00:ec2::23" || host.compare(0, 4, "127.") == 0;
  if (!ok) fail(Kind::Usage, "container credentials: " + url + ": http only to a loopback address or the container endpoint (use https)");
}

Credentials container(const CredentialChain& c) {
  const std::string what = "container credentials";
  check_container_url(c.container_url);
  std::vector<std::string> hs;
  std::string auth = c.container_token;
  if (!c.container_token_file.empty()) {
    if (!read_small(c.container_token_file, kMaxField, &auth, what + ": token file"))
      fail_runtime(what + ": token file " + c.container_token_file + ": No such file or directory");
    auth = trim(auth);
  }
  if (!auth.empty()) {
    check_field(auth, what, "authorization token", true);
    hs.push_back("Authorization: " + auth);
  }
  Http r = http(c, "GET", c.container_url, hs, "", c.timeout_s, what, true);
  need_200(r, what, c.container_url);
  return from_json(json_object(r.body, what), "Token", what);
}

Credentials imds(const CredentialChain& c) {
  const std::string what = "instance metadata";
  std::string base = c.imds_endpoint;
  while (!base.empty() && base.back() == '/') base.pop_back();
  std::string u = base + "/latest/api/token";
  Http t = http(c, "PUT", u, {"X-aws-ec2-metadata-token-ttl-seconds: 21600"}, "", c.imds_timeout_s, what, true);
  need_200(t, what, u);
  std::string token = trim(t.body);
  check_field(token, what, "token");
  std::string hdr = "X-aws-ec2-metadata-token: " + token;
  u = base + "/latest/meta-data/iam/security-credentials/";
  Http role = http(c, "GET", u, {hdr}, "", c.imds_timeout_s, what, true);
  if (role.status == 404) fail_runtime(what + ": this instance has no IAM role (" + u + ")");
  need_200(role, what, u);
  std::string name = trim(role.body.substr(0, role.body.find('\n')));
  if (name.empty() || name.size() > 128 || name.find_first_of("/?#% ") != std::string::npos)
    fail_runtime(what + ": not a role name from " + u);
  u += name;
  Http r = http(c, "GET", u, {hdr}, "", c.imds_timeout_s, what, true);
  need_200(r, what, u);
  auto m = json_object(r.body, what);
  if (m.count("Code") && m["Code"] != "Success") fail_runtime(what + ": role " + name + ": Code " + m["Code"].substr(0, 64));
  return from_json(m, "Token", what);
}

// credential_process: sh -c CMD with stdin from /dev/null, stderr passed
// through; stdout (bounded) is JSON Version 1.
Credentials process(const CredentialChain& c, const std::string& cmd, const std::string& what) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) fail_errno(what + ": pipe");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, p[1], 1);
  posix_spawnattr_t at;
  posix_spawnattr_init(&at);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&at, &none);  // a watch blocks SIGTERM in its threads
  posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK);
  const char* argv[] = {"/bin/sh", "-c", cmd.c_str(), nullptr};
  pid_t pid = 0;
  int rc = posix_spawn(&pid, "/bin/sh", &fa, &at, const_cast<char**>(argv), environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&at);
  ::close(p[1]);
  if (rc != 0) {
    ::close(p[0]);
    errno = rc;
    fail_errno(what + ": spawn /bin/sh");
  }
  std::string out;
  std::string err;
  int64_t deadline = now_ms() + c.process_timeout_s * 1000;
  for (;;) {
    int64_t left = deadline - now_ms();
    if (left <= 0) {
      err = "no answer within " + std::to_string(c.process_timeout_s) + " s";
      break;
    }
    struct pollfd pf {p[0], POLLIN, 0};
    int n = ::poll(&pf, 1, int(std::min<int64_t>(left, 1000)));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) continue;
    char buf[4096];
    ssize_t k = ::read(p[0], buf, sizeof buf);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) break;
    if (out.size() + size_t(k) > c.max_response) {
      err = "output larger than " + std::to_string(c.max_response) + " bytes";
      break;
    }
    out.append(buf, size_t(k));
  }
  ::close(p[0]);
  if (!err.empty()) ::kill(pid, SIGKILL);
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  if (!err.empty()) fail_runtime(what + ": " + err);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
    fail_runtime(what + ": command failed (" +
                 (WIFEXITED(st) ? "exit status " + std::to_string(WEXITSTATUS(st)) : "signal " + std::to_string(WTERMSIG(st))) + ")");
  auto m = json_object(out, what);
  if (m["Version"] != "1") fail_runtime(what + ": the answer is not Version 1");
  return from_json(m, "SessionToken", what);
}

std::string get(const std::map<std::string, std::string>& m, const char* k) {
  auto it = m.find(k);
  return it == m.end() ? std::string() : it->second;
}

}  // namespace

// ---- shared files ----
IniSections parse_aws_ini(const std::string& text) {
  IniSections out;
  std::map<std::string, std::string>* cur = nullptr;
  std::string parent;  // "s3" while reading an indented subsection
  std::istringstream in(text);
  std::string raw;
  while (std::getline(in, raw)) {
    std::string line = trim(raw);
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    bool indented = raw[0] == ' ' || raw[0] == '\t';
    if (line[0] == '[') {
      size_t e = line.find(']');
      std::string name = trim(line.substr(1, e == std::string::npos ? std::string::npos : e - 1));
      cur = &out[name];
      parent.clear();
      continue;
    }
    if (!cur) continue;
    size_t eq = line.find('=');
    if (eq == std::string::npos) continue;
    std::string k = lower(trim(line.substr(0, eq))), v = trim(line.substr(eq + 1));
    if (indented && !parent.empty()) {
      (*cur)[parent + "." + k] = v;
      continue;
    }
    parent = v.empty() ? k : "";
    if (!v.empty()) (*cur)[k] = v;
  }
  return out;
}

std::map<std::string, std::string> load_aws_profile(const std::string& credentials_file,
                                                    const std::string& config_file,
                                                    const std::string& name, bool* found) {
  std::map<std::string, std::string> keys;
  *found = false;
  std::string text;
  IniSections cfg;
  if (!config_file.empty() && read_small(config_file, kMaxFile, &text, "config file")) cfg = parse_aws_ini(text);
  for (const std::string& sec : {name == "default" ? std::string("default") : "", "profile " + name}) {
    auto it = cfg.find(sec);
    if (sec.empty() || it == cfg.end()) continue;
    *found = true;
    for (const auto& kv : it->second) keys[kv.first] = kv.second;
  }
  if (!credentials_file.empty() && read_small(credentials_file, kMaxFile, &text, "credentials file")) {
    IniSections cr = parse_aws_ini(text);
    auto it = cr.find(name);
    if (it != cr.end()) {
      *found = true;
      for (const auto& kv : it->second) keys[kv.first] = kv.second;
    }
  }
  auto sv = keys.find("services");
  if (sv != keys.end()) {
    auto it = cfg.find("services " + sv->second);
    if (it != cfg.end())
      for (const auto& kv : it->second) keys.emplace(kv.first, kv.second);
  }
  return keys;
}

// ---- the chain ----
Credentials fetch_credentials(const CredentialChain& c) {
  if (!c.fixed.access_key.empty() && !c.fixed.secret_key.empty()) return finish(c.fixed, c.fixed.source);
  if (!c.web_identity_token_file.empty() && !c.role_arn.empty())
    return web_identity(c, c.web_identity_token_file, c.role_arn, c.role_session_name, "web identity");
  const auto& p = c.profile;
  std::string prof = "profile " + c.profile_name;
  if (!get(p, "aws_access_key_id").empty() && !get(p, "aws_secret_access_key").empty()) {
    Credentials cr;
    cr.access_key = get(p, "aws_access_key_id");
    cr.secret_key = get(p, "aws_secret_access_key");
    cr.session_token = get(p, "aws_session_token");
    return finish(cr, prof);
  }
  if (!get(p, "credential_process").empty())
    return process(c, get(p, "credential_process"), prof + ": credential_process");
  if (!get(p, "role_arn").empty()) {
    if (!get(p, "web_identity_token_file").empty())
      return web_identity(c, get(p, "web_identity_token_file"), get(p, "role_arn"), get(p, "role_session_name"),
                          prof + ": web identity");
    fail_runtime(prof + ": role_arn with source_profile or credential_source is not supported "
                 "(use credential_process = aws configure export-credentials --profile NAME --format process)");
  }
  if (!get(p, "sso_session").empty() || !get(p, "sso_start_url").empty())
    fail_runtime(prof + ": AWS SSO is not supported "
                 "(use credential_process = aws configure export-credentials --profile NAME --format process)");
  if (!c.container_url.empty()) return container(c);
  std::string tried = "none in the environment, web identity, " + prof + " or the container endpoint";
  if (c.imds_endpoint.empty()) fail_runtime("no credentials: " + tried + ", and instance metadata is disabled");
  try {
    return imds(c);
  } catch (const Error& e) {
    throw Error(e.kind(), "no credentials: " + tried + ", and " + e.what());
  }
}

CredentialProvider::CredentialProvider(Fetch fetch, Clock clock, int64_t refresh_before_ms, int64_t retry_ms)
    : fetch_(std::move(fetch)),
      clock_(clock ? std::move(clock) : Clock(now_ms)),
      refresh_before_ms_(refresh_before_ms),
      retry_ms_(retry_ms) {}

Credentials CredentialProvider::get() {
  std::lock_guard<std::mutex> lk(mu_);
  int64_t now = clock_();
  if (have_ && (cur_.expires_ms == 0 || now < cur_.expires_ms - refresh_before_ms_)) return cur_;
  if (have_ && now < next_try_ms_ && now < cur_.expires_ms) return cur_;
  try {
    Credentials c = fetch_();
    if (log)
      log(std::string("credentials: ") + (have_ ? "refreshed from " : "from ") + c.source +
          (c.expires_ms ? ", expire " + format_timestamp(c.expires_ms) : ""));
    cur_ = c;
    have_ = true;
    next_try_ms_ = 0;
  } catch (const Error& e) {
    if (!have_ || now >= cur_.expires_ms) throw;
    next_try_ms_ = now + retry_ms_;
    if (log) log(std::string("credentials: refresh failed, using the current ones until ") +
                 format_timestamp(cur_.expires_ms) + ": " + e.what());
  }
  return cur_;
}

std::shared_ptr<CredentialProvider> chain_provider(const CredentialChain& c) {
  return std::make_shared<CredentialProvider>([c] { return fetch_credentials(c); });
}

}  // namespace ltx
