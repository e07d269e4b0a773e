// age.h - the age v1 file format (age-encryption.org/v1), streamed.
//
// An age file is a text header (one stanza per recipient wrapping a random
// 16-byte file key, then an HMAC of the header under that key) followed by
// the payload: a 16-byte nonce and ChaCha20-Poly1305 chunks of 64 KiB of
// plaintext, each sealed with its index and a last-chunk flag (STREAM), so
// truncation, reordering and tampering are all detected. Recipients are
// X25519 keys ("age1...", bech32) or one passphrase (scrypt); identities
// are the matching "AGE-SECRET-KEY-1..." keys or passphrases.
//
// The primitives are OpenSSL's (X25519, HKDF-SHA256, HMAC-SHA256,
// ChaCha20-Poly1305, scrypt); only age's framing and bech32 are written
// here. Memory is bounded: one chunk at a time, a header of at most 64 KiB.
//
// Errors: no identity unwraps the file key: Kind::Runtime (wrong key);
// a malformed header, a bad HMAC, a chunk that fails authentication,
// truncation or trailing data: Kind::Integrity.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ltx/io.h"

namespace ltx {
namespace age {

constexpr size_t kChunk = 64 * 1024;          // plaintext bytes per chunk
constexpr size_t kTag = 16;                    // Poly1305 tag
constexpr size_t kSealedChunk = kChunk + kTag;
constexpr size_t kNonce = 16;                  // payload nonce after the header
constexpr size_t kMaxHeader = 64 * 1024;       // longer headers are refused
constexpr int kMaxWorkFactor = 22;             // scrypt log2(N) accepted on decryption
constexpr int kDefaultWorkFactor = 18;         // as the age tool

// A recipient to encrypt to, or an identity to decrypt with.
struct Key {
  enum class Type { X25519, Passphrase } type = Type::X25519;
  std::array<uint8_t, 32> bytes{};  // X25519: public key (recipient) or secret scalar (identity)
  std::string passphrase;
  int work_factor = kDefaultWorkFactor;  // scrypt, encryption only
};

// "age1..." -> recipient; "AGE-SECRET-KEY-1..." -> identity. Kind::Usage on
// anything else (the message never contains the key).
Key parse_recipient(const std::string& s);
Key parse_identity(const std::string& s);
// The "age1..." recipient of an X25519 identity.
std::string recipient_of(const Key& identity);
std::string format_recipient(const Key& recipient);
std::string format_identity(const Key& identity);
Key generate_identity();
// Key files as the age tool writes them: one key a line, '#' comments and
// blank lines skipped. An identity file also yields its recipients.
std::vector<Key> parse_recipients_text(const std::string& text, const std::string& name);
std::vector<Key> parse_identities_text(const std::string& text, const std::string& name);

struct Keys {
  std::vector<Key> recipients;  // encrypt to all of these
  std::vector<Key> identities;  // decrypt with the first that matches
};

// Plaintext in, age file out, one chunk at a time.
class EncryptReader : public Reader {
 public:
  EncryptReader(Reader& plain, const std::vector<Key>& recipients);
  size_t read(void* buf, size_t n) override;
  // The size of the age file for a plaintext of n bytes with these recipients.
  static uint64_t sealed_size(uint64_t plain, size_t header_size);
  size_t header_size() const { return header_size_; }

 private:
  bool fill();
  Reader& in_;
  std::array<uint8_t, 32> key_{};
  std::string out_;  // bytes ready to hand out
  size_t pos_ = 0, header_size_ = 0;
  std::vector<uint8_t> buf_;
  size_t have_ = 0;
  uint64_t counter_ = 0;
  bool done_ = false;
};

// What a header says, once opened with an identity.
struct Opened {
  std::array<uint8_t, 16> file_key{};
  size_t header_size = 0;  // bytes up to and including the MAC line's '\n'
};
// Parses and opens a complete header at the start of buf. Returns false if
// buf holds no complete header yet (and is shorter than kMaxHeader).
bool open_header(const std::string& buf, const std::vector<Key>& identities, Opened* out);

// age file in, plaintext out. With start_chunk > 0 the input begins at that
// chunk's sealed bytes (a ranged read; set payload_key first), plaintext
// before `skip` bytes is dropped and after `limit` bytes (if >= 0) ignored.
class DecryptWriter : public Writer {
 public:
  DecryptWriter(Writer& out, const std::vector<Key>& identities);
  // Ranged form: the payload of a file whose header was opened already.
  DecryptWriter(Writer& out, const Opened& h, const std::array<uint8_t, kNonce>& nonce, uint64_t start_chunk,
                uint64_t skip, int64_t limit);
  void write(const void* buf, size_t n) override;
  // End of input: checks the final chunk (or, in ranged form, that the
  // limit was reached or the stream ended properly).
  void finish();
  uint64_t written() const { return written_; }

 private:
  void chunk(const uint8_t* p, size_t n);
  void emit(const uint8_t* p, size_t n);
  Writer& out_;
  const std::vector<Key>* ids_ = nullptr;
  std::string head_;  // header bytes until it is complete
  bool in_payload_ = false, last_seen_ = false;
  std::array<uint8_t, 32> key_{};
  std::vector<uint8_t> buf_;
  uint64_t counter_ = 0, skip_ = 0, written_ = 0;
  int64_t limit_ = -1;
  std::array<uint8_t, kNonce> nonce_{};
  size_t nonce_have_ = 0;
  Opened opened_;
};

std::array<uint8_t, 32> payload_key(const Opened& h, const std::array<uint8_t, kNonce>& nonce);

// Strict base64 without padding (age's encoding), exposed for tests.
std::string b64_encode(const void* p, size_t n);
bool b64_decode(const std::string& s, std::string* out);

}  // namespace age
}  // namespace ltx
