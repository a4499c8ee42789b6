"""A stand-in for a CSI driver's SnapshotMetadata service and for the
external-snapshot-metadata sidecar, for the cbtfs tests (run it with
/usr/bin/python3, which has Debian's grpc module).

It behaves like the CSI hostpath driver: snapshots are files
STATE/<handle>.snap, "allocated" means "not all zeros" and a delta lists the
blocks whose bytes differ.

  cbt_server.py --proto-dir DIR --gen-dir DIR --state DIR
                [--csi-socket PATH] [--csi-tls] [--sidecar]
                [--cert PEM --key PEM] [--token-file FILE]
                [--driver-name NAME] [--ports-file FILE] [--log FILE]

--csi-socket serves csi.v1 Identity + SnapshotMetadata in plaintext on
unix:PATH, --csi-tls serves them again over TLS on 127.0.0.1:<free port>,
--sidecar serves snapshotmetadata.SnapshotMetadata over TLS on another
free port.  Once everything is bound, --ports-file gets the shell
assignments CSI_TARGET=, CSI_TLS_TARGET=, SIDECAR_TARGET= (the ones that
apply).  --log gets one JSON line per call:
  {"api": "csi"|"sidecar", "method": "allocated"|"delta"|"plugin_info",
   "snapshot": target handle (csi) or VolumeSnapshot name (sidecar),
   "base": base handle or null, "namespace": ... or null,
   "starting_offset": N, "max_results": N (as requested), "messages": N,
   "tuples": N, "status": "OK" or a status code name, "fault": kind or null}
It is written before the client gets the status, except when the client
goes away first (status "CANCELLED", e.g. after a "hang"): then it comes
when the server notices, a moment later.  A "reset" is logged as
"UNAVAILABLE".  --token-file is read again at every sidecar call; without
it the sidecar takes any non-empty token.

STATE/config.json (optional) is read again at every call:
  block_size            4096
  block_type            "FIXED_LENGTH" (one tuple per block) or
                        "VARIABLE_LENGTH" (adjacent blocks merged)
  default_max_results   256 (used when a request says 0)
  out_of_range_past_end false: starting_offset >= capacity gives an empty
                        stream; true: OUT_OF_RANGE
  sidecar_snapshots     {"NAMESPACE/NAME": "handle", ...}
  faults                [{...}, ...], see below

Faults.  At each allocated/delta call that gets as far as streaming, the
list is scanned in order and the FIRST entry that matches the call and has
uses left is applied to that call (one fault per call; each use counts one
of its "times").  Keys:
  api     "csi" | "sidecar" | "any" (default)
  method  "allocated" | "delta" | "any" (default); "any" does not match
          GetPluginInfo, which only an explicit "plugin_info" entry with
          kind "abort" affects
  times   calls it applies to (default 1; negative = every call).  The
          counts live in memory and start again whenever config.json's
          mtime or content changes.
  after   N, messages sent normally before the fault acts (default 0)
  kind    abort     end the call after N messages with "code" (default
                    UNAVAILABLE) and "details" (default "injected fault")
          reset     after N messages, break the connection: TCP connections
                    get a real RST, unix socket connections are shut down
                    (see break_connection)
          hang      after N messages send nothing more until the client
                    cancels, at most "seconds" (default 300); if the client
                    is still there then, end with "code"/"details"
          disorder  message N (0-based; at least 1) starts with a copy of
                    the last tuple of the message before it
          overlap   in message N the second tuple starts inside the first
                    (with a single tuple, an overlapping one is appended)
          capacity  from message N on, volume_capacity_bytes is 1 MiB larger
          type      from message N on, block_metadata_type is flipped
          outside   the last tuple of message N ends beyond the capacity
          zero_size the first tuple of message N has size_bytes 0
  abort/reset/hang act at the end of the stream when it has N messages or
  fewer; the others do nothing then.
"""
import argparse
import contextlib
import ctypes
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent import futures

import grpc

FIXED, VARIABLE = 1, 2
BLOCK_TYPES = {"FIXED_LENGTH": FIXED, "VARIABLE_LENGTH": VARIABLE}
MIB = 1 << 20
READ_CHUNK = 4 * MIB
KINDS = ("abort", "reset", "hang", "disorder", "overlap", "capacity", "type",
         "outside", "zero_size")
SC = grpc.StatusCode

shutting_down = threading.Event()


class Abort(Exception):
    """Ends the current call with a gRPC status."""

    def __init__(self, code, details):
        super().__init__(details)
        self.code = code
        self.details = details


def status_code(value, default):
    if value is None:
        return default
    if isinstance(value, int):
        for c in SC:
            if c.value[0] == value:
                return c
    elif isinstance(value, str):
        try:
            return SC[value.upper()]
        except KeyError:
            pass
    raise Abort(SC.INTERNAL, "config.json: bad status code %r" % (value,))


def norm_host(host):
    host = host.strip("[]").lower()
    return host[7:] if host.startswith("::ffff:") else host


def generate_stubs(proto_dir, gen_dir):
    os.makedirs(gen_dir, exist_ok=True)
    cmd = ["protoc", "-I", proto_dir, "--python_out=" + gen_dir,
           "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin",
           "--grpc_python_out=" + gen_dir,
           "csi_snapshot_metadata.proto", "snapshot_metadata.proto"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write("cbt_server: protoc failed: %s\n%s" %
                         (" ".join(cmd), r.stderr))
        sys.exit(2)
    sys.path.insert(0, gen_dir)


# ---------------------------------------------------------------------------
# Reading snapshots

def changed_blocks(target, base, first_block, cap, bs):
    """Indexes of the blocks of target (from first_block on, below cap) that
    are not all zeros (base None) or differ from the same block of base."""
    chunk = bs * max(1, READ_CHUNK // bs)
    zero_chunk = bytes(chunk)
    zero_block = bytes(bs)
    pos = first_block * bs
    with contextlib.ExitStack() as stack:
        ft = stack.enter_context(open(target, "rb"))
        fb = stack.enter_context(open(base, "rb")) if base else None
        ft.seek(pos)
        if fb:
            fb.seek(pos)
        while pos < cap:
            t = ft.read(min(chunk, cap - pos))
            n = len(t)
            if n == 0:
                break
            blk = pos // bs
            if fb is None:
                if t == (zero_chunk if n == chunk else bytes(n)):
                    pos += n
                    continue
                for i in range(0, n, bs):
                    piece = t[i:i + bs]
                    if piece != (zero_block if len(piece) == bs
                                 else bytes(len(piece))):
                        yield blk + i // bs
            else:
                # base blocks are read whole, so a last partial block of the
                # target differs from a longer base block
                b = fb.read(-(-n // bs) * bs)
                if len(b) == n and t == b:
                    pos += n
                    continue
                for i in range(0, n, bs):
                    if t[i:i + bs] != b[i:i + bs]:
                        yield blk + i // bs
            pos += n


def extents(blocks, btype, cap, bs):
    """(offset, size) tuples for the block indexes, clipped to cap."""
    start = end = None
    for b in blocks:
        off = b * bs
        if btype == FIXED:
            yield off, min(bs, cap - off)
            continue
        if start is not None and off == end:
            end = off + bs
            continue
        if start is not None:
            yield start, min(end, cap) - start
        start, end = off, off + bs
    if start is not None:
        yield start, min(end, cap) - start


def batches(tuples, size):
    batch = []
    for t in tuples:
        batch.append(t)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# ---------------------------------------------------------------------------
# Calls

class Call:
    """One RPC: its log record, written exactly once when it ends."""

    def __init__(self, fx, api, method, context, **fields):
        self.fx = fx
        self.context = context
        self.rec = {"api": api, "method": method, "snapshot": None,
                    "base": None, "namespace": None, "starting_offset": 0,
                    "max_results": 0, "messages": 0, "tuples": 0,
                    "status": None, "fault": None}
        self.rec.update(fields)
        self.lock = threading.Lock()
        self.logged = False
        self.ended = threading.Event()
        if not context.add_callback(self._terminated):
            self.ended.set()

    def _terminated(self):
        # the RPC ended before the handler logged it: the client went away
        self.ended.set()
        self.finish("CANCELLED")

    def finish(self, status):
        with self.lock:
            if self.logged:
                return
            self.logged = True
        self.rec["status"] = status
        self.fx.log(self.rec)


class Fixture:
    def __init__(self, args, csi_pb2, sm_pb2):
        self.args = args
        self.csi_pb2 = csi_pb2
        self.sm_pb2 = sm_pb2
        self.lock = threading.Lock()
        self.log_lock = threading.Lock()
        self.cfg_key = None
        self.fault_uses = {}
        self.csi_path = None
        self.tcp_ports = set()

    # -- configuration and faults --------------------------------------

    def config(self):
        path = os.path.join(self.args.state, "config.json")
        try:
            with open(path, "rb") as f:
                raw = f.read()
                key = (os.fstat(f.fileno()).st_mtime_ns, raw)
        except FileNotFoundError:
            raw, key = b"", None
        with self.lock:
            if key != self.cfg_key:
                self.cfg_key = key
                self.fault_uses = {}
        if not raw.strip():
            return {}
        try:
            cfg = json.loads(raw)
        except ValueError as e:
            raise Abort(SC.INTERNAL, "config.json: %s" % e)
        if not isinstance(cfg, dict):
            raise Abort(SC.INTERNAL, "config.json: not an object")
        return cfg

    def pick_fault(self, cfg, api, method):
        faults = cfg.get("faults") or []
        with self.lock:
            for i, f in enumerate(faults):
                if f.get("api", "any") not in ("any", api):
                    continue
                m = f.get("method", "any")
                if m != method and not (m == "any" and method != "plugin_info"):
                    continue
                times = int(f.get("times", 1))
                used = self.fault_uses.get(i, 0)
                if 0 <= times <= used:
                    continue
                self.fault_uses[i] = used + 1
                break
            else:
                return None
        kind = f.get("kind")
        if kind not in KINDS:
            raise Abort(SC.INTERNAL, "config.json: bad fault kind %r" % kind)
        return f

    def log(self, rec):
        if not self.args.log:
            return
        line = json.dumps(rec, sort_keys=False) + "\n"
        with self.log_lock:
            with open(self.args.log, "a") as f:
                f.write(line)
                f.flush()

    # -- breaking a connection -------------------------------------------

    def break_connection(self, peer):
        """Breaks the connection the call came in on, the hard way.  grpcio
        does not hand out its sockets, so the socket is found among this
        process's descriptors (a dup() of it names the same socket):
        - TCP (peer "ipv4:127.0.0.1:PORT"): the socket whose peer is that address
          and whose local port is one of ours is disconnected with
          connect(AF_UNSPEC), which makes Linux send a RST (tcp_disconnect);
        - unix socket: the peer address is not unique, so every accepted
          connection on the CSI socket is shut down (SHUT_RDWR); the client
          sees the stream end without a status.  A test normally has one
          client connection at a time.
        Returns how many sockets were broken."""
        libc = ctypes.CDLL(None, use_errno=True)
        want = None
        if peer.startswith(("ipv4:", "ipv6:")):
            host, port = peer[5:].rsplit(":", 1)
            want = (norm_host(host), int(port))
        broken = 0
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            try:
                if not os.readlink("/proc/self/fd/%d" % fd).startswith("socket:"):
                    continue
                s = socket.socket(fileno=os.dup(fd))
            except OSError:
                continue
            with s:
                try:
                    if s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                        continue
                    # grpc listens on AF_INET6 sockets, with v4-mapped
                    # addresses for 127.0.0.1
                    if want and s.family in (socket.AF_INET, socket.AF_INET6):
                        ph, pp = s.getpeername()[:2]
                        if ((norm_host(ph), pp) == want
                                and s.getsockname()[1] in self.tcp_ports):
                            unspec = (ctypes.c_ubyte * 16)()  # sa_family 0
                            if libc.connect(s.fileno(), unspec, 16) != 0:
                                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                             b"\1\0\0\0\0\0\0\0")
                                s.shutdown(socket.SHUT_RDWR)
                            broken += 1
                    elif (peer.startswith("unix") and s.family == socket.AF_UNIX
                          and self.csi_path and s.getsockname() == self.csi_path):
                        s.shutdown(socket.SHUT_RDWR)
                        broken += 1
                except OSError:
                    continue
        return broken

    # -- the stream ------------------------------------------------------

    def snap_path(self, handle):
        if not handle or "/" in handle or handle in (".", ".."):
            return None
        p = os.path.join(self.args.state, handle + ".snap")
        return p if os.path.isfile(p) else None

    def run(self, call, resp_cls, target, base, starting_offset, max_results,
            cfg=None):
        """The generator a streaming handler returns."""
        try:
            if cfg is None:
                cfg = self.config()
            yield from self.stream(call, resp_cls, cfg, target, base,
                                   starting_offset, max_results)
            call.finish("OK")
        except Abort as a:
            call.finish(a.code.name)
            call.context.abort(a.code, a.details)
        except GeneratorExit:
            call.finish("CANCELLED")
            raise
        except Exception:
            call.finish("UNKNOWN")
            raise

    def stream(self, call, resp_cls, cfg, target, base, starting_offset,
               max_results):
        try:
            bs = int(cfg.get("block_size", 4096))
            btype = BLOCK_TYPES[cfg.get("block_type", "FIXED_LENGTH")]
            default_max = int(cfg.get("default_max_results", 256))
            assert bs > 0 and default_max > 0
        except (KeyError, ValueError, TypeError, AssertionError):
            raise Abort(SC.INTERNAL, "config.json: bad block_size, block_type "
                        "or default_max_results")
        if max_results < 0:
            raise Abort(SC.INVALID_ARGUMENT, "max_results must not be negative")
        if starting_offset < 0:
            raise Abort(SC.OUT_OF_RANGE, "starting_offset %d is negative"
                        % starting_offset)
        if base is not None:
            bpath = self.snap_path(base)
            if bpath is None:
                raise Abort(SC.NOT_FOUND, "cannot find the base snapshot %s"
                            % base)
            tpath = self.snap_path(target)
            if tpath is None:
                raise Abort(SC.NOT_FOUND, "cannot find the target snapshot %s"
                            % target)
        else:
            bpath = None
            tpath = self.snap_path(target)
            if tpath is None:
                raise Abort(SC.NOT_FOUND, "cannot find the snapshot %s" % target)
        cap = os.path.getsize(tpath)
        if starting_offset >= cap:
            if cfg.get("out_of_range_past_end"):
                raise Abort(SC.OUT_OF_RANGE, "starting_offset %d is beyond the "
                            "volume size %d" % (starting_offset, cap))
            tuples = iter(())
        else:
            blocks = changed_blocks(tpath, bpath, starting_offset // bs, cap, bs)
            tuples = extents(blocks, btype, cap, bs)
        fault = self.pick_fault(cfg, call.rec["api"], call.rec["method"])
        if fault:
            call.rec["fault"] = fault["kind"]
        yield from self.deliver(call, resp_cls, batches(tuples, max_results
                                                        or default_max),
                                btype, cap, bs, fault)

    def deliver(self, call, resp_cls, msgs, btype, cap, bs, fault):
        kind = fault["kind"] if fault else None
        try:
            at = int(fault.get("after", 0)) if fault else 0
        except (ValueError, TypeError):
            raise Abort(SC.INTERNAL, "config.json: bad \"after\"")
        if kind == "disorder":
            at = max(at, 1)
        terminal = kind in ("abort", "reset", "hang")
        prev_last = None
        for idx, batch in enumerate(msgs):
            if terminal and idx == at:
                yield from self.terminate(call, fault)
                return
            mcap, mtype = cap, btype
            if kind == "capacity" and idx >= at:
                mcap += MIB
            if kind == "type" and idx >= at:
                mtype = VARIABLE if btype == FIXED else FIXED
            if idx == at:
                batch = self.mutate(kind, batch, prev_last, mcap, bs)
            resp = resp_cls(block_metadata_type=mtype,
                            volume_capacity_bytes=mcap)
            add = resp.block_metadata.add
            for off, size in batch:
                add(byte_offset=off, size_bytes=size)
            prev_last = batch[-1]
            call.rec["messages"] += 1
            call.rec["tuples"] += len(batch)
            yield resp
        if terminal:
            yield from self.terminate(call, fault)

    @staticmethod
    def mutate(kind, batch, prev_last, cap, bs):
        batch = list(batch)
        if kind == "disorder" and prev_last is not None:
            batch[0] = prev_last
        elif kind == "overlap":
            off, size = batch[0]
            bad = (off + max(1, size // 2), batch[1][1] if len(batch) > 1
                   else size)
            if len(batch) > 1:
                batch[1] = bad
            else:
                batch.append(bad)
        elif kind == "outside":
            off = max(batch[-1][0], cap - bs // 2)
            batch[-1] = (off, bs)
        elif kind == "zero_size":
            batch[0] = (batch[0][0], 0)
        return batch

    def terminate(self, call, fault):
        """abort / reset / hang; a generator so that it can end the stream
        without a status of its own (after the client went away)."""
        kind = fault["kind"]
        code = status_code(fault.get("code"), SC.UNAVAILABLE)
        details = str(fault.get("details", "injected fault"))
        if kind == "abort":
            raise Abort(code, details)
        if kind == "reset":
            time.sleep(0.2)  # let the messages sent so far reach the client
            # logged first, so that the line is there when the client sees
            # the error
            call.finish("UNAVAILABLE")
            peer = call.context.peer()
            n = self.break_connection(peer)
            sys.stderr.write("cbt_server: reset: broke %d socket(s) for %s\n"
                             % (n, peer))
            if n:
                call.ended.wait(5)
                if call.ended.is_set():
                    return
            # could not find / break the socket: the closest thing
            raise Abort(SC.UNAVAILABLE, "connection reset")
        # hang
        try:
            limit = float(fault.get("seconds", 300))
        except (TypeError, ValueError):
            limit = 300.0
        deadline = time.monotonic() + limit
        # (a server stop cancels the call too)
        while not call.ended.is_set() and call.context.is_active():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            call.ended.wait(min(left, 0.5))
        if call.ended.is_set() or not call.context.is_active():
            call.finish("CANCELLED")
            return
        raise Abort(code, "injected hang ended" if "details" not in fault
                    else details)
        yield  # pragma: no cover (makes this a generator)


def check_plugin_info_fault(fx, cfg):
    f = fx.pick_fault(cfg, "csi", "plugin_info")
    if f and f["kind"] == "abort":
        raise Abort(status_code(f.get("code"), SC.UNAVAILABLE),
                    str(f.get("details", "injected fault")))


# ---------------------------------------------------------------------------
# Servicers

def make_servicers(fx, csi_grpc, sm_grpc):
    csi = fx.csi_pb2
    sm = fx.sm_pb2

    class Identity(csi_grpc.IdentityServicer):
        def GetPluginInfo(self, request, context):
            call = Call(fx, "csi", "plugin_info", context)
            try:
                check_plugin_info_fault(fx, fx.config())
            except Abort as a:
                call.finish(a.code.name)
                context.abort(a.code, a.details)
            call.rec["messages"] = 1
            call.finish("OK")
            return csi.GetPluginInfoResponse(name=fx.args.driver_name,
                                             vendor_version="cbtfs-fixture")

    class CsiMetadata(csi_grpc.SnapshotMetadataServicer):
        def GetMetadataAllocated(self, request, context):
            call = Call(fx, "csi", "allocated", context,
                        snapshot=request.snapshot_id,
                        starting_offset=request.starting_offset,
                        max_results=request.max_results)
            if not request.snapshot_id:
                return self.invalid(call, "snapshot_id is required")
            return fx.run(call, csi.GetMetadataAllocatedResponse,
                          request.snapshot_id, None, request.starting_offset,
                          request.max_results)

        def GetMetadataDelta(self, request, context):
            call = Call(fx, "csi", "delta", context,
                        snapshot=request.target_snapshot_id,
                        base=request.base_snapshot_id,
                        starting_offset=request.starting_offset,
                        max_results=request.max_results)
            if not request.base_snapshot_id:
                return self.invalid(call, "base_snapshot_id is required")
            if not request.target_snapshot_id:
                return self.invalid(call, "target_snapshot_id is required")
            return fx.run(call, csi.GetMetadataDeltaResponse,
                          request.target_snapshot_id, request.base_snapshot_id,
                          request.starting_offset, request.max_results)

        @staticmethod
        def invalid(call, msg):
            call.finish("INVALID_ARGUMENT")
            call.context.abort(SC.INVALID_ARGUMENT, msg)

    class Sidecar(sm_grpc.SnapshotMetadataServicer):
        # like the real sidecar: arguments first, then the token, then the
        # VolumeSnapshot lookup
        def GetMetadataAllocated(self, request, context):
            call = Call(fx, "sidecar", "allocated", context,
                        snapshot=request.snapshot_name,
                        namespace=request.namespace,
                        starting_offset=request.starting_offset,
                        max_results=request.max_results)
            return self.serve(call, request, sm.GetMetadataAllocatedResponse,
                              request.snapshot_name, None, "snapshotName")

        def GetMetadataDelta(self, request, context):
            call = Call(fx, "sidecar", "delta", context,
                        snapshot=request.target_snapshot_name,
                        base=request.base_snapshot_id,
                        namespace=request.namespace,
                        starting_offset=request.starting_offset,
                        max_results=request.max_results)
            return self.serve(call, request, sm.GetMetadataDeltaResponse,
                              request.target_snapshot_name,
                              request.base_snapshot_id, "targetSnapshotName")

        def serve(self, call, request, resp_cls, name, base, name_field):
            try:
                if not request.security_token:
                    raise Abort(SC.INVALID_ARGUMENT, "securityToken is missing")
                if not request.namespace:
                    raise Abort(SC.INVALID_ARGUMENT,
                                "namespace parameter cannot be empty")
                if base is not None and not base:
                    raise Abort(SC.INVALID_ARGUMENT,
                                "baseSnapshotId cannot be empty")
                if not name:
                    raise Abort(SC.INVALID_ARGUMENT,
                                "%s cannot be empty" % name_field)
                if not self.token_ok(request.security_token):
                    raise Abort(SC.UNAUTHENTICATED, "unauthenticated user")
                cfg = fx.config()
                key = "%s/%s" % (request.namespace, name)
                handle = (cfg.get("sidecar_snapshots") or {}).get(key)
                if not handle:
                    raise Abort(SC.UNAVAILABLE,
                                "failed to get VolumeSnapshot %s" % key)
            except Abort as a:
                call.finish(a.code.name)
                call.context.abort(a.code, a.details)
            return fx.run(call, resp_cls, handle, base,
                          request.starting_offset, request.max_results, cfg)

        @staticmethod
        def token_ok(token):
            if not fx.args.token_file:
                return True
            try:
                with open(fx.args.token_file) as f:
                    want = f.read().strip()
            except OSError:
                return False
            return bool(want) and token == want

    return Identity(), CsiMetadata(), Sidecar()


# ---------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--proto-dir", required=True)
    ap.add_argument("--gen-dir", required=True)
    ap.add_argument("--state", required=True)
    ap.add_argument("--csi-socket")
    ap.add_argument("--csi-tls", action="store_true")
    ap.add_argument("--sidecar", action="store_true")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--token-file")
    ap.add_argument("--driver-name", default="hostpath.csi.k8s.io")
    ap.add_argument("--ports-file")
    ap.add_argument("--log")
    args = ap.parse_args()
    args.state = os.path.abspath(args.state)
    if args.log:
        args.log = os.path.abspath(args.log)
    if (args.csi_tls or args.sidecar) and not (args.cert and args.key):
        ap.error("--csi-tls and --sidecar need --cert and --key")
    if not (args.csi_socket or args.csi_tls or args.sidecar):
        ap.error("nothing to serve")

    generate_stubs(args.proto_dir, args.gen_dir)
    import csi_snapshot_metadata_pb2 as csi_pb2
    import csi_snapshot_metadata_pb2_grpc as csi_grpc
    import snapshot_metadata_pb2 as sm_pb2
    import snapshot_metadata_pb2_grpc as sm_grpc

    fx = Fixture(args, csi_pb2, sm_pb2)
    identity, csi_md, sidecar = make_servicers(fx, csi_grpc, sm_grpc)
    creds = None
    if args.cert:
        with open(args.key, "rb") as f:
            key = f.read()
        with open(args.cert, "rb") as f:
            cert = f.read()
        creds = grpc.ssl_server_credentials([(key, cert)])

    servers = []
    lines = []
    # separate servers, so that each port serves only its own API
    if args.csi_socket or args.csi_tls:
        srv = grpc.server(futures.ThreadPoolExecutor(8))
        csi_grpc.add_IdentityServicer_to_server(identity, srv)
        csi_grpc.add_SnapshotMetadataServicer_to_server(csi_md, srv)
        if args.csi_socket:
            path = os.path.abspath(args.csi_socket)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            srv.add_insecure_port("unix:" + path)
            fx.csi_path = path
            lines.append(("CSI_TARGET", "unix:" + path))
        if args.csi_tls:
            port = srv.add_secure_port("127.0.0.1:0", creds)
            if not port:
                sys.exit("cbt_server: cannot bind the CSI TLS port")
            fx.tcp_ports.add(port)
            lines.append(("CSI_TLS_TARGET", "127.0.0.1:%d" % port))
        servers.append(srv)
    if args.sidecar:
        srv = grpc.server(futures.ThreadPoolExecutor(8))
        sm_grpc.add_SnapshotMetadataServicer_to_server(sidecar, srv)
        port = srv.add_secure_port("127.0.0.1:0", creds)
        if not port:
            sys.exit("cbt_server: cannot bind the sidecar port")
        fx.tcp_ports.add(port)
        lines.append(("SIDECAR_TARGET", "127.0.0.1:%d" % port))
        servers.append(srv)

    def on_signal(signum, frame):
        shutting_down.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for srv in servers:
        srv.start()

    text = "".join("%s=%s\n" % (k, shlex.quote(v)) for k, v in lines)
    if args.ports_file:
        tmp = "%s.tmp.%d" % (args.ports_file, os.getpid())
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, args.ports_file)
    sys.stdout.write(text)
    sys.stdout.flush()

    while not shutting_down.wait(0.2):
        pass
    done = [srv.stop(0.5) for srv in servers]
    for ev in done:
        ev.wait(3)
    sys.stdout.flush()
    sys.stderr.flush()
    # handler threads still running (a hang, a long read) must not keep
    # the process alive; every log line is already written
    os._exit(0)


if __name__ == "__main__":
    main()
