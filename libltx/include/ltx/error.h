// error.h - the one error type of libltx.
//
// The library never prints and never exits: it throws ltx::Error carrying a
// kind that tools map to the house exit statuses (1 runtime, 2 usage,
// 3 data integrity) and a message that gains context as it rises
// ("decode page 17: lz4 block: ...").
#pragma once
#include <stdexcept>
#include <string>

namespace ltx {

enum class Kind { Runtime = 1, Usage = 2, Integrity = 3 };

class Error : public std::runtime_error {
 public:
  Error(Kind k, const std::string& msg, bool permanent = false)
      : std::runtime_error(msg), kind_(k), permanent_(permanent) {}
  Kind kind() const { return kind_; }
  // Trying again unchanged cannot succeed, so a supervisor (walsync watch)
  // stops rather than retries: every usage and integrity error, and the
  // runtime errors raised by fail_permanent() (a database file that is
  // missing or not in WAL mode). Other runtime errors (network, server 5xx,
  // timeouts, a busy database) may pass.
  bool permanent() const { return permanent_ || kind_ != Kind::Runtime; }
  // Same kind, message prefixed with "ctx: ".
  Error wrap(const std::string& ctx) const { return Error(kind_, ctx + ": " + what(), permanent_); }

 private:
  Kind kind_;
  bool permanent_;
};

[[noreturn]] void fail(Kind k, const std::string& msg);
// A runtime error (exit 1) that retrying cannot cure (see Error::permanent).
[[noreturn]] void fail_permanent(const std::string& msg);
[[noreturn]] inline void fail_integrity(const std::string& msg) { fail(Kind::Integrity, msg); }
[[noreturn]] inline void fail_runtime(const std::string& msg) { fail(Kind::Runtime, msg); }
// Runtime error with ": strerror(errno)" appended.
[[noreturn]] void fail_errno(const std::string& msg);

// Text from outside (a server's error message, a key) made safe for one
// line on a terminal: C0 and C1 control characters, DEL and bytes that are
// not UTF-8 become \xNN; a backslash stays as it is.
std::string printable(const std::string& s);

// Run f(); rethrow any ltx::Error with "ctx: " in front.
template <class F>
auto with_context(const std::string& ctx, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const Error& e) {
    throw e.wrap(ctx);
  }
}

}  // namespace ltx
