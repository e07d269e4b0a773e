// s3.cpp - an S3 client on one reused libcurl handle: SigV4, retries with
// capped exponential backoff and jitter (uniform in [cap/2, cap]), resumable ranged GET,
// multipart upload with one part-size buffer, ListObjectsV2, DeleteObjects.
#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <exception>
#include <functional>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "ltx/error.h"
#include "ltx/io.h"
#include "ltx/store.h"

namespace ltx {

namespace {

using Headers = std::vector<std::pair<std::string, std::string>>;

std::string lower(std::string s) {
  for (auto& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Text of the first <tag>...</tag> at or after *pos; advances *pos past it.
bool xml_tag(const std::string& x, const std::string& tag, std::string* out, size_t* pos = nullptr) {
  size_t from = pos ? *pos : 0;
  std::string open = "<" + tag + ">", close = "</" + tag + ">";
  size_t a = x.find(open, from);
  if (a == std::string::npos) return false;
  a += open.size();
  size_t b = x.find(close, a);
  if (b == std::string::npos) return false;
  *out = x.substr(a, b - a);
  if (pos) *pos = b + close.size();
  return true;
}

std::string xml_unescape(const std::string& s) {
  std::string o;
  for (size_t i = 0; i < s.size(); i++) {
    if (s[i] != '&') { o += s[i]; continue; }
    size_t e = s.find(';', i);
    if (e == std::string::npos) { o += s[i]; continue; }
    std::string ent = s.substr(i + 1, e - i - 1);
    if (ent == "amp") o += '&';
    else if (ent == "lt") o += '<';
    else if (ent == "gt") o += '>';
    else if (ent == "quot") o += '"';
    else if (ent == "apos") o += '\'';
    else if (!ent.empty() && ent[0] == '#') {
      unsigned long cp = ent.size() > 1 && (ent[1] == 'x' || ent[1] == 'X')
                             ? std::strtoul(ent.c_str() + 2, nullptr, 16)
                             : std::strtoul(ent.c_str() + 1, nullptr, 10);
      if (cp < 0x80) o += char(cp);
      else if (cp < 0x800) { o += char(0xC0 | (cp >> 6)); o += char(0x80 | (cp & 0x3F)); }
      else if (cp < 0x10000) {
        o += char(0xE0 | (cp >> 12)); o += char(0x80 | ((cp >> 6) & 0x3F)); o += char(0x80 | (cp & 0x3F));
      } else {
        o += char(0xF0 | (cp >> 18)); o += char(0x80 | ((cp >> 12) & 0x3F));
        o += char(0x80 | ((cp >> 6) & 0x3F)); o += char(0x80 | (cp & 0x3F));
      }
    } else { o += s.substr(i, e - i + 1); }
    i = e;
  }
  return o;
}

std::string xml_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      case '\'': o += "&apos;"; break;
      default: o += c;
    }
  }
  return o;
}

// "2024-01-02T03:04:05.678Z" -> ms; 0 if unparsable.
int64_t parse_iso(const std::string& s) {
  struct tm tm {};
  const char* rest = strptime(s.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
  if (!rest) return 0;
  int64_t ms = int64_t(timegm(&tm)) * 1000;
  if (*rest == '.') {
    int64_t frac = 0, scale = 100;
    for (rest++; *rest >= '0' && *rest <= '9'; rest++, scale /= 10) frac += (*rest - '0') * scale;
    ms += frac;
  }
  return ms;
}

// "Tue, 02 Jan 2024 03:04:05 GMT" -> ms; 0 if unparsable.
int64_t parse_http_date(const std::string& s) {
  struct tm tm {};
  if (!strptime(s.c_str(), "%a, %d %b %Y %H:%M:%S", &tm)) return 0;
  return int64_t(timegm(&tm)) * 1000;
}

std::string base64(const unsigned char* p, size_t n) {
  std::string o(4 * ((n + 2) / 3) + 1, '\0');
  int k = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(&o[0]), p, int(n));
  o.resize(size_t(k));
  return o;
}

std::string md5_base64(const std::string& s) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(s.data(), s.size(), md, &len, EVP_md5(), nullptr);
  return base64(md, len);
}

// The <Code> of an S3 <Error> body, or "".
std::string error_code(const std::string& body) {
  std::string code;
  if (body.find("<Error") == std::string::npos || !xml_tag(body, "Code", &code)) return "";
  return xml_unescape(code);
}

void curl_init_once() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct Request {
  std::string method = "GET";
  std::string key;    // empty: the bucket
  std::vector<std::pair<std::string, std::string>> query;
  Headers headers;    // signed (x-amz-*, range, content-md5)
  const uint8_t* body = nullptr;
  size_t body_len = 0;
  int body_fd = -1;              // else: the body is bytes [body_off, +body_len) of this file
  uint64_t body_off = 0;
  Writer* sink = nullptr;        // 2xx body goes here (GET), else into Response::body
  uint64_t range_start = 0;      // for sink GETs: first byte wanted
  int64_t range_len = -1;        // -1: to the end
  std::string raw_range;         // e.g. "bytes=-16" (no resume)
  size_t tail = 0;               // with raw_range: keep only the last `tail` bytes of a 200
  bool patient = false;          // no overall deadline, no rate floor (CompleteMultipartUpload)
  bool on_signal_too = false;    // runs although a signal is pending (abort on the way out)
};

struct Response {
  long status = 0;
  std::map<std::string, std::string> headers;  // lowercase names
  std::string body;
};

// One transfer's state, shared with the curl callbacks.
struct Xfer {
  CURL* h;
  Response* resp;
  Writer* sink;
  uint64_t want_start = 0; // first byte asked for with Range
  int64_t want_len = -1;   // bytes wanted this attempt; -1: to the end
  bool enough = false;     // want_len delivered: the rest of a 200 is not needed
  std::string range_err;   // the server answered another range than asked
  size_t tail = 0;
  bool skip_set = false;
  uint64_t skip = 0;       // bytes to drop (server ignored our Range)
  uint64_t delivered = 0;  // bytes handed to sink this attempt
  std::exception_ptr sink_err;
  const uint8_t* body;
  size_t body_len, body_pos = 0;
  int body_fd = -1;
  uint64_t body_off = 0;
  long stall_s = 30;        // abort when no byte moves for this long
  curl_off_t last_bytes = -1;
  std::chrono::steady_clock::time_point last_move;
  bool stalled = false;
  bool paced = true;        // under 1 KiB/s over stall_s: too slow
  curl_off_t win_bytes = 0;
  std::chrono::steady_clock::time_point win_start;
  bool slow = false;
  bool has_deadline = false;  // the whole request within stall_s
  std::chrono::steady_clock::time_point deadline;
  bool timed_out = false;
  bool on_signal_too = false;
  bool interrupted = false;
};

constexpr curl_off_t kMinRate = 1024;  // bytes/s a transfer must average

// Stall detection: curl's LOW_SPEED averages over a window and reacts late
// after a burst; this aborts when no byte moved for stall_s seconds.
// It also enforces the rate floor, the deadline of a control request, and a
// pending signal.
int on_progress(void* ud, curl_off_t, curl_off_t dlnow, curl_off_t, curl_off_t ulnow) {
  auto* x = static_cast<Xfer*>(ud);
  auto now = std::chrono::steady_clock::now();
  if (!x->on_signal_too && signal_pending()) {
    x->interrupted = true;
    return 1;
  }
  if (x->has_deadline && now > x->deadline) {
    x->timed_out = true;
    return 1;
  }
  if (x->paced && now - x->win_start >= std::chrono::seconds(x->stall_s)) {
    if (dlnow + ulnow - x->win_bytes < kMinRate * x->stall_s) {
      x->slow = true;
      return 1;
    }
    x->win_bytes = dlnow + ulnow;
    x->win_start = now;
  }
  if (dlnow + ulnow != x->last_bytes) {
    x->last_bytes = dlnow + ulnow;
    x->last_move = now;
    return 0;
  }
  if (now - x->last_move > std::chrono::seconds(x->stall_s)) {
    x->stalled = true;
    return 1;
  }
  return 0;
}

size_t on_header(char* p, size_t sz, size_t n, void* ud) {
  auto* x = static_cast<Xfer*>(ud);
  std::string line(p, sz * n);
  while (!line.empty() && (line.back() == '\r' || line.back() == '\n')) line.pop_back();
  if (line.compare(0, 5, "HTTP/") == 0) {
    x->resp->headers.clear();
    size_t sp = line.find(' ');
    x->resp->status = sp == std::string::npos ? 0 : std::strtol(line.c_str() + sp + 1, nullptr, 10);
  } else {
    size_t c = line.find(':');
    if (c != std::string::npos) {
      size_t v = line.find_first_not_of(' ', c + 1);
      x->resp->headers[lower(line.substr(0, c))] = v == std::string::npos ? "" : line.substr(v);
    }
  }
  return sz * n;
}

size_t on_write(char* p, size_t sz, size_t n, void* ud) {
  auto* x = static_cast<Xfer*>(ud);
  size_t len = sz * n;
  long st = x->resp->status;
  if (x->sink && (st == 200 || st == 206)) {
    size_t off = 0;
    if (!x->skip_set) {
      x->skip_set = true;
      if (st == 200) {
        x->skip = x->want_start;  // the server ignored Range: drop the bytes before it
      } else {
        // The range the server says it sent must start where we asked.
        std::string cr = x->resp->headers["content-range"];
        uint64_t first = 0, last = 0, total = 0;
        if (!parse_content_range(cr, &first, &last, &total) || first != x->want_start) {
          x->range_err = "asked for bytes from " + std::to_string(x->want_start) + ", the server answered 206 with " +
                         (cr.empty() ? std::string("no Content-Range") : "Content-Range: " + cr);
          return 0;
        }
      }
    }
    if (x->skip) {
      off = size_t(std::min<uint64_t>(x->skip, len));
      x->skip -= off;
    }
    size_t k = len - off;
    if (x->want_len >= 0 && x->delivered + k > uint64_t(x->want_len)) {
      k = size_t(uint64_t(x->want_len) - x->delivered);  // more than asked: the rest is not ours
      x->enough = true;
    }
    try {
      // Time blocked on the sink (a slow reader downstream) is not the server's.
      auto t0 = std::chrono::steady_clock::now();
      if (k) x->sink->write(p + off, k);
      auto blocked = std::chrono::steady_clock::now() - t0;
      x->win_start += blocked;
      x->last_move += blocked;
    } catch (...) {
      x->sink_err = std::current_exception();
      return 0;
    }
    x->delivered += k;
    if (x->enough) return 0;
  } else if (x->tail && st == 200) {
    // A suffix range answered with the whole object: keep its last bytes.
    x->resp->body.append(p, len);
    if (x->resp->body.size() > 2 * x->tail + (64u << 10))
      x->resp->body.erase(0, x->resp->body.size() - x->tail);
  } else {
    if (x->resp->body.size() + len > (64u << 20)) return 0;  // hostile response
    x->resp->body.append(p, len);
  }
  return len;
}

size_t on_read(char* p, size_t sz, size_t n, void* ud) {
  auto* x = static_cast<Xfer*>(ud);
  size_t k = std::min(sz * n, x->body_len - x->body_pos);
  if (x->body_fd >= 0) {
    try {
      k = k ? pread_full(x->body_fd, p, k, x->body_off + x->body_pos) : 0;
    } catch (...) {
      return CURL_READFUNC_ABORT;
    }
  } else if (k) {
    std::memcpy(p, x->body + x->body_pos, k);
  }
  x->body_pos += k;
  return k;
}

// curl rewinds the body when it resends a request on a new connection (a
// reused one was closed under it); the body is in memory, so any offset works.
int on_seek(void* ud, curl_off_t off, int origin) {
  auto* x = static_cast<Xfer*>(ud);
  if (origin != SEEK_SET || off < 0 || uint64_t(off) > x->body_len) return CURL_SEEKFUNC_FAIL;
  x->body_pos = size_t(off);
  return CURL_SEEKFUNC_OK;
}

struct TransportError {
  CURLcode code;
  std::string msg;
};

class S3Store : public Store {
 public:
  S3Store(const std::string& bucket, const S3Config& cfg) : cfg_(cfg), bucket_(bucket) {
    curl_init_once();
    if (bucket.empty()) fail(Kind::Usage, "empty bucket name");
    if (cfg_.region.empty()) cfg_.region = "us-east-1";
    std::string ep = cfg_.endpoint;
    bool aws = ep.empty();
    if (aws) ep = "https://s3." + cfg_.region + ".amazonaws.com";
    size_t sep = ep.find("://");
    if (sep == std::string::npos) fail(Kind::Usage, "endpoint " + ep + ": want http://HOST[:PORT] or https://...");
    scheme_ = lower(ep.substr(0, sep));
    if (scheme_ != "http" && scheme_ != "https") fail(Kind::Usage, "endpoint " + ep + ": scheme must be http or https");
    std::string rest = ep.substr(sep + 3);
    size_t slash = rest.find('/');
    host_ = lower(rest.substr(0, slash));
    base_path_ = slash == std::string::npos ? "" : rest.substr(slash);
    while (!base_path_.empty() && base_path_.back() == '/') base_path_.pop_back();
    if (host_.empty()) fail(Kind::Usage, "endpoint " + ep + ": no host");
    using A = S3Config::Addressing;
    virtual_ = cfg_.addressing == A::Virtual ||
               (cfg_.addressing == A::Auto && aws && bucket.find('.') == std::string::npos);
    if (virtual_) host_ = bucket_ + "." + host_;
    if (cfg_.part_size < (1u << 20)) cfg_.part_size = 1u << 20;
    h_ = curl_easy_init();
    if (!h_) fail_runtime("curl_easy_init failed");
    rng_.seed(std::random_device{}());
  }
  ~S3Store() override {
    if (h_) curl_easy_cleanup(h_);
  }

  void put(const std::string& key, Reader& body, const Metadata& meta) override {
    with_context("put " + key, [&] {
      // Grow the buffer with the body (a small file costs a small buffer,
      // not a zero-filled part); multipart once it exceeds one part.
      std::vector<uint8_t> buf;
      const size_t want = cfg_.part_size + 1;
      size_t n = 0;
      for (;;) {
        if (n == buf.size()) {
          if (n >= want) break;
          buf.resize(std::min(want, std::max<size_t>(64 * 1024, 2 * n)));
        }
        size_t k = body.read(buf.data() + n, buf.size() - n);
        if (k == 0) break;
        n += k;
      }
      if (n <= cfg_.part_size) {
        Request r;
        r.method = "PUT";
        r.key = key;
        add_meta(r, meta);
        r.body = buf.data();
        r.body_len = n;
        request(r);
        return;
      }
      multipart(key, body, meta, buf, n);
    });
  }

  void put_file(const std::string& key, int fd, uint64_t size, const Metadata& meta) override {
    with_context("put " + key, [&] {
      if (size <= cfg_.part_size) {
        Request r;
        r.method = "PUT";
        r.key = key;
        add_meta(r, meta);
        r.body_fd = fd;
        r.body_len = size;
        request(r);
        return;
      }
      multipart_parts(key, meta, [&](int num, Request& pr) {
        uint64_t off = uint64_t(num - 1) * cfg_.part_size;
        if (off >= size) return false;
        pr.body_fd = fd;
        pr.body_off = off;
        pr.body_len = size_t(std::min<uint64_t>(cfg_.part_size, size - off));
        return true;
      });
    });
  }

  uint64_t get(const std::string& key, Writer& out, uint64_t offset, int64_t length) override {
    return with_context("get " + key, [&] {
      Request r;
      r.key = key;
      r.sink = &out;
      r.range_start = offset;
      r.range_len = length;
      uint64_t got = 0;
      request(r, &got);
      return got;
    });
  }

  std::string get_tail(const std::string& key, size_t n) override {
    return with_context("get " + key, [&] {
      Request r;
      r.key = key;
      r.raw_range = "bytes=-" + std::to_string(n);
      r.tail = n;
      Response resp = request(r);
      std::string& b = resp.body;
      if (resp.status == 206) {
        // The last min(n, size) bytes, and nothing else.
        std::string cr = resp.headers["content-range"];
        uint64_t first = 0, last = 0, total = 0;
        if (!parse_content_range(cr, &first, &last, &total) || total == UINT64_MAX || last + 1 != total ||
            last - first + 1 != b.size() || b.size() != std::min<uint64_t>(n, total))
          fail_runtime("asked for the last " + std::to_string(n) + " bytes, the server answered 206 with " +
                       (cr.empty() ? std::string("no Content-Range") : "Content-Range: " + cr) + " and " +
                       std::to_string(b.size()) + " bytes");
      } else if (resp.status != 200) {
        fail_runtime("asked for the last " + std::to_string(n) + " bytes, the server answered HTTP " +
                     std::to_string(resp.status));
      }
      if (b.size() < n) fail_integrity("object is shorter than " + std::to_string(n) + " bytes");
      return b.substr(b.size() - n);
    });
  }

  std::vector<ObjectInfo> list(const std::string& prefix, const std::string& start_after) override {
    return with_context("list s3://" + bucket_ + "/" + prefix, [&] {
      // Keys come URL-encoded: one key holding a control character would
      // otherwise make some servers (Swift) fail every listing.
      std::vector<ObjectInfo> out;
      std::string token;
      Paging paging("ListObjectsV2", cfg_.max_list_keys);
      for (;;) {
        Request r;
        r.query = {{"list-type", "2"}, {"prefix", prefix}, {"max-keys", std::to_string(cfg_.max_keys)},
                   {"encoding-type", "url"}};
        if (!token.empty()) r.query.emplace_back("continuation-token", token);
        if (!start_after.empty()) r.query.emplace_back("start-after", start_after);
        Response resp = request(r);
        ListPage pg = parse_list_page(resp.body);
        for (auto& o : pg.objects) {
          paging.key(o.key, prefix, out.empty() ? start_after : out.back().key);
          out.push_back(std::move(o));
        }
        if (!pg.truncated) break;
        paging.next_page(pg.next_token, pg.objects.empty());
        token = pg.next_token;
      }
      return out;
    });
  }

  std::vector<Upload> list_uploads(const std::string& prefix) override {
    return with_context("list uploads s3://" + bucket_ + "/" + prefix, [&] {
      std::vector<Upload> out;
      std::string key_marker, id_marker;
      Paging paging("ListMultipartUploads", cfg_.max_list_keys);
      for (;;) {
        Request r;
        r.query = {{"uploads", ""}, {"prefix", prefix}, {"encoding-type", "url"}};
        if (!key_marker.empty()) r.query.emplace_back("key-marker", key_marker);
        if (!id_marker.empty()) r.query.emplace_back("upload-id-marker", id_marker);
        Response resp = request(r);
        UploadsPage pg = parse_uploads_page(resp.body);
        for (auto& u : pg.uploads) {
          // Several uploads of one key come together (AWS: by initiation time).
          paging.key(u.key, prefix, out.empty() ? std::string() : out.back().key, false);
          out.push_back(std::move(u));
        }
        if (!pg.truncated) break;
        paging.next_page(pg.next_key + '\0' + pg.next_upload_id, pg.uploads.empty());
        key_marker = pg.next_key;
        id_marker = pg.next_upload_id;
      }
      return out;
    });
  }

  bool head(const std::string& key, ObjectInfo* info) override {
    return with_context("head " + key, [&] {
      Request r;
      r.method = "HEAD";
      r.key = key;
      Response resp = request(r, nullptr, true);
      if (resp.status == 404) return false;
      if (info) {
        info->key = key;
        info->size = std::strtoull(resp.headers["content-length"].c_str(), nullptr, 10);
        info->mtime_ms = parse_http_date(resp.headers["last-modified"]);
        info->etag = resp.headers["etag"];
        info->meta.clear();
        for (auto& h : resp.headers)
          if (h.first.compare(0, 11, "x-amz-meta-") == 0) info->meta[h.first.substr(11)] = h.second;
      }
      return true;
    });
  }

  void remove(const std::vector<std::string>& all) override {
    // XML 1.0 cannot carry a control character, even as a reference: such
    // keys are deleted one by one (DeleteObject), the rest in batches.
    std::vector<std::string> keys;
    for (auto& k : all) {
      if (std::none_of(k.begin(), k.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20; })) {
        keys.push_back(k);
        continue;
      }
      with_context("delete " + k, [&] {
        Request r;
        r.method = "DELETE";
        r.key = k;
        request(r, nullptr, true);  // 404: already gone
      });
    }
    for (size_t i = 0; i < keys.size(); i += 1000) {
      size_t end = std::min(keys.size(), i + 1000);
      with_context("delete " + keys[i] + (end - i > 1 ? " (+" + std::to_string(end - i - 1) + " more)" : ""), [&] {
        std::string xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Delete><Quiet>true</Quiet>";
        for (size_t j = i; j < end; j++) xml += "<Object><Key>" + xml_escape(keys[j]) + "</Key></Object>";
        xml += "</Delete>";
        Request r;
        r.method = "POST";
        r.query = {{"delete", ""}};
        r.headers = {{"Content-MD5", md5_base64(xml)}};
        r.body = reinterpret_cast<const uint8_t*>(xml.data());
        r.body_len = xml.size();
        Response resp = request(r);
        size_t pos = 0;
        std::string e;
        while (xml_tag(resp.body, "Error", &e, &pos)) {
          std::string k, code, msg;
          xml_tag(e, "Key", &k);
          xml_tag(e, "Code", &code);
          xml_tag(e, "Message", &msg);
          if (code == "NoSuchKey") continue;
          fail_runtime(xml_unescape(k) + ": " + code + ": " + xml_unescape(msg));
        }
      });
    }
  }

 private:
  // Bounds on a listing from outside: keys in order under the prefix, at
  // most max keys, no continuation token twice, few empty truncated pages.
  class Paging {
   public:
    Paging(const char* what, uint64_t max) : what_(what), max_(max) {}
    void key(const std::string& k, const std::string& prefix, const std::string& prev, bool strict = true) {
      if (k.compare(0, prefix.size(), prefix) != 0)
        fail_runtime(std::string(what_) + ": the server listed " + k + ", outside the prefix");
      if (!prev.empty() && (strict ? k <= prev : k < prev))
        fail_runtime(std::string(what_) + ": the server listed " + k + " after " + prev + " (out of order)");
      if (++keys_ > max_)
        fail_runtime(std::string(what_) + ": more than " + std::to_string(max_) +
                     " keys (WALSYNC_S3_MAX_LIST_KEYS)");
    }
    void next_page(const std::string& token, bool empty) {
      if (token.empty() || token == std::string(1, '\0'))
        fail_runtime(std::string(what_) + ": truncated page without a continuation token");
      if (!tokens_.insert(sha256_hex(token.data(), token.size())).second)
        fail_runtime(std::string(what_) + ": the server repeated a continuation token");
      empty_ = empty ? empty_ + 1 : 0;
      if (empty_ > 100) fail_runtime(std::string(what_) + ": more than 100 empty truncated pages in a row");
    }

   private:
    const char* what_;
    uint64_t max_, keys_ = 0;
    int empty_ = 0;
    std::set<std::string> tokens_;
  };

  static void add_meta(Request& r, const Metadata& meta) {
    for (auto& m : meta) r.headers.emplace_back("x-amz-meta-" + lower(m.first), m.second);
  }

  // buf holds the first n bytes of body (more than one part).
  void multipart(const std::string& key, Reader& body, const Metadata& meta,
                 std::vector<uint8_t>& buf, size_t n) {
    size_t len = 0;
    multipart_parts(key, meta, [&](int num, Request& pr) {
      if (num > 1) {
        // The part sent was the first len bytes; the one extra byte read
        // (if any) starts the next part.
        if (n <= len) return false;
        std::memmove(buf.data(), buf.data() + len, n - len);
        n -= len;
        n += read_full(body, buf.data() + n, buf.size() - n);
      }
      len = std::min<size_t>(n, cfg_.part_size);
      pr.body = buf.data();
      pr.body_len = len;
      return true;
    });
  }

  // A multipart upload whose part num gets its body from next(num, part);
  // next returns false when there is no part num. Aborted on failure.
  void multipart_parts(const std::string& key, const Metadata& meta,
                       const std::function<bool(int, Request&)>& next) {
    SignalDeferral defer;  // SIGINT/SIGTERM: abort the upload, then die of the signal
    Request init;
    init.method = "POST";
    init.key = key;
    init.query = {{"uploads", ""}};
    add_meta(init, meta);
    Response ir = request(init);
    std::string upload_id;
    if (!xml_tag(ir.body, "UploadId", &upload_id) || upload_id.empty())
      fail_runtime("CreateMultipartUpload: no UploadId in the response");
    upload_id = xml_unescape(upload_id);
    try {
      std::string parts;
      uint64_t total = 0;
      for (int num = 1;; num++) {
        Request pr;
        pr.method = "PUT";
        pr.key = key;
        pr.query = {{"partNumber", std::to_string(num)}, {"uploadId", upload_id}};
        if (!next(num, pr)) break;
        if (num > 10000) fail_runtime("more than 10000 parts: raise the part size");
        Response resp = with_context("part " + std::to_string(num), [&] { return request(pr); });
        std::string etag = resp.headers["etag"];
        if (etag.empty()) fail_runtime("part " + std::to_string(num) + ": no ETag in the response");
        parts += "<Part><PartNumber>" + std::to_string(num) + "</PartNumber><ETag>" + xml_escape(etag) +
                 "</ETag></Part>";
        total += pr.body_len;
      }
      std::string xml = "<CompleteMultipartUpload>" + parts + "</CompleteMultipartUpload>";
      Request cr;
      cr.method = "POST";
      cr.key = key;
      cr.query = {{"uploadId", upload_id}};
      cr.body = reinterpret_cast<const uint8_t*>(xml.data());
      cr.body_len = xml.size();
      cr.patient = true;  // may take minutes on AWS, which sends whitespace meanwhile
      complete(cr, key, total);
    } catch (...) {
      try {
        Request ar;
        ar.method = "DELETE";
        ar.key = key;
        ar.query = {{"uploadId", upload_id}};
        ar.on_signal_too = true;
        request(ar);
      } catch (...) {
        // best effort; the original error is the one to report
      }
      throw;
    }
  }

  // CompleteMultipartUpload may answer 200 with an <Error> body; a retried
  // complete whose first attempt succeeded answers NoSuchUpload.
  void complete(Request& cr, const std::string& key, uint64_t total) {
    for (int attempt = 0;; attempt++) {
      try {
        Response resp = request(cr);
        std::string e;
        if (!xml_tag(resp.body, "Error", &e)) return;
        std::string code, msg;
        xml_tag(e, "Code", &code);
        xml_tag(e, "Message", &msg);
        if ((code != "InternalError" && code != "SlowDown") || attempt >= cfg_.max_retries)
          fail_runtime("CompleteMultipartUpload: " + code + ": " + xml_unescape(msg));
        backoff(attempt, "CompleteMultipartUpload: " + code);
      } catch (const Error& err) {
        if (attempt == 0 && std::string(err.what()).find("NoSuchUpload") == std::string::npos) throw;
        ObjectInfo oi;
        if (std::string(err.what()).find("NoSuchUpload") != std::string::npos && head(key, &oi) &&
            oi.size == total)
          return;
        throw;
      }
    }
  }

  void backoff(int attempt, const std::string& why, bool on_signal_too = false) {
    int64_t cap = std::min<int64_t>(cfg_.max_backoff_ms, int64_t(cfg_.backoff_ms) << std::min(attempt, 20));
    std::uniform_int_distribution<int64_t> d(cap / 2, std::max<int64_t>(cap / 2, cap));
    int64_t ms = d(rng_);
    if (cfg_.log)
      cfg_.log("retry " + std::to_string(attempt + 1) + "/" + std::to_string(cfg_.max_retries) + " in " +
               std::to_string(ms) + " ms: " + why);
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (std::chrono::steady_clock::now() < until) {
      if (!on_signal_too && signal_pending()) fail_runtime(why + "; interrupted by signal " + std::to_string(signal_pending()));
      std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(
          until - std::chrono::steady_clock::now(), std::chrono::milliseconds(50)));
    }
  }

  static bool transient_curl(CURLcode c) {
    switch (c) {
      case CURLE_COULDNT_CONNECT:
      case CURLE_COULDNT_RESOLVE_HOST:
      case CURLE_OPERATION_TIMEDOUT:
      case CURLE_SEND_ERROR:
      case CURLE_SEND_FAIL_REWIND:
      case CURLE_RECV_ERROR:
      case CURLE_GOT_NOTHING:
      case CURLE_PARTIAL_FILE:
      case CURLE_HTTP2:
      case CURLE_HTTP2_STREAM:
      case CURLE_SSL_CONNECT_ERROR:
      case CURLE_WRITE_ERROR:  // only when not a sink failure (checked first)
        return true;
      default:
        return false;
    }
  }

  // Performs r with retries. For sink GETs, *got counts bytes delivered.
  // allow_404: return a 404 response instead of throwing (HEAD).
  Response request(Request& r, uint64_t* got = nullptr, bool allow_404 = false) {
    uint64_t delivered = 0;
    std::string etag;  // pinned after the first sink response
    for (int attempt = 0;; attempt++) {
      Response resp;
      std::string why;
      uint64_t d = 0;  // bytes this attempt delivered, even if it failed
      if (!r.on_signal_too && signal_pending()) fail_runtime("interrupted by signal " + std::to_string(signal_pending()));
      try {
        Request a = r;
        if (r.sink) {
          if (r.range_len >= 0 && uint64_t(r.range_len) == delivered && delivered > 0) break;
          if (r.range_start + delivered > 0 || r.range_len >= 0) {
            std::string range = "bytes=" + std::to_string(r.range_start + delivered) + "-";
            if (r.range_len >= 0) {
              if (r.range_len == 0) return resp;
              range += std::to_string(r.range_start + uint64_t(r.range_len) - 1);
            }
            a.headers.emplace_back("Range", range);
          }
          if (!etag.empty()) a.headers.emplace_back("If-Match", etag);
        } else if (!r.raw_range.empty()) {
          a.headers.emplace_back("Range", r.raw_range);
        }
        perform(a, resp, &d, r.range_start + delivered,
                r.range_len >= 0 ? int64_t(uint64_t(r.range_len) - delivered) : -1);
        delivered += d;
        d = 0;
      } catch (const TransportError& te) {
        delivered += d;
        why = te.msg;
        if (!transient_curl(te.code)) fail_runtime(why);
      }
      // Pin the object version for resumed ranges (If-Match).
      if (r.sink && etag.empty() && (resp.status == 200 || resp.status == 206))
        etag = resp.headers["etag"];
      if (why.empty()) {
        long st = resp.status;
        if ((st >= 200 && st < 300) || (allow_404 && st == 404)) {
          if (got) *got = delivered;
          return resp;
        }
        std::string code = error_code(resp.body);
        why = parse_error_body(resp.body);
        if (code.empty()) {
          std::string msg;
          if (st == 404) msg = r.key.empty() ? "bucket not found" : "no such key";
          else if (st == 403) msg = "access denied (check the credentials, region and clock)";
          else if (st == 301 || st == 307) msg = "wrong region or endpoint for this bucket";
          else msg = "no error details";
          why = "HTTP " + std::to_string(st) + ": " + msg;
        }
        if (st == 404 && code == "NoSuchBucket") why = code + ": bucket " + bucket_ + " does not exist";
        if (st == 412 && r.sink) fail_runtime("object changed during the download: " + why);
        bool retry = st >= 500 || st == 429 || code == "RequestTimeout" || code == "SlowDown";
        if (!retry) fail_runtime(why);
      }
      if (attempt >= cfg_.max_retries)
        fail_runtime(why + " (gave up after " + std::to_string(attempt + 1) + " attempts)");
      backoff(attempt, why, r.on_signal_too);
    }
    if (got) *got = delivered;
    return Response{};
  }

  std::string url_path(const std::string& key) const {
    std::string p = base_path_;
    if (!virtual_) p += "/" + uri_encode(bucket_, false);
    if (!key.empty() || virtual_) p += "/" + uri_encode(key, true);
    return p;
  }

  void perform(const Request& r, Response& resp, uint64_t* delivered, uint64_t want_start, int64_t want_len) {
    CURL* h = h_;
    curl_easy_reset(h);
    std::string path = url_path(r.key);
    std::string q = canonical_query(r.query);
    std::string url = scheme_ + "://" + host_ + path + (q.empty() ? "" : "?" + q);

    char date[32];
    time_t now = time(nullptr);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%Y%m%dT%H%M%SZ", &tm);

    SigV4Request sr;
    sr.method = r.method;
    sr.host = host_;
    sr.path = path;
    sr.query = r.query;
    sr.headers = r.headers;
    sr.payload_hash = r.body_fd >= 0 ? sha256_hex_fd(r.body_fd, r.body_off, r.body_len)
                                     : sha256_hex(r.body ? r.body : reinterpret_cast<const uint8_t*>(""), r.body_len);
    Credentials cr{cfg_.access_key, cfg_.secret_key, cfg_.session_token};
    if (cfg_.credentials) cr = cfg_.credentials->get();
    Headers send = sigv4_sign(sr, date, cfg_.region, cr.access_key, cr.secret_key, cr.session_token);

    struct curl_slist* hl = nullptr;
    auto add = [&](const std::string& s) { hl = curl_slist_append(hl, s.c_str()); };
    add("Host: " + host_);
    for (auto& kv : send) add(kv.first + ": " + kv.second);
    add("Expect:");
    if (r.method == "POST") add("Content-Type: application/xml");

    Xfer x{h, &resp, r.sink};
    x.body = r.body;
    x.body_len = r.body_len;
    x.body_fd = r.body_fd;
    x.body_off = r.body_off;
    x.want_start = want_start;
    x.want_len = want_len;
    x.tail = r.tail;
    x.stall_s = cfg_.low_speed_time_s;
    x.last_move = x.win_start = std::chrono::steady_clock::now();
    x.paced = !r.patient;
    x.has_deadline = !r.patient && !r.sink && !r.tail && r.body_len == 0;  // not DeleteObjects
    x.deadline = x.last_move + std::chrono::seconds(cfg_.low_speed_time_s);
    x.on_signal_too = r.on_signal_too;
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_URL, url.c_str());
    curl_easy_setopt(h, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &x);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &x);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, cfg_.connect_timeout_s);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, &x);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, cfg_.insecure ? 0L : 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, cfg_.insecure ? 0L : 2L);
    if (!cfg_.ca_bundle.empty()) curl_easy_setopt(h, CURLOPT_CAINFO, cfg_.ca_bundle.c_str());
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    if (r.method == "HEAD") {
      curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else if (r.method == "PUT") {
      curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
      curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
      curl_easy_setopt(h, CURLOPT_READDATA, &x);
      curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, on_seek);
      curl_easy_setopt(h, CURLOPT_SEEKDATA, &x);
      curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, curl_off_t(r.body_len));
    } else if (r.method == "POST") {
      curl_easy_setopt(h, CURLOPT_POST, 1L);
      curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
      curl_easy_setopt(h, CURLOPT_READDATA, &x);
      curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, on_seek);
      curl_easy_setopt(h, CURLOPT_SEEKDATA, &x);
      curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(r.body_len));
    } else if (r.method != "GET") {
      curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, r.method.c_str());
    }
    struct Guard {
      curl_slist* l;
      ~Guard() { curl_slist_free_all(l); }
    } guard{hl};
    CURLcode rc = curl_easy_perform(h);
    *delivered = x.delivered;
    if (x.sink_err) std::rethrow_exception(x.sink_err);
    std::string where = " (" + r.method + " " + scheme_ + "://" + host_ + ")";
    if (!x.range_err.empty()) fail_runtime(x.range_err);
    if (rc == CURLE_WRITE_ERROR && x.enough) rc = CURLE_OK;
    if (rc == CURLE_ABORTED_BY_CALLBACK) {
      std::string t = std::to_string(x.stall_s) + " s";
      if (x.interrupted) throw TransportError{rc, "interrupted by signal " + std::to_string(signal_pending()) + where};
      if (x.stalled) throw TransportError{CURLE_OPERATION_TIMEDOUT, "stalled: no data for " + t + where};
      if (x.slow) throw TransportError{CURLE_OPERATION_TIMEDOUT, "too slow: under 1 KiB/s for " + t + where};
      if (x.timed_out) throw TransportError{CURLE_OPERATION_TIMEDOUT, "no complete answer within " + t + where};
    }
    if (rc != CURLE_OK) {
      std::string m = errbuf[0] ? errbuf : curl_easy_strerror(rc);
      while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) m.pop_back();
      if (rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE) {
        // curl's error buffer names the cause (self-signed, unknown issuer,
        // name mismatch); OpenSSL's verify result may add to it.
        long v = 0;
        if (curl_easy_getinfo(h, CURLINFO_SSL_VERIFYRESULT, &v) != CURLE_OK) v = 0;
        if (v > X509_V_ERR_UNSPECIFIED && m.find(X509_verify_cert_error_string(v)) == std::string::npos)
          m += std::string(" (") + X509_verify_cert_error_string(v) + ")";
        bool issuer = v == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT || v == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT ||
                      v == X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN || v == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY ||
                      v == X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE;
        if (issuer || rc == CURLE_SSL_CACERT_BADFILE)
          m += "; to trust a private CA, give its PEM file with --ca-bundle or AWS_CA_BUNDLE";
      }
      throw TransportError{rc, m + where};
    }
  }

  S3Config cfg_;
  std::string bucket_, scheme_, host_, base_path_;
  bool virtual_ = false;
  CURL* h_ = nullptr;
  std::mt19937_64 rng_;
};

}  // namespace

std::string url_decode(const std::string& s) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string o;
  o.reserve(s.size());
  for (size_t i = 0; i < s.size(); i++) {
    if (s[i] == '+') {
      o += ' ';
    } else if (s[i] == '%' && i + 2 < s.size() && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
      o += char(hex(s[i + 1]) << 4 | hex(s[i + 2]));
      i += 2;
    } else if (s[i] == '%') {
      fail_runtime("malformed URL-encoded key " + s);
    } else {
      o += s[i];
    }
  }
  return o;
}

namespace {
// A key from a listing: entity-decoded, then URL-decoded if the page says
// EncodingType url; at most 1024 bytes, as S3 allows.
std::string listed_key(const std::string& raw, bool url, const char* what) {
  std::string k = xml_unescape(raw);
  if (url) k = url_decode(k);
  if (k.empty() || k.size() > 1024)
    fail_runtime(std::string(what) + ": a key of " + std::to_string(k.size()) + " bytes");
  return k;
}

bool url_encoded(const std::string& xml) {
  std::string enc;
  return xml_tag(xml, "EncodingType", &enc) && enc == "url";
}
}  // namespace

ListPage parse_list_page(const std::string& x) {
  if (x.find("<ListBucketResult") == std::string::npos) fail_runtime("ListObjectsV2: unexpected response");
  bool url = url_encoded(x);
  ListPage pg;
  size_t pos = 0;
  std::string c;
  while (xml_tag(x, "Contents", &c, &pos)) {
    ObjectInfo o;
    std::string v;
    if (!xml_tag(c, "Key", &v)) fail_runtime("ListObjectsV2: entry without a Key");
    o.key = listed_key(v, url, "ListObjectsV2");
    if (xml_tag(c, "Size", &v)) o.size = std::strtoull(v.c_str(), nullptr, 10);
    if (xml_tag(c, "LastModified", &v)) o.mtime_ms = parse_iso(v);
    if (xml_tag(c, "ETag", &v)) o.etag = xml_unescape(v);
    pg.objects.push_back(std::move(o));
  }
  std::string trunc, next;
  pg.truncated = xml_tag(x, "IsTruncated", &trunc) && trunc == "true";
  if (xml_tag(x, "NextContinuationToken", &next)) pg.next_token = xml_unescape(next);
  return pg;
}

UploadsPage parse_uploads_page(const std::string& x) {
  if (x.find("<ListMultipartUploadsResult") == std::string::npos)
    fail_runtime("ListMultipartUploads: unexpected response");
  bool url = url_encoded(x);
  UploadsPage pg;
  size_t pos = 0;
  std::string u;
  while (xml_tag(x, "Upload", &u, &pos)) {
    Store::Upload up;
    std::string v;
    if (!xml_tag(u, "Key", &v)) fail_runtime("ListMultipartUploads: entry without a Key");
    up.key = listed_key(v, url, "ListMultipartUploads");
    if (!xml_tag(u, "UploadId", &v) || v.empty()) fail_runtime("ListMultipartUploads: entry without an UploadId");
    up.upload_id = xml_unescape(v);
    if (xml_tag(u, "Initiated", &v)) up.initiated_ms = parse_iso(v);
    pg.uploads.push_back(std::move(up));
  }
  std::string trunc, v;
  pg.truncated = xml_tag(x, "IsTruncated", &trunc) && trunc == "true";
  if (xml_tag(x, "NextKeyMarker", &v)) pg.next_key = url ? url_decode(xml_unescape(v)) : xml_unescape(v);
  if (xml_tag(x, "NextUploadIdMarker", &v)) pg.next_upload_id = xml_unescape(v);
  return pg;
}

bool parse_content_range(const std::string& v, uint64_t* first, uint64_t* last, uint64_t* total) {
  // "bytes 0-15/1075"
  const char* p = v.c_str();
  if (std::strncmp(p, "bytes ", 6) != 0) return false;
  p += 6;
  auto num = [&](uint64_t* out) {
    if (*p < '0' || *p > '9') return false;
    uint64_t n = 0;
    for (; *p >= '0' && *p <= '9'; p++) {
      if (n > (UINT64_MAX - 9) / 10) return false;
      n = n * 10 + uint64_t(*p - '0');
    }
    *out = n;
    return true;
  };
  if (!num(first) || *p++ != '-' || !num(last) || *p++ != '/' || *last < *first) return false;
  if (*p == '*' && p[1] == '\0') {
    *total = UINT64_MAX;
    return true;
  }
  return num(total) && *p == '\0' && *last < *total;
}

std::string parse_error_body(const std::string& xml) {
  std::string code = error_code(xml), msg;
  if (code.empty()) return "";
  if (xml_tag(xml, "Message", &msg)) msg = xml_unescape(msg);
  if (msg.size() > 512) msg = msg.substr(0, 512) + "...";
  if (code.size() > 128) code = code.substr(0, 128) + "...";
  return code + ": " + (msg.empty() ? std::string("no error details") : msg);
}

std::unique_ptr<Store> open_s3_store(const std::string& bucket, const S3Config& cfg) {
  return std::make_unique<S3Store>(bucket, cfg);
}

}  // namespace ltx
