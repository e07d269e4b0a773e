#!/usr/bin/env python3
"""fake-aws.py - the AWS credential endpoints on 127.0.0.1, for tests.

usage: fake-aws.py --port-file FILE --log FILE [--upstream PORT]
                   [--access-key ID] [--secret KEY] [--expiry SECONDS]
                   [--auth VALUE] [--web-token TOKEN] [--role NAME]
                   [--lifetime SECONDS]

One port serves:
  EC2 IMDSv2   PUT /latest/api/token (needs X-aws-ec2-metadata-token-ttl-seconds),
               GET /latest/meta-data/iam/security-credentials/[ROLE]
               (needs X-aws-ec2-metadata-token)
  ECS/EKS      GET /ecs/... (needs "Authorization: VALUE" with --auth)
  STS          POST /sts  Action=AssumeRoleWithWebIdentity (WebIdentityToken
               must equal --web-token)
  S3           anything else is forwarded to 127.0.0.1:UPSTREAM; a request
               whose x-amz-security-token was issued here and has expired
               gets 400 ExpiredToken, as AWS answers.
Every answer issues ACCESS-KEY/SECRET with a new session token "tok-N" that
expires --expiry seconds later. Each request is logged to FILE as
"SOURCE DETAIL" ("S3 PUT /bucket/key tok-3 ok"); secrets are never logged.
"""
import argparse
import datetime
import http.client
import http.server
import json
import os
import socketserver
import sys
import threading
import time
import urllib.parse

LOCK = threading.Lock()
A = None
ISSUED = {}  # token -> expiry (unix seconds)
IMDS_TOKEN = "imds-token-1"


def log(line):
    with LOCK, open(A.log, "a") as f:
        f.write(line + "\n")


def issue():
    with LOCK:
        tok = "tok-%d" % (len(ISSUED) + 1)
        exp = time.time() + A.expiry
        ISSUED[tok] = exp
    iso = datetime.datetime.fromtimestamp(exp, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return tok, iso


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, code, body, ctype="application/json"):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def creds_json(self, token_key):
        tok, iso = issue()
        return tok, json.dumps({"Code": "Success", "AccessKeyId": A.access_key,
                                "SecretAccessKey": A.secret, token_key: tok, "Expiration": iso})

    def _do(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        p = self.path
        if p.startswith("/latest/"):
            return self.imds()
        if p.startswith("/ecs/"):
            if A.auth and self.headers.get("Authorization") != A.auth:
                log("ECS unauthorized")
                return self.reply(401, '{"message":"unauthorized"}')
            tok, js = self.creds_json("Token")
            log("ECS %s %s" % (p, tok))
            return self.reply(200, js)
        if p.startswith("/sts"):
            return self.sts(body)
        return self.s3(body, n)

    def imds(self):
        p = self.path
        if p == "/latest/api/token":
            if self.command != "PUT" or not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                log("IMDS bad-token-request")
                return self.reply(400, "")
            log("IMDS token")
            return self.reply(200, IMDS_TOKEN, "text/plain")
        if self.headers.get("X-aws-ec2-metadata-token") != IMDS_TOKEN:
            log("IMDS unauthorized %s" % p)
            return self.reply(401, "")
        base = "/latest/meta-data/iam/security-credentials/"
        if p == base:
            log("IMDS role")
            return self.reply(200, A.role, "text/plain")
        if p == base + A.role:
            tok, js = self.creds_json("Token")
            log("IMDS creds %s" % tok)
            return self.reply(200, js)
        log("IMDS 404 %s" % p)
        return self.reply(404, "")

    def sts(self, body):
        f = urllib.parse.parse_qs(body.decode())
        get = lambda k: f.get(k, [""])[0]
        if (self.command != "POST" or get("Action") != "AssumeRoleWithWebIdentity" or not get("RoleArn")
                or "Authorization" in self.headers):
            log("STS bad-request")
            return self.reply(400, "<ErrorResponse><Error><Code>InvalidAction</Code>"
                              "<Message>bad request</Message></Error></ErrorResponse>", "text/xml")
        if get("WebIdentityToken") != A.web_token:
            log("STS denied %s" % get("RoleArn"))
            return self.reply(403, "<ErrorResponse><Error><Code>AccessDenied</Code>"
                              "<Message>Not authorized to perform sts:AssumeRoleWithWebIdentity</Message>"
                              "</Error></ErrorResponse>", "text/xml")
        tok, iso = issue()
        log("STS %s %s %s" % (get("RoleArn"), get("RoleSessionName"), tok))
        return self.reply(200, """<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <Credentials>
      <SessionToken>%s</SessionToken>
      <SecretAccessKey>%s</SecretAccessKey>
      <Expiration>%s</Expiration>
      <AccessKeyId>%s</AccessKeyId>
    </Credentials>
  </AssumeRoleWithWebIdentityResult>
</AssumeRoleWithWebIdentityResponse>""" % (tok, A.secret, iso, A.access_key), "text/xml")

    def s3(self, body, n):
        tok = self.headers.get("x-amz-security-token", "-")
        with LOCK:
            exp = ISSUED.get(tok)
        if tok != "-" and (exp is None or time.time() > exp):
            log("S3 %s %s %s expired" % (self.command, self.path, tok))
            return self.reply(400, "<Error><Code>ExpiredToken</Code><Message>The provided token has "
                              "expired.</Message></Error>", "application/xml")
        log("S3 %s %s %s ok" % (self.command, self.path, tok))
        if not A.upstream:
            return self.reply(404, "<Error><Code>NoSuchBucket</Code><Message>no upstream</Message></Error>",
                              "application/xml")
        up = http.client.HTTPConnection("127.0.0.1", A.upstream, timeout=120)
        up.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        for k, v in self.headers.items():
            up.putheader(k, v)
        up.endheaders(body if body or n else None)
        r = up.getresponse()
        data = r.read() if self.command != "HEAD" else b""
        self.send_response_only(r.status, r.reason)
        for k, v in r.getheaders():
            if k.lower() in ("connection", "transfer-encoding", "keep-alive", "content-length"):
                continue
            self.send_header(k, v)
        self.send_header("Content-Length", r.getheader("Content-Length", "0") if self.command == "HEAD"
                         else str(len(data)))
        self.end_headers()
        up.close()
        self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _do


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    global A
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--upstream", type=int, default=0)
    ap.add_argument("--access-key", default="test:tester")
    ap.add_argument("--secret", default="testing")
    ap.add_argument("--expiry", type=float, default=3600)
    ap.add_argument("--auth", default="")
    ap.add_argument("--web-token", default="web-token-1")
    ap.add_argument("--role", default="walsync-role")
    ap.add_argument("--lifetime", type=float, default=300)
    A = ap.parse_args()
    open(A.log, "w").close()
    srv = Server(("127.0.0.1", 0), Handler)
    with open(A.port_file + ".tmp", "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(A.port_file + ".tmp", A.port_file)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    time.sleep(A.lifetime)
    sys.exit(0)


if __name__ == "__main__":
    main()
