// http.cpp - a tiny HTTP/1.1 responder for a poll(2) loop (see ltx/http.h).
#include "ltx/http.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "ltx/error.h"

namespace ltx::http {

int listen_on(const std::string& addr) {
  size_t colon = addr.rfind(':');
  if (colon == std::string::npos || colon + 1 == addr.size())
    fail(Kind::Usage, addr + ": want HOST:PORT (127.0.0.1:9090, [::1]:9090)");
  std::string host = addr.substr(0, colon), port = addr.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (port.find_first_not_of("0123456789") != std::string::npos || port.size() > 5 || std::stoi(port) > 65535)
    fail(Kind::Usage, addr + ": bad port '" + port + "'");
  if (host.empty()) fail(Kind::Usage, addr + ": no host (0.0.0.0:PORT for every interface)");
  addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  int e = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &res);
  if (e != 0) fail(Kind::Usage, addr + ": " + ::gai_strerror(e));
  int fd = ::socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    ::freeaddrinfo(res);
    fail_errno(addr + ": socket");
  }
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd, res->ai_addr, res->ai_addrlen) != 0 || ::listen(fd, 16) != 0) {
    int err = errno;
    ::close(fd);
    ::freeaddrinfo(res);
    errno = err;
    fail_errno(addr);
  }
  ::freeaddrinfo(res);
  return fd;
}

std::string local_address(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "?";
  char host[INET6_ADDRSTRLEN] = "?";
  int port = 0;
  if (ss.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    ::inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
    port = ntohs(a->sin6_port);
    return "[" + std::string(host) + "]:" + std::to_string(port);
  }
  auto* a = reinterpret_cast<sockaddr_in*>(&ss);
  ::inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
  port = ntohs(a->sin_port);
  return std::string(host) + ":" + std::to_string(port);
}

Server::~Server() {
  for (auto& c : clients_) ::close(c.fd);
}

void Server::pollfds(std::vector<pollfd>* fds) const {
  fds->push_back({lfd_, POLLIN, 0});
  for (const auto& c : clients_)
    fds->push_back({c.fd, short(c.answered && !c.shut ? POLLOUT : POLLIN), 0});
}

int Server::timeout_ms(int64_t now) const {
  int64_t t = -1;
  for (const auto& c : clients_) {
    int64_t left = c.deadline > now ? c.deadline - now : 0;
    if (t < 0 || left < t) t = left;
  }
  return int(t);
}

namespace {
const char* reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 503: return "Service Unavailable";
    default: return "Error";
  }
}
}  // namespace

void Server::answer(Client& c) {
  Response r;
  size_t eol = c.in.find("\r\n");
  std::string line = c.in.substr(0, eol == std::string::npos ? c.in.find('\n') : eol);
  size_t s1 = line.find(' '), s2 = line.rfind(' ');
  if (s1 == std::string::npos || s2 == s1 || line.compare(s2 + 1, 5, "HTTP/") != 0) {
    r.status = 400;
    r.body = c.in.empty() ? "request head over " + std::to_string(kMaxRequest) + " bytes\n" : "bad request\n";
  } else if (line.substr(0, s1) != "GET") {
    r.status = 405;
    r.body = "method not allowed (GET only)\n";
  } else {
    std::string target = line.substr(s1 + 1, s2 - s1 - 1);
    r = handler_(target.substr(0, target.find('?')));
  }
  c.out = "HTTP/1.1 " + std::to_string(r.status) + " " + reason(r.status) + "\r\nContent-Type: " + r.content_type +
          "\r\nContent-Length: " + std::to_string(r.body.size()) + "\r\n" +
          (r.status == 405 ? "Allow: GET\r\n" : "") + "Connection: close\r\n\r\n" + r.body;
  c.answered = true;
  c.in.clear();
  c.in.shrink_to_fit();
}

void Server::on_readable(Client& c) {
  char buf[2048];
  for (;;) {
    ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
    if (n > 0) {
      if (c.answered) continue;  // lingering: the rest of a request we answered already
      c.in.append(buf, size_t(n));
      if (c.in.find("\r\n\r\n") != std::string::npos || c.in.find("\n\n") != std::string::npos) {
        answer(c);
      } else if (c.in.size() > kMaxRequest) {
        c.in.clear();  // answered 400
        answer(c);
      }
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    c.eof = true;  // EOF or error: nothing more to read (a request cut short gets no answer)
    if (n < 0) c.deadline = 0;
    return;
  }
}

void Server::flush(Client& c) {
  while (c.sent < c.out.size()) {
    ssize_t n = ::send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
    if (n > 0) {
      c.sent += size_t(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    c.deadline = 0;
    return;
  }
  // All sent: no more from us; linger (reading) until the client closes,
  // so that unread request bytes do not reset the connection under it.
  if (!c.shut) {
    ::shutdown(c.fd, SHUT_WR);
    c.shut = true;
    c.out.clear();
    c.out.shrink_to_fit();
    c.sent = 0;
  }
}

void Server::step(const pollfd* fds, size_t n, int64_t now) {
  for (size_t i = 0; i < n; i++) {
    if (!fds[i].revents || fds[i].fd == lfd_) continue;
    for (auto& c : clients_) {
      if (c.fd != fds[i].fd) continue;
      if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) on_readable(c);
      if (c.answered && c.deadline) flush(c);
      if (c.eof && (!c.answered || c.shut)) c.deadline = 0;  // done
    }
  }
  for (size_t i = 0; i < n; i++) {
    if (fds[i].fd != lfd_ || !(fds[i].revents & POLLIN)) continue;
    for (;;) {
      int fd = ::accept4(lfd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) break;
      if (clients_.size() >= kMaxClients) {
        ::close(fd);  // busy: the client sees the connection closed
        continue;
      }
      Client c;
      c.fd = fd;
      c.deadline = now + kDeadlineMs;
      clients_.push_back(std::move(c));
    }
  }
  for (size_t i = 0; i < clients_.size();) {
    if (clients_[i].deadline <= now) {
      ::close(clients_[i].fd);
      clients_[i] = std::move(clients_.back());
      clients_.pop_back();
    } else {
      i++;
    }
  }
}

}  // namespace ltx::http
