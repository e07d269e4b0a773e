// store.h - object stores: S3 (SigV4 over libcurl) and a local directory.
//
// A Store maps keys ("app/0000/0000000000000001-0000000000000001.ltx") to
// byte objects. Keys never start with '/'. The S3 store is one bucket; the
// file store is rooted at "/" (keys are absolute paths without the slash).
//
// Mechanism only: no printing, no environment. Tools read flags and the AWS
// environment and fill S3Config (credentials.h: the credential chain). Errors throw ltx::Error (Runtime for I/O,
// network, auth and remote errors), with the S3 error Code and Message:
// "put app/0000/...ltx: SignatureDoesNotMatch: The request signature ...".
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ltx/age.h"
#include "ltx/credentials.h"
#include "ltx/io.h"

namespace ltx {

using Metadata = std::map<std::string, std::string>;  // lowercase names, no x-amz-meta-

struct ObjectInfo {
  std::string key;
  uint64_t size = 0;
  int64_t mtime_ms = 0;  // S3 LastModified, or the file's mtime
  std::string etag;
  Metadata meta;         // filled by head() only
};

class Store {
 public:
  virtual ~Store() = default;
  // Stores the whole of body under key, or nothing: S3 single PUT (one
  // part-size buffer) or multipart upload (aborted on failure); files via
  // temp + fsync + rename. A metadata "litestream-timestamp" (RFC 3339) also
  // sets the file store's mtime.
  virtual void put(const std::string& key, Reader& body, const Metadata& meta = {}) = 0;
  // The same for bytes [0, size) of an open file: S3 reads each request's
  // body from the file (hash pass, then send), so no part is held in memory.
  virtual void put_file(const std::string& key, int fd, uint64_t size, const Metadata& meta = {});
  // Streams bytes [offset, offset+length) (length < 0: to the end) to out.
  // A retried transfer resumes at the byte count already delivered: out
  // never receives a byte twice. Returns the bytes written.
  virtual uint64_t get(const std::string& key, Writer& out, uint64_t offset = 0,
                       int64_t length = -1) = 0;
  // The last n bytes of an object (n <= its size), e.g. an LTX trailer.
  virtual std::string get_tail(const std::string& key, size_t n) = 0;
  // Every key starting with prefix, in key order (ListObjectsV2 pages).
  // With start_after, only keys sorting after it (ListObjectsV2
  // "start-after"): a poll for new keys past a known one is one small
  // request that returns an empty page while nothing changes.
  virtual std::vector<ObjectInfo> list(const std::string& prefix, const std::string& start_after = "") = 0;
  // Multipart uploads begun under prefix and neither completed nor aborted
  // (S3 ListMultipartUploads); the file store has none.
  struct Upload {
    std::string key, upload_id;
    int64_t initiated_ms = 0;
  };
  virtual std::vector<Upload> list_uploads(const std::string& prefix) { (void)prefix; return {}; }
  // False if the key does not exist.
  virtual bool head(const std::string& key, ObjectInfo* info) = 0;
  // True when objects are sealed envelopes (age): their listed size is
  // the envelope's, not the payload's, and truncation is caught by the
  // envelope's authentication instead of by comparing sizes.
  virtual bool sealed() const { return false; }
  // Payload bytes of key, an object listed with `listed` bytes.
  virtual uint64_t payload_size(const std::string& key, uint64_t listed) {
    (void)key;
    return listed;
  }
  // Deletes keys (missing keys are not an error); S3 batches <= 1000 a request.
  virtual void remove(const std::vector<std::string>& keys) = 0;
};

// Requests by the kinds S3 bills (GET includes HEAD), summed over the
// CountingStores that share it: atomic, as a metrics thread reads while
// uploads count.
struct RequestCounts {
  std::atomic<uint64_t> put{0}, get{0}, list{0}, del{0};
};

// A Store that forwards to another and counts its requests: one per call,
// except that a listing counts one LIST per page of 1000 keys and a delete
// one DELETE per batch of 1000 keys. A multipart upload counts as one PUT
// (it is two requests more than its parts), retries are not counted. The one
// place where requests are counted (s3-compact, s3-retain, walsync watch).
class CountingStore : public Store {
 public:
  // sink, if given, also receives every count (it must outlive this store).
  explicit CountingStore(Store& s, RequestCounts* sink = nullptr) : s_(s), sink_(sink) {}
  void put(const std::string& key, Reader& body, const Metadata& meta = {}) override {
    count(puts, &RequestCounts::put);
    s_.put(key, body, meta);
  }
  void put_file(const std::string& key, int fd, uint64_t size, const Metadata& meta = {}) override {
    count(puts, &RequestCounts::put);
    s_.put_file(key, fd, size, meta);
  }
  uint64_t get(const std::string& key, Writer& out, uint64_t offset = 0, int64_t length = -1) override {
    count(gets, &RequestCounts::get);
    return s_.get(key, out, offset, length);
  }
  std::string get_tail(const std::string& key, size_t n) override {
    count(gets, &RequestCounts::get);
    return s_.get_tail(key, n);
  }
  std::vector<ObjectInfo> list(const std::string& prefix, const std::string& start_after = "") override {
    auto r = s_.list(prefix, start_after);
    count(lists, &RequestCounts::list, pages(r.size()));
    return r;
  }
  std::vector<Upload> list_uploads(const std::string& prefix) override {
    auto r = s_.list_uploads(prefix);
    count(lists, &RequestCounts::list, pages(r.size()));
    return r;
  }
  bool head(const std::string& key, ObjectInfo* info) override {
    count(heads, &RequestCounts::get);
    return s_.head(key, info);
  }
  bool sealed() const override { return s_.sealed(); }
  uint64_t payload_size(const std::string& key, uint64_t listed) override { return s_.payload_size(key, listed); }
  void remove(const std::vector<std::string>& keys) override {
    count(removes, &RequestCounts::del, (keys.size() + 999) / 1000);
    s_.remove(keys);
  }
  // "1 LIST, 3 GET, 1 PUT, 0 HEAD, 0 DELETE".
  std::string summary() const {
    return std::to_string(lists) + " LIST, " + std::to_string(gets) + " GET, " + std::to_string(puts) + " PUT, " +
           std::to_string(heads) + " HEAD, " + std::to_string(removes) + " DELETE";
  }
  uint64_t lists = 0, gets = 0, puts = 0, heads = 0, removes = 0;

 private:
  static uint64_t pages(size_t n) { return n == 0 ? 1 : (uint64_t(n) + 999) / 1000; }
  void count(uint64_t& mine, std::atomic<uint64_t> RequestCounts::*kind, uint64_t n = 1) {
    mine += n;
    if (sink_) (sink_->*kind) += n;
  }
  Store& s_;
  RequestCounts* sink_;
};

struct S3Config {
  std::string endpoint;        // "http://127.0.0.1:18080"; empty: https://s3.REGION.amazonaws.com
  std::string region = "us-east-1";
  std::string access_key, secret_key, session_token;
  // Asked before signing each request (it refreshes expiring credentials);
  // null: the three fields above.
  std::shared_ptr<CredentialProvider> credentials;
  std::string ca_bundle;       // PEM file; empty: the system default
  enum class Addressing { Auto, Path, Virtual } addressing = Addressing::Auto;
  bool insecure = false;       // disable TLS verification (never by default)
  uint64_t part_size = 8u << 20;  // multipart above this; >= 5 MiB on AWS
  int max_keys = 1000;            // ListObjectsV2 page size
  int max_retries = 5;            // attempts after the first
  int backoff_ms = 200;           // first backoff; doubles, capped, full jitter
  int max_backoff_ms = 5000;
  long connect_timeout_s = 10;
  // Every request is abandoned (a transient failure, retried) when no byte
  // moved for this long, when it moved under 1 KiB/s over this long, or, for
  // a request that carries no object data (listing page, HEAD, DELETE,
  // multipart control, object tail), when it took this long in all.
  long low_speed_time_s = 30;
  // A listing (ListObjectsV2, ListMultipartUploads) longer than this many
  // keys is refused, as is a repeated continuation token or a key out of order.
  uint64_t max_list_keys = 1000000;
  // Replicas encrypted with age (every object body an age file); null:
  // plain. open_store() wraps the store; tmpdir takes sealed spools.
  std::shared_ptr<const age::Keys> age;
  std::string tmpdir = "/tmp";
  // Progress/retry notes ("retry 2/5 after 400 ms: HTTP 503 ..."); may be null.
  std::function<void(const std::string&)> log;
};

// Where a URL points. s3://bucket/prefix -> {S3, bucket, "prefix"};
// file:///dir/x -> {File, "", "dir/x"} (no leading or trailing '/').
struct Location {
  enum class Scheme { S3, File } scheme = Scheme::File;
  std::string bucket;
  std::string path;
  std::string url;  // as given
};
// Throws Kind::Usage on a malformed URL.
// A "?" anywhere is refused: a query has no meaning here.
Location parse_url(const std::string& url);
// "a" + "b" -> "a/b"; empty parts are skipped.
std::string join_key(const std::string& a, const std::string& b);

std::unique_ptr<Store> open_s3_store(const std::string& bucket, const S3Config& cfg);
std::unique_ptr<Store> open_file_store();
// The store of loc; with cfg.age, wrapped by open_age_store.
std::unique_ptr<Store> open_store(const Location& loc, const S3Config& cfg);
// Every body put is encrypted to keys.recipients, every body read is
// decrypted with keys.identities (age.h). Ranged reads and tails fetch the
// header once per object (cached) and only the 64 KiB chunks they need.
std::unique_ptr<Store> open_age_store(std::unique_ptr<Store> inner, std::shared_ptr<const age::Keys> keys,
                                      const std::string& tmpdir);

// ---- SigV4 (sigv4.cpp), exposed for unit tests ----
std::string sha256_hex(const void* p, size_t n);
// SHA-256 of bytes [off, off+n) of fd, read in 64 KiB chunks.
std::string sha256_hex_fd(int fd, uint64_t off, uint64_t n);
std::string hmac_sha256(const std::string& key, const std::string& msg);
// RFC 3986 unreserved kept; everything else %XX (uppercase). keep_slash for paths.
std::string uri_encode(const std::string& s, bool keep_slash);
struct SigV4Request {
  std::string method, host, path;  // path already uri-encoded
  std::vector<std::pair<std::string, std::string>> query;  // raw (unencoded)
  std::vector<std::pair<std::string, std::string>> headers;  // extra headers to sign
  std::string payload_hash;  // hex sha256 of the body
};
// Returns the headers to send (host excluded): x-amz-date,
// x-amz-content-sha256, x-amz-security-token, Authorization, plus req.headers.
// amz_date is "YYYYMMDDTHHMMSSZ".
std::vector<std::pair<std::string, std::string>> sigv4_sign(
    const SigV4Request& req, const std::string& amz_date, const std::string& region,
    const std::string& access_key, const std::string& secret_key,
    const std::string& session_token);
// ---- S3 responses (s3.cpp), exposed for unit and fuzz tests ----
// Every parser is bounded by its input and throws ltx::Error (Runtime) on a
// response it cannot use.
struct ListPage {
  std::vector<ObjectInfo> objects;  // keys decoded (EncodingType url)
  bool truncated = false;
  std::string next_token;
};
ListPage parse_list_page(const std::string& xml);
struct UploadsPage {
  std::vector<Store::Upload> uploads;
  bool truncated = false;
  std::string next_key, next_upload_id;
};
UploadsPage parse_uploads_page(const std::string& xml);
// "bytes FIRST-LAST/TOTAL" (TOTAL may be "*"; then *total is UINT64_MAX).
bool parse_content_range(const std::string& v, uint64_t* first, uint64_t* last, uint64_t* total);
// "Code: Message" of an S3 <Error> body (Message shortened to 512 bytes);
// empty if the body is not one.
std::string parse_error_body(const std::string& xml);
// %XX and '+' (a space) decoded, as S3 encodes keys for encoding-type=url.
std::string url_decode(const std::string& s);

// The query string exactly as signed: sorted, encoded, "k=v&..." ("uploads=").
std::string canonical_query(const std::vector<std::pair<std::string, std::string>>& q);

}  // namespace ltx
