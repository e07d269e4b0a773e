#!/usr/bin/env python3
"""fake-s3.py - a small S3 server on 127.0.0.1 that misbehaves on purpose.

usage: fake-s3.py --port-file FILE [--mode-file FILE] [--cert PEM --key PEM]
                  [--lifetime SECONDS]

Objects live in memory: PUT, GET (with Range), HEAD, DELETE, ListObjectsV2
(prefix, start-after, max-keys, continuation-token, encoding-type=url) and
ListMultipartUploads (always empty) work for any bucket and any signature.
The MODE named in --mode-file (read at every request; none or empty: a
well-behaved server) makes the server hostile:
  tail-shifted   a suffix range (Range: bytes=-N) is answered 206 with the
                 first N+1 bytes and "Content-Range: bytes 0-N/SIZE"
  ignore-range   every Range is ignored: 200 and the whole object
  endless-list   every listing page is truncated, with new keys and a new token
  repeat-token   every listing page is empty and truncated, with the same token
  drip           object bodies are sent one byte a second
  evil-error     every request is answered 403 with an error Message holding
                 an escape sequence and a newline
With --cert and --key the server speaks TLS. The port goes to FILE once the
server listens; it exits after --lifetime seconds (default 120).
"""
import argparse
import http.server
import os
import re
import socketserver
import ssl
import threading
import time
import urllib.parse

MODE = ""
OBJECTS = {}  # "bucket/key" -> bytes
LOCK = threading.Lock()
MODE_FILE = None


def mode():
    try:
        with open(MODE_FILE) as f:
            return f.read().strip()
    except (OSError, TypeError):
        return ""


def xml_escape(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, code, body=b"", headers=()):
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def split(self):
        u = urllib.parse.urlsplit(self.path)
        parts = urllib.parse.unquote(u.path).lstrip("/").split("/", 1)
        q = dict(urllib.parse.parse_qsl(u.query, keep_blank_values=True))
        return parts[0], (parts[1] if len(parts) > 1 else ""), q

    def handle_one(self):
        global MODE
        MODE = mode()
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        if MODE == "evil-error":
            msg = b"<?xml version='1.0'?><Error><Code>AccessDenied</Code><Message>denied \x1b[31mRED\x1b[0m\n" \
                  b"s3-ls: all good&#10;forged</Message></Error>"
            return self.reply(403, msg, [("Content-Type", "application/xml")])
        bucket, key, q = self.split()
        if self.command == "GET" and not key and "uploads" in q:
            return self.reply(200, b"<?xml version='1.0'?><ListMultipartUploadsResult><Bucket>%s</Bucket>"
                              b"<IsTruncated>false</IsTruncated></ListMultipartUploadsResult>" % bucket.encode())
        if self.command == "GET" and not key:
            return self.list(bucket, q)
        name = bucket + "/" + key
        if self.command == "PUT":
            with LOCK:
                OBJECTS[name] = body
            return self.reply(200, b"", [("ETag", '"x"')])
        if self.command == "DELETE":
            with LOCK:
                OBJECTS.pop(name, None)
            return self.reply(204)
        with LOCK:
            data = OBJECTS.get(name)
        if data is None:
            return self.reply(404, b"<Error><Code>NoSuchKey</Code><Message>no such key</Message></Error>")
        if self.command == "HEAD":
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("ETag", '"x"')
            self.end_headers()
            return None
        return self.get(data)

    def get(self, data):
        size = len(data)
        rng = self.headers.get("Range")
        status, first, last = 200, 0, size - 1
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng or "")
        if m and MODE != "ignore-range":
            a, b = m.group(1), m.group(2)
            if a == "":  # suffix
                first, last = max(0, size - int(b)), size - 1
                if MODE == "tail-shifted":
                    first, last = 0, min(size - 1, int(b))
            else:
                first, last = int(a), min(size - 1, int(b) if b else size - 1)
            status = 206
        part = data[first:last + 1]
        self.send_response(status)
        self.send_header("Content-Length", str(len(part)))
        self.send_header("ETag", '"x"')
        if status == 206:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (first, last, size))
        self.end_headers()
        if MODE == "drip":
            for i in range(len(part)):
                self.wfile.write(part[i:i + 1])
                self.wfile.flush()
                time.sleep(1)
            return
        self.wfile.write(part)

    def list(self, bucket, q):
        prefix = q.get("prefix", "")
        enc = q.get("encoding-type") == "url"
        quote = (lambda s: urllib.parse.quote(s, safe="/")) if enc else (lambda s: s)
        out = ["<?xml version='1.0' encoding='UTF-8'?><ListBucketResult><Name>%s</Name>" % bucket,
               "<Prefix>%s</Prefix>" % xml_escape(quote(prefix))]
        if enc:
            out.append("<EncodingType>url</EncodingType>")
        if MODE in ("endless-list", "repeat-token"):
            page = int(q.get("continuation-token", "0") or 0) if MODE == "endless-list" else 0
            for i in range(1000 if MODE == "endless-list" else 0):
                out.append("<Contents><Key>%s%012d</Key><Size>1</Size></Contents>"
                           % (xml_escape(quote(prefix)), page * 1000 + i))
            out.append("<IsTruncated>true</IsTruncated><NextContinuationToken>%d</NextContinuationToken>"
                       % (page + 1))
        else:
            after = q.get("continuation-token") or q.get("start-after", "")
            mk = int(q.get("max-keys", "1000"))
            with LOCK:
                keys = sorted(k for k in OBJECTS if k.startswith(bucket + "/" + prefix))
            keys = [k[len(bucket) + 1:] for k in keys]
            keys = [k for k in keys if k > after]
            for k in keys[:mk]:
                out.append("<Contents><Key>%s</Key><Size>%d</Size><ETag>\"x\"</ETag>"
                           "<LastModified>2024-01-01T00:00:00.000Z</LastModified></Contents>"
                           % (xml_escape(quote(k)), len(OBJECTS[bucket + "/" + k])))
            if len(keys) > mk:
                out.append("<IsTruncated>true</IsTruncated><NextContinuationToken>%s</NextContinuationToken>"
                           % xml_escape(keys[mk - 1]))
            else:
                out.append("<IsTruncated>false</IsTruncated>")
        out.append("</ListBucketResult>")
        return self.reply(200, "".join(out).encode(), [("Content-Type", "application/xml")])

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_one


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass  # a client that gives up mid-response is what the tests expect


def main():
    global MODE_FILE
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--mode-file")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--lifetime", type=float, default=120)
    a = ap.parse_args()
    MODE_FILE = a.mode_file
    srv = Server(("127.0.0.1", 0), Handler)
    if a.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.cert, a.key)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    with open(a.port_file + ".tmp", "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(a.port_file + ".tmp", a.port_file)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    time.sleep(a.lifetime)


if __name__ == "__main__":
    main()
