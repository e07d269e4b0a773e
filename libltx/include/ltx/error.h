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
  Error(Kind k, const std::string& msg) : std::runtime_error(msg), kind_(k) {}
  Kind kind() const { return kind_; }
  // Same kind, message prefixed with "ctx: ".
  Error wrap(const std::string& ctx) const { return Error(kind_, ctx + ": " + what()); }

 private:
  Kind kind_;
};

[[noreturn]] void fail(Kind k, const std::string& msg);
[[noreturn]] inline void fail_integrity(const std::string& msg) { fail(Kind::Integrity, msg); }
[[noreturn]] inline void fail_runtime(const std::string& msg) { fail(Kind::Runtime, msg); }
// Runtime error with ": strerror(errno)" appended.
[[noreturn]] void fail_errno(const std::string& msg);

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
