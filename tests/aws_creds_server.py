"""AWS credential endpoints for the cbtfs tests, on 127.0.0.1 (run it with
/usr/bin/python3; standard library only).  One HTTP server speaks three
wire protocols, told apart by method and path as the real services are:

  STS      POST / (or GET /?...), form or query parameters
           Action=AssumeRoleWithWebIdentity, Version=2011-06-15, RoleArn,
           RoleSessionName, WebIdentityToken; the answer is the real
           AssumeRoleWithWebIdentityResponse XML (namespace
           https://sts.amazonaws.com/doc/2011-06-15/), errors the real
           ErrorResponse XML: 400 InvalidIdentityToken (wrong token), 403
           AccessDenied (wrong role ARN), 400 MissingParameter,
           400 InvalidAction.
  container  GET /v1/credentials (the EKS Pod Identity agent's path; any
           path but the IMDS ones): the Authorization header must be the
           expected token, else 401 with a JSON {"code", "message"}; the
           answer is {"AccessKeyId", "SecretAccessKey", "Token",
           "AccountId", "Expiration"}.
  IMDSv2   PUT /latest/api/token with X-aws-ec2-metadata-token-ttl-seconds
           (1-21600, else 400) gives a token; GET
           /latest/meta-data/iam/security-credentials/ and .../ROLE need
           X-aws-ec2-metadata-token equal to a token it gave (else 401, as
           an instance with http-tokens=required answers); the role's
           answer is {"Code": "Success", "LastUpdated", "Type": "AWS-HMAC",
           "AccessKeyId", "SecretAccessKey", "Token", "Expiration"}.

  aws_creds_server.py --keys FILE --port-file FILE --log FILE
                      [--web-token FILE] [--role-arn ARN]
                      [--auth-token FILE] [--role NAME]

--keys FILE is read at every issue: JSON {"sts": [[AK, SK], ...],
"container": [...], "imds": [...], "lifetime": SECONDS}; the Nth issue of
a service hands out its Nth pair (the last one again once they run out),
with a fresh random session token, valid for "lifetime" seconds (default
3600).  --web-token and --auth-token are read at every request (the real
services see rotated tokens).  The log gets one JSON line per request:
{"service": "sts" | "container" | "imds-token" | "imds-role" |
"imds-creds", "status": 200, "key": AK issued or null, "error": code,
"time": seconds since the epoch (float) when it was answered}.
"""
import argparse
import base64
import datetime
import json
import os
import secrets
import signal
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STS_NS = "https://sts.amazonaws.com/doc/2011-06-15/"


def now_utc():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def stamp(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def read(path):
    with open(path) as f:
        return f.read().strip()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def record(self, service, status, key=None, error=None):
        srv = self.server
        with srv.lock:
            with open(srv.args.log, "a") as f:
                f.write(json.dumps({"service": service, "status": status,
                                    "key": key, "error": error,
                                    "time": time.time()}) + "\n")

    def send(self, status, body, ctype, headers=()):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def issue(self, service):
        """The next key pair of service, a session token, an expiry."""
        srv = self.server
        with open(srv.args.keys) as f:
            cfg = json.load(f)
        with srv.lock:
            n = srv.issued.get(service, 0)
            srv.issued[service] = n + 1
        pairs = cfg[service]
        ak, sk = pairs[min(n, len(pairs) - 1)]
        token = base64.b64encode(b"FwoGZXIvYXdzE" +
                                 secrets.token_bytes(96)).decode()
        exp = now_utc() + datetime.timedelta(
            seconds=int(cfg.get("lifetime", 3600)))
        return ak, sk, token, exp

    # ---- STS --------------------------------------------------------------

    def sts_error(self, status, typ, code, message):
        body = ('<ErrorResponse xmlns="%s">\n  <Error>\n    <Type>%s</Type>'
                '\n    <Code>%s</Code>\n    <Message>%s</Message>\n'
                '  </Error>\n  <RequestId>%s</RequestId>\n</ErrorResponse>\n'
                % (STS_NS, typ, code, message, secrets.token_hex(16)))
        self.send(status, body, "text/xml")
        self.record("sts", status, error=code)

    def sts(self, params):
        args = self.server.args
        p = {k: v[0] for k, v in params.items()}
        if p.get("Action") != "AssumeRoleWithWebIdentity":
            return self.sts_error(400, "Sender", "InvalidAction",
                                  "Could not find operation %s for version "
                                  "%s" % (p.get("Action"), p.get("Version")))
        for k in ("Version", "RoleArn", "RoleSessionName",
                  "WebIdentityToken"):
            if not p.get(k):
                return self.sts_error(400, "Sender", "MissingParameter",
                                      "The request must contain the "
                                      "parameter %s" % k)
        if p["Version"] != "2011-06-15":
            return self.sts_error(400, "Sender", "InvalidAction",
                                  "Could not find operation "
                                  "AssumeRoleWithWebIdentity for version "
                                  + p["Version"])
        if p["WebIdentityToken"] != read(args.web_token):
            return self.sts_error(400, "Sender", "InvalidIdentityToken",
                                  "Incorrect token audience")
        if p["RoleArn"] != args.role_arn:
            return self.sts_error(403, "Sender", "AccessDenied",
                                  "Not authorized to perform "
                                  "sts:AssumeRoleWithWebIdentity")
        ak, sk, token, exp = self.issue("sts")
        role = args.role_arn.split(":role/", 1)[-1]
        body = """<AssumeRoleWithWebIdentityResponse xmlns="%s">
  <AssumeRoleWithWebIdentityResult>
    <Audience>sts.amazonaws.com</Audience>
    <AssumedRoleUser>
      <AssumedRoleId>AROACLKWSDQRAOEXAMPLE:%s</AssumedRoleId>
      <Arn>arn:aws:sts::123456789012:assumed-role/%s/%s</Arn>
    </AssumedRoleUser>
    <Provider>arn:aws:iam::123456789012:oidc-provider/oidc.eks.example</Provider>
    <Credentials>
      <SessionToken>%s</SessionToken>
      <SecretAccessKey>%s</SecretAccessKey>
      <Expiration>%s</Expiration>
      <AccessKeyId>%s</AccessKeyId>
    </Credentials>
    <SubjectFromWebIdentityToken>system:serviceaccount:cbtfs:cbtfs-backup</SubjectFromWebIdentityToken>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata>
    <RequestId>%s</RequestId>
  </ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>
""" % (STS_NS, p["RoleSessionName"], role, p["RoleSessionName"], token, sk,
       stamp(exp), ak, secrets.token_hex(16))
        self.send(200, body, "text/xml")
        self.record("sts", 200, key=ak)

    # ---- container (EKS Pod Identity / ECS) -------------------------------

    def container(self):
        want = read(self.server.args.auth_token)
        if self.headers.get("Authorization") != want:
            self.send(401, json.dumps({"code": "AccessDeniedException",
                                       "message": "invalid authorization "
                                       "token"}), "application/json")
            return self.record("container", 401, error="AccessDenied")
        ak, sk, token, exp = self.issue("container")
        self.send(200, json.dumps({"AccessKeyId": ak, "SecretAccessKey": sk,
                                   "Token": token,
                                   "AccountId": "123456789012",
                                   "Expiration": stamp(exp)}),
                  "application/json")
        self.record("container", 200, key=ak)

    # ---- IMDSv2 ------------------------------------------------------------

    def imds_token_ok(self):
        return self.headers.get("X-aws-ec2-metadata-token") in \
            self.server.imds_tokens

    def do_PUT(self):
        if self.path != "/latest/api/token":
            return self.send(404, "Not Found", "text/plain")
        ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
        if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
            self.send(400, "Bad Request", "text/plain")
            return self.record("imds-token", 400, error="ttl")
        tok = base64.b64encode(secrets.token_bytes(40)).decode()
        with self.server.lock:
            self.server.imds_tokens.add(tok)
        self.send(200, tok, "text/plain",
                  [("X-aws-ec2-metadata-token-ttl-seconds", ttl)])
        self.record("imds-token", 200)

    def imds(self, path):
        base = "/latest/meta-data/iam/security-credentials/"
        service = "imds-role" if path == base else "imds-creds"
        if not self.imds_token_ok():
            self.send(401, "Unauthorized", "text/plain")
            return self.record(service, 401, error="token")
        role = self.server.args.role
        if path == base:
            self.send(200, role, "text/plain")
            return self.record(service, 200)
        if path != base + role:
            self.send(404, "Not Found", "text/plain")
            return self.record(service, 404, error="role")
        ak, sk, token, exp = self.issue("imds")
        self.send(200, json.dumps({
            "Code": "Success", "LastUpdated": stamp(now_utc()),
            "Type": "AWS-HMAC", "AccessKeyId": ak, "SecretAccessKey": sk,
            "Token": token, "Expiration": stamp(exp)}, indent=2),
            "text/plain")
        self.record(service, 200, key=ak)

    # ---- dispatch -----------------------------------------------------------

    def do_GET(self):
        u = urllib.parse.urlsplit(self.path)
        if u.path.startswith("/latest/"):
            return self.imds(u.path)
        if u.path == "/" and u.query:
            return self.sts(urllib.parse.parse_qs(u.query))
        return self.container()

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n).decode()
        if self.headers.get("Content-Type", "").split(";")[0] != \
                "application/x-www-form-urlencoded":
            return self.sts_error(400, "Sender", "InvalidAction",
                                  "unsupported Content-Type")
        return self.sts(urllib.parse.parse_qs(body))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", required=True)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--web-token")
    ap.add_argument("--role-arn")
    ap.add_argument("--auth-token")
    ap.add_argument("--role", default="cbtfs-node-role")
    args = ap.parse_args()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.args = args
    srv.lock = threading.Lock()
    srv.issued = {}
    srv.imds_tokens = set()
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % srv.server_address[1])
    os.replace(tmp, args.port_file)
    srv.serve_forever()


if __name__ == "__main__":
    main()
