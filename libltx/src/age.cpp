// age.cpp - the age v1 format (age.h): bech32 keys, the header with its
// X25519 and scrypt stanzas and HMAC, and the STREAM payload.
#include "ltx/age.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cctype>
#include <cstring>

#include "ltx/error.h"
#include "ltx/store.h"  // hmac_sha256

namespace ltx {
namespace age {

namespace {

using Bytes32 = std::array<uint8_t, 32>;
const std::string kVersionLine = "age-encryption.org/v1";
const std::string kX25519Label = "age-encryption.org/v1/X25519";
const std::string kScryptLabel = "age-encryption.org/v1/scrypt";

[[noreturn]] void bad_header(const std::string& why) { fail_integrity("age header: " + why); }

// ---- bech32 (BIP 173), as age uses it: no length limit, one case ----

const char kCharset[] = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";

uint32_t polymod(const std::vector<uint8_t>& v) {
  static const uint32_t g[5] = {0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3};
  uint32_t chk = 1;
  for (uint8_t x : v) {
    uint32_t b = chk >> 25;
    chk = ((chk & 0x1ffffff) << 5) ^ x;
    for (int i = 0; i < 5; i++)
      if ((b >> i) & 1) chk ^= g[i];
  }
  return chk;
}

std::vector<uint8_t> hrp_expand(const std::string& hrp) {
  std::vector<uint8_t> v;
  for (char c : hrp) v.push_back(uint8_t(c) >> 5);
  v.push_back(0);
  for (char c : hrp) v.push_back(uint8_t(c) & 31);
  return v;
}

bool convert_bits(const uint8_t* in, size_t n, int from, int to, bool pad, std::vector<uint8_t>* out) {
  uint32_t acc = 0, maxv = (1u << to) - 1;
  int bits = 0;
  for (size_t i = 0; i < n; i++) {
    if (in[i] >> from) return false;
    acc = ((acc << from) | in[i]) & 0xffff;
    bits += from;
    while (bits >= to) {
      bits -= to;
      out->push_back(uint8_t((acc >> bits) & maxv));
    }
  }
  if (pad) {
    if (bits) out->push_back(uint8_t((acc << (to - bits)) & maxv));
  } else if (bits >= from || ((acc << (to - bits)) & maxv)) {
    return false;
  }
  return true;
}

std::string bech32_encode(const std::string& hrp, const uint8_t* data, size_t n) {
  std::vector<uint8_t> d;
  convert_bits(data, n, 8, 5, true, &d);
  std::vector<uint8_t> v = hrp_expand(hrp);
  v.insert(v.end(), d.begin(), d.end());
  v.insert(v.end(), 6, 0);
  uint32_t pm = polymod(v) ^ 1;
  std::string s = hrp + "1";
  for (uint8_t x : d) s += kCharset[x];
  for (int i = 0; i < 6; i++) s += kCharset[(pm >> (5 * (5 - i))) & 31];
  return s;
}

// False on any error; *hrp comes back lower case.
bool bech32_decode(const std::string& in, std::string* hrp, std::vector<uint8_t>* data) {
  bool lower = false, upper = false;
  for (char c : in) {
    if (c < 33 || c > 126) return false;
    lower |= (c >= 'a' && c <= 'z');
    upper |= (c >= 'A' && c <= 'Z');
  }
  if (lower && upper) return false;
  std::string s = in;
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  size_t sep = s.rfind('1');
  if (sep == std::string::npos || sep < 1 || sep + 7 > s.size()) return false;
  *hrp = s.substr(0, sep);
  std::vector<uint8_t> d;
  for (size_t i = sep + 1; i < s.size(); i++) {
    const char* p = std::strchr(kCharset, s[i]);
    if (!p) return false;
    d.push_back(uint8_t(p - kCharset));
  }
  std::vector<uint8_t> v = hrp_expand(*hrp);
  v.insert(v.end(), d.begin(), d.end());
  if (polymod(v) != 1) return false;
  d.resize(d.size() - 6);
  data->clear();
  return convert_bits(d.data(), d.size(), 5, 8, false, data);
}

// ---- OpenSSL primitives ----

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct PctxFree {
  void operator()(EVP_PKEY_CTX* p) const { EVP_PKEY_CTX_free(p); }
};
struct CctxFree {
  void operator()(EVP_CIPHER_CTX* p) const { EVP_CIPHER_CTX_free(p); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;
using Pctx = std::unique_ptr<EVP_PKEY_CTX, PctxFree>;

void random_bytes(void* p, size_t n) {
  if (RAND_bytes(static_cast<unsigned char*>(p), int(n)) != 1) fail_runtime("age: no random bytes");
}

std::string hkdf(const std::string& ikm, const std::string& salt, const std::string& info) {
  Pctx c(EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, nullptr));
  std::string out(32, '\0');
  size_t len = out.size();
  // An empty salt is HashLen zero bytes (RFC 5869).
  std::string s = salt.empty() ? std::string(32, '\0') : salt;
  auto u = [](const std::string& x) { return reinterpret_cast<const unsigned char*>(x.data()); };
  if (!c || EVP_PKEY_derive_init(c.get()) <= 0 || EVP_PKEY_CTX_set_hkdf_md(c.get(), EVP_sha256()) <= 0 ||
      EVP_PKEY_CTX_set1_hkdf_salt(c.get(), u(s), int(s.size())) <= 0 ||
      EVP_PKEY_CTX_set1_hkdf_key(c.get(), u(ikm), int(ikm.size())) <= 0 ||
      EVP_PKEY_CTX_add1_hkdf_info(c.get(), u(info), int(info.size())) <= 0 ||
      EVP_PKEY_derive(c.get(), reinterpret_cast<unsigned char*>(&out[0]), &len) <= 0 || len != 32)
    fail_runtime("age: HKDF-SHA256 failed");
  return out;
}

std::string str(const uint8_t* p, size_t n) { return std::string(reinterpret_cast<const char*>(p), n); }

Bytes32 x25519_public(const Bytes32& secret) {
  Pkey k(EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, nullptr, secret.data(), 32));
  Bytes32 pub{};
  size_t n = 32;
  if (!k || EVP_PKEY_get_raw_public_key(k.get(), pub.data(), &n) != 1 || n != 32) fail_runtime("age: X25519 failed");
  return pub;
}

// X25519(secret, peer); false when the result is all zero (a low-order point).
bool x25519(const Bytes32& secret, const Bytes32& peer, Bytes32* out) {
  Pkey k(EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, nullptr, secret.data(), 32));
  Pkey p(EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, nullptr, peer.data(), 32));
  if (!k || !p) fail_runtime("age: X25519 failed");
  Pctx c(EVP_PKEY_CTX_new(k.get(), nullptr));
  if (!c || EVP_PKEY_derive_init(c.get()) <= 0) fail_runtime("age: X25519 failed");
  size_t n = 32;
  bool ok = EVP_PKEY_derive_set_peer(c.get(), p.get()) > 0 && EVP_PKEY_derive(c.get(), out->data(), &n) > 0 && n == 32;
  ERR_clear_error();
  if (!ok) return false;
  uint8_t acc = 0;
  for (uint8_t b : *out) acc |= b;
  return acc != 0;
}

// ChaCha20-Poly1305 with an empty AAD. seal: out gets n + 16 bytes.
void seal(const uint8_t* key, const uint8_t* nonce12, const uint8_t* in, size_t n, uint8_t* out) {
  std::unique_ptr<EVP_CIPHER_CTX, CctxFree> c(EVP_CIPHER_CTX_new());
  int len = 0;
  if (!c || EVP_EncryptInit_ex(c.get(), EVP_chacha20_poly1305(), nullptr, key, nonce12) != 1 ||
      (n && EVP_EncryptUpdate(c.get(), out, &len, in, int(n)) != 1) ||
      EVP_EncryptFinal_ex(c.get(), out + n, &len) != 1 ||
      EVP_CIPHER_CTX_ctrl(c.get(), EVP_CTRL_AEAD_GET_TAG, int(kTag), out + n) != 1)
    fail_runtime("age: ChaCha20-Poly1305 failed");
}

// open: in has n >= 16 bytes (ciphertext then tag); out gets n - 16. False
// if the tag does not verify (out is then garbage and must not be used).
bool open(const uint8_t* key, const uint8_t* nonce12, const uint8_t* in, size_t n, uint8_t* out) {
  if (n < kTag) return false;
  std::unique_ptr<EVP_CIPHER_CTX, CctxFree> c(EVP_CIPHER_CTX_new());
  int len = 0;
  size_t m = n - kTag;
  if (!c || EVP_DecryptInit_ex(c.get(), EVP_chacha20_poly1305(), nullptr, key, nonce12) != 1 ||
      (m && EVP_DecryptUpdate(c.get(), out, &len, in, int(m)) != 1) ||
      EVP_CIPHER_CTX_ctrl(c.get(), EVP_CTRL_AEAD_SET_TAG, int(kTag), const_cast<uint8_t*>(in + m)) != 1)
    fail_runtime("age: ChaCha20-Poly1305 failed");
  bool ok = EVP_DecryptFinal_ex(c.get(), out + m, &len) == 1;
  ERR_clear_error();
  return ok;
}

std::string scrypt_key(const std::string& pass, const std::string& salt16, int wf) {
  std::string salt = kScryptLabel + salt16;
  std::string out(32, '\0');
  uint64_t n = uint64_t(1) << wf;
  if (EVP_PBE_scrypt(pass.data(), pass.size(), reinterpret_cast<const unsigned char*>(salt.data()), salt.size(), n, 8,
                     1, 128 * 8 * n + (1u << 20), reinterpret_cast<unsigned char*>(&out[0]), out.size()) != 1)
    fail_runtime("age: scrypt failed");
  return out;
}

const uint8_t kZeroNonce[12] = {0};

std::string wrap_file_key(const std::string& wrap_key, const uint8_t* file_key) {
  uint8_t body[32];
  seal(reinterpret_cast<const uint8_t*>(wrap_key.data()), kZeroNonce, file_key, 16, body);
  return str(body, 32);
}

bool unwrap_file_key(const std::string& wrap_key, const std::string& body, std::array<uint8_t, 16>* file_key) {
  if (body.size() != 32) bad_header("wrapped file key is not 16 bytes");
  return open(reinterpret_cast<const uint8_t*>(wrap_key.data()), kZeroNonce,
              reinterpret_cast<const uint8_t*>(body.data()), body.size(), file_key->data());
}

// Stanza body: base64 in lines of 64 columns, the last one shorter (maybe empty).
std::string body_lines(const std::string& b64) {
  std::string s;
  size_t i = 0;
  for (; i + 64 <= b64.size(); i += 64) s += b64.substr(i, 64) + "\n";
  return s + b64.substr(i) + "\n";
}

void stream_nonce(uint64_t counter, bool last, uint8_t out[12]) {
  std::memset(out, 0, 12);
  for (int i = 0; i < 8; i++) out[10 - i] = uint8_t(counter >> (8 * i));
  out[11] = last ? 1 : 0;
}

struct Stanza {
  std::vector<std::string> args;  // args[0] is the type
  std::string body;
};

bool vchar(const std::string& s) {
  if (s.empty()) return false;
  for (unsigned char c : s)
    if (c < 0x21 || c > 0x7e) return false;
  return true;
}

bool b64_char(unsigned char c) { return std::isalnum(c) || c == '+' || c == '/'; }

// "18" -> 18: decimal digits, no sign, no leading zero, 1..99.
int parse_work_factor(const std::string& s) {
  if (s.empty() || s.size() > 2 || s[0] == '0') bad_header("scrypt work factor " + s);
  for (char c : s)
    if (c < '0' || c > '9') bad_header("scrypt work factor " + s);
  return std::stoi(s);
}

}  // namespace

// ---- base64 ----

std::string b64_encode(const void* data, size_t n) {
  static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  auto p = static_cast<const uint8_t*>(data);
  std::string s;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < n; i++) {
    acc = (acc << 8) | p[i];
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      s += a[(acc >> bits) & 63];
    }
    acc &= (1u << bits) - 1;
  }
  if (bits) s += a[(acc << (6 - bits)) & 63];
  return s;
}

bool b64_decode(const std::string& s, std::string* out) {
  out->clear();
  if (s.size() % 4 == 1) return false;
  uint32_t acc = 0;
  int bits = 0;
  for (unsigned char c : s) {
    int v = c >= 'A' && c <= 'Z'   ? c - 'A'
            : c >= 'a' && c <= 'z' ? c - 'a' + 26
            : c >= '0' && c <= '9' ? c - '0' + 52
            : c == '+'             ? 62
            : c == '/'             ? 63
                                   : -1;
    if (v < 0) return false;
    acc = (acc << 6) | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out->push_back(char((acc >> bits) & 0xff));
    }
    acc &= (1u << bits) - 1;
  }
  return acc == 0;  // canonical: the unused low bits are zero
}

// ---- keys ----

Key parse_recipient(const std::string& s) {
  std::string hrp;
  std::vector<uint8_t> d;
  if (s.compare(0, 4, "age1") != 0 || !bech32_decode(s, &hrp, &d) || hrp != "age" || d.size() != 32)
    fail(Kind::Usage, "not an age X25519 recipient (want age1...)");
  Key k;
  std::copy(d.begin(), d.end(), k.bytes.begin());
  return k;
}

Key parse_identity(const std::string& s) {
  std::string hrp;
  std::vector<uint8_t> d;
  if (s.compare(0, 16, "AGE-SECRET-KEY-1") != 0 || !bech32_decode(s, &hrp, &d) || hrp != "age-secret-key-" ||
      d.size() != 32)
    fail(Kind::Usage, "not an age X25519 identity (want AGE-SECRET-KEY-1...)");
  Key k;
  std::copy(d.begin(), d.end(), k.bytes.begin());
  return k;
}

std::string format_recipient(const Key& r) { return bech32_encode("age", r.bytes.data(), 32); }

std::string format_identity(const Key& id) {
  std::string s = bech32_encode("age-secret-key-", id.bytes.data(), 32);
  for (char& c : s) c = char(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

std::string recipient_of(const Key& id) {
  Key r;
  r.bytes = x25519_public(id.bytes);
  return format_recipient(r);
}

Key generate_identity() {
  Key k;
  random_bytes(k.bytes.data(), 32);
  return k;
}

namespace {
std::vector<std::string> key_lines(const std::string& text) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < text.size()) {
    size_t e = text.find('\n', i);
    if (e == std::string::npos) e = text.size();
    std::string l = text.substr(i, e - i);
    i = e + 1;
    while (!l.empty() && (l.back() == '\r' || l.back() == ' ' || l.back() == '\t')) l.pop_back();
    size_t b = l.find_first_not_of(" \t");
    if (b == std::string::npos || l[b] == '#') continue;
    out.push_back(l.substr(b));
  }
  return out;
}
}  // namespace

std::vector<Key> parse_recipients_text(const std::string& text, const std::string& name) {
  std::vector<Key> out;
  int n = 0;
  for (const auto& l : key_lines(text)) {
    n++;
    out.push_back(with_context(name + ": key " + std::to_string(n), [&] { return parse_recipient(l); }));
  }
  if (out.empty()) fail(Kind::Usage, name + ": no recipients");
  return out;
}

std::vector<Key> parse_identities_text(const std::string& text, const std::string& name) {
  if (text.compare(0, kVersionLine.size(), kVersionLine) == 0)
    fail(Kind::Usage, name + ": a passphrase-encrypted identity file; decrypt it with age -d first");
  std::vector<Key> out;
  int n = 0;
  for (const auto& l : key_lines(text)) {
    n++;
    out.push_back(with_context(name + ": key " + std::to_string(n), [&] { return parse_identity(l); }));
  }
  if (out.empty()) fail(Kind::Usage, name + ": no identities");
  return out;
}

// ---- header ----

namespace {

std::string make_header(const std::vector<Key>& recipients, const uint8_t* file_key) {
  if (recipients.empty()) fail(Kind::Usage, "age: no recipients to encrypt to");
  std::string h = kVersionLine + "\n";
  for (const Key& r : recipients) {
    if (r.type == Key::Type::Passphrase) {
      if (recipients.size() != 1) fail(Kind::Usage, "age: a passphrase must be the only recipient");
      uint8_t salt[16];
      random_bytes(salt, sizeof salt);
      std::string wrap = scrypt_key(r.passphrase, str(salt, 16), r.work_factor);
      h += "-> scrypt " + b64_encode(salt, 16) + " " + std::to_string(r.work_factor) + "\n";
      std::string body = wrap_file_key(wrap, file_key);
      h += body_lines(b64_encode(body.data(), body.size()));
      continue;
    }
    Bytes32 eph{}, share{}, shared{};
    random_bytes(eph.data(), 32);
    share = x25519_public(eph);
    if (!x25519(eph, r.bytes, &shared)) fail(Kind::Usage, "age: recipient " + format_recipient(r) + " is a low-order point");
    std::string wrap = hkdf(str(shared.data(), 32), str(share.data(), 32) + str(r.bytes.data(), 32), kX25519Label);
    std::string body = wrap_file_key(wrap, file_key);
    h += "-> X25519 " + b64_encode(share.data(), 32) + "\n" + body_lines(b64_encode(body.data(), body.size()));
  }
  h += "---";
  std::string mac = hmac_sha256(hkdf(str(file_key, 16), "", "header"), h);
  return h + " " + b64_encode(mac.data(), mac.size()) + "\n";
}

}  // namespace

bool open_header(const std::string& buf, const std::vector<Key>& identities, Opened* out) {
  // Refuse early what is not age at all (a plain LTX object starts "LTX1").
  size_t m = std::min(buf.size(), kVersionLine.size() + 1);
  if (buf.compare(0, m, (kVersionLine + "\n").substr(0, m)) != 0) {
    if (buf.compare(0, 4, "LTX1") == 0) fail_integrity("not an age file: a plain LTX object in an encrypted replica");
    if (buf.compare(0, 18, "age-encryption.org") == 0) bad_header("unsupported version line");
    fail_integrity("not an age file");
  }
  size_t pos = 0;
  bool complete = true;
  auto next_line = [&](std::string* l) {
    size_t e = buf.find('\n', pos);
    if (e == std::string::npos) {
      complete = false;
      return false;
    }
    *l = buf.substr(pos, e - pos);
    pos = e + 1;
    return true;
  };
  auto incomplete = [&] {
    if (buf.size() >= kMaxHeader) bad_header("longer than 64 KiB");
    return false;
  };
  std::string line;
  if (!next_line(&line)) return incomplete();
  if (line != kVersionLine) bad_header("unsupported version line");
  std::vector<Stanza> stanzas;
  size_t mac_at = 0;
  std::string mac;
  for (;;) {
    size_t start = pos;
    if (!next_line(&line)) return incomplete();
    if (line.compare(0, 3, "---") == 0) {
      if (line.size() != 4 + 43 || line[3] != ' ' || !b64_decode(line.substr(4), &mac) || mac.size() != 32)
        bad_header("malformed MAC line");
      mac_at = start + 3;
      break;
    }
    if (line.compare(0, 3, "-> ") != 0) bad_header("malformed stanza");
    Stanza st;
    size_t i = 3;
    for (;;) {
      size_t sp = line.find(' ', i);
      st.args.push_back(line.substr(i, sp == std::string::npos ? std::string::npos : sp - i));
      if (!vchar(st.args.back())) bad_header("malformed stanza arguments");
      if (sp == std::string::npos) break;
      i = sp + 1;
    }
    std::string b64;
    for (;;) {
      if (!next_line(&line)) return incomplete();
      if (line.size() > 64) bad_header("stanza body line longer than 64 columns");
      for (unsigned char c : line)
        if (!b64_char(c)) bad_header("malformed stanza body");
      b64 += line;
      if (line.size() < 64) break;
    }
    if (!b64_decode(b64, &st.body)) bad_header("stanza body is not canonical base64");
    stanzas.push_back(std::move(st));
  }
  if (stanzas.empty()) bad_header("no recipient stanzas");
  for (const auto& st : stanzas)
    if (st.args[0] == "scrypt" && stanzas.size() != 1) bad_header("an scrypt stanza must be the only one");

  bool found = false;
  for (size_t s = 0; s < stanzas.size() && !found; s++) {
    const Stanza& st = stanzas[s];
    for (const Key& id : identities) {
      if (st.args[0] == "X25519" && id.type == Key::Type::X25519) {
        std::string share;
        if (st.args.size() != 2 || !b64_decode(st.args[1], &share) || share.size() != 32)
          bad_header("malformed X25519 stanza");
        if (st.body.size() != 32) bad_header("malformed X25519 stanza body");
        Bytes32 sh{}, shared{};
        std::memcpy(sh.data(), share.data(), 32);
        if (!x25519(id.bytes, sh, &shared)) bad_header("X25519 share is a low-order point");
        Bytes32 pub = x25519_public(id.bytes);
        std::string wrap = hkdf(str(shared.data(), 32), share + str(pub.data(), 32), kX25519Label);
        if (unwrap_file_key(wrap, st.body, &out->file_key)) {
          found = true;
          break;
        }
      } else if (st.args[0] == "scrypt" && id.type == Key::Type::Passphrase) {
        std::string salt;
        if (st.args.size() != 3 || !b64_decode(st.args[1], &salt) || salt.size() != 16)
          bad_header("malformed scrypt stanza");
        int wf = parse_work_factor(st.args[2]);
        if (wf > kMaxWorkFactor) bad_header("scrypt work factor " + st.args[2] + " is above the limit of 22");
        if (st.body.size() != 32) bad_header("malformed scrypt stanza body");
        if (unwrap_file_key(scrypt_key(id.passphrase, salt, wf), st.body, &out->file_key)) {
          found = true;
          break;
        }
      }
    }
  }
  if (!found) fail_permanent("no identity matches this file (wrong --age-identity?)");  // retrying cannot cure it
  std::string want = hmac_sha256(hkdf(str(out->file_key.data(), 16), "", "header"), buf.substr(0, mac_at));
  if (want.size() != mac.size() || CRYPTO_memcmp(want.data(), mac.data(), mac.size()) != 0)
    bad_header("MAC mismatch (the header was changed)");
  out->header_size = pos;
  (void)complete;
  return true;
}

std::array<uint8_t, 32> payload_key(const Opened& h, const std::array<uint8_t, kNonce>& nonce) {
  std::string k = hkdf(str(h.file_key.data(), 16), str(nonce.data(), kNonce), "payload");
  std::array<uint8_t, 32> out{};
  std::memcpy(out.data(), k.data(), 32);
  return out;
}

// ---- payload ----

EncryptReader::EncryptReader(Reader& plain, const std::vector<Key>& recipients) : in_(plain), buf_(kChunk + 1) {
  std::array<uint8_t, 16> file_key{};
  random_bytes(file_key.data(), 16);
  out_ = make_header(recipients, file_key.data());
  header_size_ = out_.size();
  std::array<uint8_t, kNonce> nonce{};
  random_bytes(nonce.data(), kNonce);
  Opened h;
  h.file_key = file_key;
  key_ = payload_key(h, nonce);
  out_.append(reinterpret_cast<const char*>(nonce.data()), kNonce);
}

uint64_t EncryptReader::sealed_size(uint64_t plain, size_t header_size) {
  uint64_t chunks = plain == 0 ? 1 : (plain + kChunk - 1) / kChunk;
  return header_size + kNonce + plain + chunks * kTag;
}

bool EncryptReader::fill() {
  if (done_) return false;
  have_ += read_full(in_, buf_.data() + have_, kChunk + 1 - have_);
  bool last = have_ <= kChunk;
  size_t m = last ? have_ : kChunk;
  out_.resize(m + kTag);
  pos_ = 0;
  uint8_t nonce[12];
  stream_nonce(counter_++, last, nonce);
  seal(key_.data(), nonce, buf_.data(), m, reinterpret_cast<uint8_t*>(&out_[0]));
  if (last) {
    done_ = true;
  } else {
    buf_[0] = buf_[kChunk];
    have_ = 1;
  }
  return true;
}

size_t EncryptReader::read(void* buf, size_t n) {
  while (pos_ == out_.size())
    if (!fill()) return 0;
  size_t k = std::min(n, out_.size() - pos_);
  std::memcpy(buf, out_.data() + pos_, k);
  pos_ += k;
  return k;
}

DecryptWriter::DecryptWriter(Writer& out, const std::vector<Key>& identities) : out_(out), ids_(&identities) {
  buf_.reserve(kSealedChunk);
}

DecryptWriter::DecryptWriter(Writer& out, const Opened& h, const std::array<uint8_t, kNonce>& nonce,
                             uint64_t start_chunk, uint64_t skip, int64_t limit)
    : out_(out), in_payload_(true), counter_(start_chunk), skip_(skip), limit_(limit), nonce_(nonce),
      nonce_have_(kNonce), opened_(h) {
  key_ = payload_key(h, nonce);
  buf_.reserve(kSealedChunk);
}

void DecryptWriter::emit(const uint8_t* p, size_t n) {
  if (skip_) {
    size_t s = size_t(std::min<uint64_t>(skip_, n));
    p += s, n -= s, skip_ -= s;
  }
  if (limit_ >= 0) n = size_t(std::min<uint64_t>(n, uint64_t(limit_) - written_));
  if (n) out_.write(p, n);
  written_ += n;
}

// One sealed chunk. A full-size chunk may be the last one (a payload that
// is a multiple of 64 KiB): it is tried as a middle chunk, then as the last.
void DecryptWriter::chunk(const uint8_t* p, size_t n) {
  if (last_seen_) fail_integrity("age payload: data after the final chunk");
  if (n < kTag) fail_integrity("age payload: truncated chunk " + std::to_string(counter_));
  uint8_t plain[kChunk];
  uint8_t nonce[12];
  bool last = false;
  stream_nonce(counter_, false, nonce);
  bool ok = n == kSealedChunk && open(key_.data(), nonce, p, n, plain);
  if (!ok) {
    stream_nonce(counter_, true, nonce);
    ok = open(key_.data(), nonce, p, n, plain);
    last = true;
  }
  if (!ok)
    fail_integrity("age payload: chunk " + std::to_string(counter_) + " fails authentication (tampered or truncated)");
  if (last && n == kTag && counter_ != 0) fail_integrity("age payload: empty final chunk");
  counter_++;
  last_seen_ = last;
  emit(plain, n - kTag);
}

void DecryptWriter::write(const void* data, size_t n) {
  auto p = static_cast<const uint8_t*>(data);
  while (n && !in_payload_) {
    size_t k = std::min<size_t>(n, 4096);
    head_.append(reinterpret_cast<const char*>(p), k);
    p += k, n -= k;
    if (open_header(head_, *ids_, &opened_)) {
      in_payload_ = true;
      std::string rest = head_.substr(opened_.header_size);
      head_.clear();
      head_.shrink_to_fit();
      write(rest.data(), rest.size());
    }
  }
  if (nonce_have_ < kNonce && n) {
    size_t k = std::min(n, kNonce - nonce_have_);
    std::memcpy(nonce_.data() + nonce_have_, p, k);
    nonce_have_ += k, p += k, n -= k;
    if (nonce_have_ == kNonce) key_ = payload_key(opened_, nonce_);
  }
  while (n) {
    if (last_seen_) fail_integrity("age payload: data after the final chunk");
    size_t k = std::min(n, kSealedChunk - buf_.size());
    buf_.insert(buf_.end(), p, p + k);
    p += k, n -= k;
    if (buf_.size() == kSealedChunk) {
      chunk(buf_.data(), buf_.size());
      buf_.clear();
    }
  }
}

void DecryptWriter::finish() {
  if (!in_payload_) {
    if (open_header(head_, *ids_, &opened_)) {
      in_payload_ = true;
      std::string rest = head_.substr(opened_.header_size);
      head_.clear();
      write(rest.data(), rest.size());
    } else {
      fail_integrity("age header: truncated");
    }
  }
  if (nonce_have_ < kNonce) fail_integrity("age payload: truncated nonce");
  if (!buf_.empty()) {
    chunk(buf_.data(), buf_.size());
    buf_.clear();
    if (!last_seen_) fail_integrity("age payload: truncated (no final chunk)");
  }
  if (last_seen_) return;
  if (limit_ >= 0 && written_ == uint64_t(limit_)) return;  // a ranged read that got what it asked for
  fail_integrity("age payload: truncated (no final chunk)");
}

}  // namespace age
}  // namespace ltx
