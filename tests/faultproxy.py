"""A fault-injecting HTTP/1.1 proxy for the S3 tests (run with /usr/bin/python3).

Listens on 127.0.0.1, forwards every request unchanged (Host header too, so
SigV4 signatures stay valid) to the upstream server, and at the configured
rates instead answers 503 SlowDown, resets the connection before answering,
sends half a response body and resets, or delays the answer.  Faults are
drawn from a seeded random generator; counts go to --stats as JSON each
time one is injected, and so does "max_in_flight" each time it grows: the
most requests the proxy held at once (arrived, not yet answered).

  faultproxy.py --upstream 127.0.0.1:7480 --port-file F [--error R]
                [--reset R] [--truncate R] [--delay R --delay-ms MS]
                [--delay-ms-file FILE] [--seed N] [--stats FILE]
                [--tls-cert PEM --tls-key PEM] [--deny METHOD:SUBSTRING]...
                [--log FILE]

--log appends "METHOD PATH" for every request, as it arrives.

--delay-ms-file FILE: while FILE holds a number, it replaces --delay-ms
(read at every delayed request), so that a test can slow the proxy down
once its client is set up.

--deny answers 403 AccessDenied to every request of that method whose path
contains SUBSTRING (e.g. DELETE:/locks/), always.  With --tls-cert and --tls-key it serves HTTPS (the upstream stays HTTP).
"""
import argparse
import http.client
import http.server
import json
import random
import socket
import struct
import sys
import threading
import time

HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection",
       "te", "trailer", "upgrade"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--error", type=float, default=0.0)
    ap.add_argument("--reset", type=float, default=0.0)
    ap.add_argument("--truncate", type=float, default=0.0)
    ap.add_argument("--delay", type=float, default=0.0)
    ap.add_argument("--delay-ms", type=int, default=200)
    ap.add_argument("--delay-ms-file")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--stats")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--deny", action="append", default=[])
    ap.add_argument("--log")
    args = ap.parse_args()
    deny = [d.split(":", 1) for d in args.deny]
    up_host, up_port = args.upstream.rsplit(":", 1)
    rnd = random.Random(args.seed)
    lock = threading.Lock()
    log = open(args.log, "a", buffering=1) if args.log else None
    stats = {"requests": 0, "error": 0, "reset": 0, "truncate": 0,
             "delay": 0, "denied": 0, "max_in_flight": 0}
    in_flight = [0]

    def draw():
        with lock:
            stats["requests"] += 1
            x = rnd.random()
        for kind in ("error", "reset", "truncate", "delay"):
            rate = getattr(args, kind)
            if x < rate:
                return kind
            x -= rate
        return None

    def delay_ms():
        if args.delay_ms_file:
            try:
                with open(args.delay_ms_file) as f:
                    return int(f.read())
            except (OSError, ValueError):
                pass
        return args.delay_ms

    def write_stats():
        """Writes --stats; the caller holds the lock."""
        if args.stats:
            with open(args.stats + ".tmp", "w") as f:
                json.dump(stats, f)
            import os
            os.replace(args.stats + ".tmp", args.stats)

    def count(kind):
        with lock:
            stats[kind] += 1
            write_stats()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        upstream = None

        def log_message(self, *a):
            pass

        def reset(self):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True

        def forward(self, body):
            for attempt in range(2):
                if self.upstream is None:
                    self.upstream = http.client.HTTPConnection(
                        up_host, int(up_port), timeout=120)
                try:
                    self.upstream.putrequest(self.command, self.path,
                                             skip_host=True,
                                             skip_accept_encoding=True)
                    for k, v in self.headers.items():
                        if k.lower() not in HOP:
                            self.upstream.putheader(k, v)
                    self.upstream.endheaders(body)
                    resp = self.upstream.getresponse()
                    return resp, resp.read()
                except (http.client.HTTPException, OSError):
                    self.upstream.close()
                    self.upstream = None
                    if attempt == 1:
                        raise

        def s3_error(self, status, code, message):
            msg = ('<?xml version="1.0" encoding="UTF-8"?><Error>'
                   '<Code>%s</Code><Message>%s</Message></Error>'
                   % (code, message)).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(msg)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(msg)

        def handle_any(self):
            with lock:
                in_flight[0] += 1
                if in_flight[0] > stats["max_in_flight"]:
                    stats["max_in_flight"] = in_flight[0]
                    write_stats()
            try:
                self.proxy_request()
            finally:
                with lock:
                    in_flight[0] -= 1

        def proxy_request(self):
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else None
            if log is not None:
                with lock:
                    log.write("%s %s\n" % (self.command, self.path))
            if self.headers.get("Expect", "").lower() == "100-continue":
                pass  # the body was sent anyway by the time we read it
            if any(self.command == m and sub in self.path
                   for m, sub in deny):
                count("denied")
                self.s3_error(403, "AccessDenied", "denied by the test")
                return
            kind = draw()
            if kind == "error":
                count(kind)
                self.s3_error(503, "SlowDown", "injected")
                return
            if kind == "reset":
                count(kind)
                self.reset()
                return
            if kind == "delay":
                count(kind)
                time.sleep(delay_ms() / 1000.0)
            resp, data = self.forward(body)
            self.send_response(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() in HOP:
                    continue
                if k.lower() == "content-length" and self.command != "HEAD":
                    continue
                self.send_header(k, v)
            if self.command != "HEAD":
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command == "HEAD":
                return
            if kind == "truncate" and len(data) > 1:
                count(kind)
                self.wfile.write(data[:len(data) // 2])
                self.wfile.flush()
                self.reset()
                return
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True
        allow_reuse_address = True

    srv = Server(("127.0.0.1", 0), Handler)
    if args.tls_cert:
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    with open(args.port_file + ".tmp", "w") as f:
        f.write(str(srv.server_address[1]))
    import os
    os.replace(args.port_file + ".tmp", args.port_file)
    srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
