// http.h - a tiny HTTP/1.1 responder for a poll(2) loop (walsync watch
// --metrics-addr): one request per connection (Connection: close), GET
// only, nothing blocks. Bounded so that a slow or hostile client costs the
// loop nothing: at most kMaxRequest bytes of request head, kMaxClients
// connections (more are closed at once), kDeadlineMs from accept to close.
#pragma once
#include <poll.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace ltx::http {

constexpr size_t kMaxRequest = 8192;
constexpr size_t kMaxClients = 16;
constexpr int kDeadlineMs = 5000;

// A listening TCP socket (non-blocking, close-on-exec) on "HOST:PORT" or
// "[V6]:PORT"; PORT 0 picks a free one. A malformed address is a usage
// error, one that cannot be bound (in use, not ours) a runtime error.
int listen_on(const std::string& addr);
// "HOST:PORT" of a listening socket (the port chosen for PORT 0).
std::string local_address(int fd);

struct Response {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};
// path without its query; called for GET requests only.
using Handler = std::function<Response(const std::string& path)>;

class Server {
 public:
  Server(int listen_fd, Handler h) : lfd_(listen_fd), handler_(std::move(h)) {}
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  // Appends the descriptors to wait for.
  void pollfds(std::vector<pollfd>* fds) const;
  // After poll(2): accepts, reads, answers, writes, closes what is due.
  // fds: the same entries pollfds() appended, with their revents.
  void step(const pollfd* fds, size_t n, int64_t now_ms);
  // Milliseconds until the next client deadline (-1: no client).
  int timeout_ms(int64_t now_ms) const;

 private:
  struct Client {
    int fd = -1;
    int64_t deadline = 0;   // closed at or after it (0: done)
    std::string in, out;
    size_t sent = 0;
    bool answered = false;  // out holds the whole response
    bool shut = false;      // all of it sent, our side shut: lingering until EOF
    bool eof = false;       // the client has sent all it will
  };
  void on_readable(Client& c);
  void answer(Client& c);
  void flush(Client& c);
  int lfd_;
  Handler handler_;
  std::vector<Client> clients_;
};

}  // namespace ltx::http
