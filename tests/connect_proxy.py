"""An HTTP CONNECT proxy for the cbtfs tests (run it with /usr/bin/python3;
standard library only), as a corporate proxy in front of an API server:

  connect_proxy.py --port-file FILE --log FILE

Answers "CONNECT host:port HTTP/1.1" with "HTTP/1.1 200 Connection
established" and relays bytes both ways; anything else gets 405.  The log
gets one line per CONNECT: "CONNECT host:port".  Binds 127.0.0.1:<free
port> and writes the port to --port-file once listening.
"""
import argparse
import os
import socket
import socketserver
import threading


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        line = self.rfile.readline(8192).decode("latin1").strip()
        while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
            pass
        parts = line.split()
        if len(parts) != 3 or parts[0] != "CONNECT":
            self.wfile.write(b"HTTP/1.1 405 Method Not Allowed\r\n"
                             b"Content-Length: 0\r\n\r\n")
            return
        with self.server.lock, open(self.server.log, "a") as f:
            f.write("CONNECT %s\n" % parts[1])
        host, _, port = parts[1].rpartition(":")
        try:
            up = socket.create_connection((host.strip("[]"), int(port)), 10)
        except OSError as e:
            self.wfile.write(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
            return
        self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self.wfile.flush()

        def pump(a, b):
            try:
                while True:
                    d = a.recv(65536)
                    if not d:
                        break
                    b.sendall(d)
            except OSError:
                pass
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        t = threading.Thread(target=pump, args=(up, self.connection),
                             daemon=True)
        t.start()
        pump(self.connection, up)
        t.join()
        up.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--log", required=True)
    args = ap.parse_args()
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.lock = threading.Lock()
    srv.log = args.log
    open(args.log, "a").close()
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % srv.server_address[1])
    os.replace(tmp, args.port_file)
    srv.serve_forever()


if __name__ == "__main__":
    main()
