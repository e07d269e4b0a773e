#!/usr/bin/env python3
"""fault-proxy.py - an HTTP proxy on 127.0.0.1 that injects S3 faults.

usage: fault-proxy.py --upstream PORT --port-file FILE --log FILE
                      [--faults LIST] [--always FAULT] [--lifetime SECONDS]
                      [--delay-ms MS] [--rate BYTES_PER_SECOND]

Requests are forwarded verbatim (Host header included, so SigV4 signatures
stay valid) to 127.0.0.1:UPSTREAM. LIST is comma-separated [METHOD:]KIND
items; each request consumes the first remaining item whose METHOD matches
(or that has none). --always applies one fault to every matching request.
KIND:
  500    answer 500 InternalError (request not forwarded)
  503    answer 503 SlowDown (request not forwarded)
  429    answer 429 SlowDown (request not forwarded)
  reset  forward, send the response headers and half the body, then reset
  stall  forward, send the headers and half the body, then stall (until
         the client gives up or 60 s)
Every request is logged to FILE as "METHOD PATH FAULT" (FAULT "-" when
passed through). The proxy exits after --lifetime seconds (default 300).
--delay-ms holds every request that long before it is answered (a distant
store's round trip, for bench/vfs and bench/restore). --rate sends each
response body at most that fast on its connection (a real bucket's
per-connection bandwidth, for bench/restore); bodies passed through without
a fault are then streamed, not buffered.
"""
import argparse
import http.client
import http.server
import socket
import socketserver
import struct
import sys
import threading
import time

LOCK = threading.Lock()
QUEUE = []
ALWAYS = None
LOG = None
DELAY = 0.0
RATE = 0.0


def take_fault(method):
    with LOCK:
        if ALWAYS and (ALWAYS[0] in (None, method)):
            return ALWAYS[1]
        for i, (m, kind) in enumerate(QUEUE):
            if m in (None, method):
                del QUEUE[i]
                return kind
    return None


def parse_item(s):
    if ":" in s:
        m, k = s.split(":", 1)
        return (m.upper(), k)
    return (None, s)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def _do(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        fault = take_fault(self.command)
        if DELAY:
            time.sleep(DELAY)
        with LOCK, open(LOG, "a") as f:
            f.write("%s %s %s\n" % (self.command, self.path, fault or "-"))
        if fault in ("500", "503", "429"):
            code = {"500": "InternalError", "503": "SlowDown", "429": "SlowDown"}[fault]
            msg = ("<?xml version='1.0' encoding='UTF-8'?><Error><Code>%s</Code>"
                   "<Message>injected %s</Message></Error>" % (code, fault)).encode()
            self.send_response(int(fault))
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(msg)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(msg)
            return
        up = http.client.HTTPConnection("127.0.0.1", UPSTREAM, timeout=120)
        hdrs = {k: v for k, v in self.headers.items()}
        up.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        for k, v in hdrs.items():
            up.putheader(k, v)
        up.endheaders(body if body or n else None)
        r = up.getresponse()
        if fault is None and RATE and self.command != "HEAD" and r.getheader("Content-Length"):
            self.send_response_only(r.status, r.reason)
            for k, v in r.getheaders():
                if k.lower() not in ("connection", "transfer-encoding", "keep-alive"):
                    self.send_header(k, v)
            self.end_headers()
            t0, sent = time.time(), 0
            while True:
                chunk = r.read(64 * 1024)
                if not chunk:
                    break
                self.wfile.write(chunk)
                sent += len(chunk)
                ahead = sent / RATE - (time.time() - t0)
                if ahead > 0:
                    time.sleep(ahead)
            up.close()
            return
        data = r.read() if self.command != "HEAD" else b""
        self.send_response_only(r.status, r.reason)
        for k, v in r.getheaders():
            if k.lower() in ("connection", "transfer-encoding", "keep-alive"):
                continue
            if k.lower() == "content-length" and self.command != "HEAD":
                continue
            self.send_header(k, v)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        up.close()
        if fault in ("reset", "stall") and len(data) > 1:
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            if fault == "stall":
                end = time.time() + 60
                while time.time() < end:
                    time.sleep(0.2)
                    try:
                        self.connection.send(b"")
                    except OSError:
                        break
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        if fault in ("reset", "stall"):  # nothing to cut: reset before the body
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _do


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    global UPSTREAM, ALWAYS, LOG, DELAY
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", type=int, required=True)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--faults", default="")
    ap.add_argument("--always")
    ap.add_argument("--lifetime", type=float, default=300)
    ap.add_argument("--delay-ms", type=float, default=0)
    ap.add_argument("--rate", type=float, default=0, help="bytes per second per response body")
    a = ap.parse_args()
    DELAY = a.delay_ms / 1000.0
    global RATE
    RATE = a.rate
    UPSTREAM = a.upstream
    LOG = a.log
    QUEUE.extend(parse_item(s) for s in a.faults.split(",") if s)
    if a.always:
        ALWAYS = parse_item(a.always)
    open(LOG, "w").close()
    srv = Server(("127.0.0.1", 0), Handler)
    with open(a.port_file + ".tmp", "w") as f:
        f.write(str(srv.server_address[1]))
    import os
    os.rename(a.port_file + ".tmp", a.port_file)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    time.sleep(a.lifetime)
    sys.exit(0)


if __name__ == "__main__":
    main()
