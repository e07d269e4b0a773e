// sigv4.cpp - AWS Signature Version 4 for S3 (libcrypto SHA-256/HMAC).
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <cctype>
#include <memory>
#include <vector>

#include "ltx/error.h"
#include "ltx/io.h"
#include "ltx/store.h"

namespace ltx {

static std::string to_hex(const unsigned char* p, size_t n) {
  static const char* d = "0123456789abcdef";
  std::string s(n * 2, '0');
  for (size_t i = 0; i < n; i++) {
    s[2 * i] = d[p[i] >> 4];
    s[2 * i + 1] = d[p[i] & 15];
  }
  return s;
}

std::string sha256_hex(const void* p, size_t n) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!EVP_Digest(p, n, md, &len, EVP_sha256(), nullptr)) fail_runtime("sha256 failed");
  return to_hex(md, len);
}

std::string sha256_hex_fd(int fd, uint64_t off, uint64_t n) {
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!ctx || !EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr)) fail_runtime("sha256 failed");
  std::vector<uint8_t> buf(64 * 1024);
  for (uint64_t done = 0; done < n;) {
    size_t k = pread_full(fd, buf.data(), size_t(std::min<uint64_t>(buf.size(), n - done)), off + done);
    if (k == 0) fail_runtime("sha256: file shorter than expected");
    if (!EVP_DigestUpdate(ctx.get(), buf.data(), k)) fail_runtime("sha256 failed");
    done += k;
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!EVP_DigestFinal_ex(ctx.get(), md, &len)) fail_runtime("sha256 failed");
  return to_hex(md, len);
}

std::string hmac_sha256(const std::string& key, const std::string& msg) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!HMAC(EVP_sha256(), key.data(), int(key.size()),
            reinterpret_cast<const unsigned char*>(msg.data()), msg.size(), md, &len))
    fail_runtime("hmac-sha256 failed");
  return std::string(reinterpret_cast<char*>(md), len);
}

std::string uri_encode(const std::string& s, bool keep_slash) {
  static const char* d = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size() * 3);
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || (keep_slash && c == '/')) {
      out += char(c);
    } else {
      out += '%';
      out += d[c >> 4];
      out += d[c & 15];
    }
  }
  return out;
}

std::string canonical_query(const std::vector<std::pair<std::string, std::string>>& q) {
  std::vector<std::pair<std::string, std::string>> enc;
  for (auto& kv : q) enc.emplace_back(uri_encode(kv.first, false), uri_encode(kv.second, false));
  std::sort(enc.begin(), enc.end());
  std::string s;
  for (auto& kv : enc) {
    if (!s.empty()) s += '&';
    s += kv.first + "=" + kv.second;
  }
  return s;
}

static std::string trim(const std::string& v) {
  size_t a = v.find_first_not_of(" \t"), b = v.find_last_not_of(" \t");
  return a == std::string::npos ? "" : v.substr(a, b - a + 1);
}

std::vector<std::pair<std::string, std::string>> sigv4_sign(
    const SigV4Request& req, const std::string& amz_date, const std::string& region,
    const std::string& access_key, const std::string& secret_key,
    const std::string& session_token) {
  std::vector<std::pair<std::string, std::string>> send = req.headers;
  send.emplace_back("x-amz-date", amz_date);
  send.emplace_back("x-amz-content-sha256", req.payload_hash);
  if (!session_token.empty()) send.emplace_back("x-amz-security-token", session_token);

  std::vector<std::pair<std::string, std::string>> canon;
  canon.emplace_back("host", req.host);
  for (auto& h : send) {
    std::string k = h.first;
    std::transform(k.begin(), k.end(), k.begin(), [](unsigned char c) { return std::tolower(c); });
    canon.emplace_back(k, trim(h.second));
  }
  std::sort(canon.begin(), canon.end());
  std::string canon_headers, signed_headers;
  for (auto& h : canon) {
    canon_headers += h.first + ":" + h.second + "\n";
    if (!signed_headers.empty()) signed_headers += ';';
    signed_headers += h.first;
  }
  std::string creq = req.method + "\n" + req.path + "\n" + canonical_query(req.query) + "\n" +
                     canon_headers + "\n" + signed_headers + "\n" + req.payload_hash;
  std::string day = amz_date.substr(0, 8);
  std::string scope = day + "/" + region + "/s3/aws4_request";
  std::string sts = "AWS4-HMAC-SHA256\n" + amz_date + "\n" + scope + "\n" +
                    sha256_hex(creq.data(), creq.size());
  std::string k = hmac_sha256("AWS4" + secret_key, day);
  k = hmac_sha256(k, region);
  k = hmac_sha256(k, "s3");
  k = hmac_sha256(k, "aws4_request");
  std::string sig = hmac_sha256(k, sts);
  send.emplace_back("Authorization",
                    "AWS4-HMAC-SHA256 Credential=" + access_key + "/" + scope +
                        ", SignedHeaders=" + signed_headers + ", Signature=" +
                        to_hex(reinterpret_cast<const unsigned char*>(sig.data()), sig.size()));
  return send;
}

}  // namespace ltx
