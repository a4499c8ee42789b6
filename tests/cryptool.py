#!/usr/bin/python3
"""Encrypted cbtfs repositories, from outside cbtfs (tests only).

    cryptool.py check REPO_DIR
        Decodes every object of an encrypted repository (a directory, or an
        S3 repository mirrored into one) the way cbtfs-repository(5)
        describes it, independently of cbtfs's C code: scrypt (hashlib),
        the key wrap and the frames (AES-256-GCM, python3-cryptography),
        HKDF-Expand and HMAC-SHA256 (hmac).  The passphrase comes from
        CBTFS_PASSWORD.  Every chunk must open under its own name and hash
        to it; every manifest must open under its name and carry its id.
        Prints "checked N chunks, M manifests".  Exit 77 without
        python3-cryptography.

    cryptool.py tamper CONFIG FIELD
        Rewrites the config file in place with one field altered, the rest
        left valid: salt (a bit flipped), wrapped_key (a bit flipped),
        chunk_size (1 MiB <-> 512 KiB), kdf_n (halved), created (+1).

    cryptool.py ids IMAGE CHUNK_SIZE
        Prints the SHA-256 of every chunk of IMAGE (the last zero-padded),
        one a line.

    cryptool.py tty ANSWER[,ANSWER...] -- COMMAND...
        Runs COMMAND on a new terminal, typing each ANSWER after a prompt
        ("Enter ..."); "^C" types Ctrl-C instead.  Prints what the terminal
        showed; exits with COMMAND's status.
"""
import hashlib
import hmac
import os
import select
import subprocess
import sys
import time

# ---- protobuf wire format, just what RepoConfig and Snapshot need ------------


def varint(buf, i):
    v = shift = 0
    while True:
        b = buf[i]
        i += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return v, i


def enc_varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def fields(buf):
    """[(number, wire type, value, start of value, end of value)]"""
    out, i = [], 0
    while i < len(buf):
        key, i = varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            start = i
            v, i = varint(buf, i)
            out.append((num, wt, v, start, i))
        elif wt == 2:
            n, i = varint(buf, i)
            out.append((num, wt, buf[i:i + n], i, i + n))
            i += n
        elif wt == 1:
            out.append((num, wt, buf[i:i + 8], i, i + 8))
            i += 8
        elif wt == 5:
            out.append((num, wt, buf[i:i + 4], i, i + 4))
            i += 4
        else:
            raise ValueError("unknown wire type %d" % wt)
    return out


def field(fs, num, default=None):
    for f in fs:
        if f[0] == num:
            return f
    return (num, None, default, None, None)


# ---- the format of cbtfs-repository(5) -------------------------------------


def le32(v):
    return (v & 0xFFFFFFFF).to_bytes(4, "little")


def le64(v):
    return (v & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little")


def lp(b):
    return le32(len(b)) + b


def config_aad(cfg, enc):
    g = lambda fs, n, d=0: field(fs, n, d)[2]
    return (b"cbtfs config v1\0" + le32(g(cfg, 1)) + lp(g(cfg, 2, b"")) +
            le32(g(cfg, 3)) + le32(g(cfg, 4)) + le32(g(cfg, 5)) +
            le32(g(cfg, 6)) + le64(g(cfg, 8)) + le32(g(enc, 1)) +
            lp(g(enc, 2, b"")) + lp(g(enc, 3, b"")) + le64(g(enc, 4)) +
            le32(g(enc, 5)) + le32(g(enc, 6)))


def hkdf_expand(prk, info):
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def open_frame(aead, name, frame):
    """The plaintext of a sealed frame; raises on any mismatch."""
    assert frame[:4] == b"CBTc" and frame[4] == 1, "bad magic or version"
    flags = frame[5]
    assert flags & 0x02, "not encrypted"
    assert not flags & 0x04, "encrypted with a digest"
    raw_len = int.from_bytes(frame[8:16], "little")
    nonce, sealed = frame[16:28], frame[28:]
    payload = aead.decrypt(nonce, sealed, frame[:16] + name.encode())
    if flags & 0x01:
        payload = subprocess.run(["zstd", "-dcq"], input=payload,
                                 stdout=subprocess.PIPE, check=True).stdout
    assert len(payload) == raw_len, "wrong length"
    return payload


def check(repo):
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError:
        print("python3-cryptography is not installed", file=sys.stderr)
        sys.exit(77)
    with open(os.path.join(repo, "config"), "rb") as f:
        cfg = fields(f.read())
    enc = fields(field(cfg, 7, b"")[2])
    assert field(enc, 1)[2] == 1 and field(enc, 2)[2] == b"scrypt"
    assert field(cfg, 4)[2] == 1, "id_hash is not HMAC-SHA256"
    salt, n = field(enc, 3)[2], field(enc, 4)[2]
    r, p, wrapped = field(enc, 5)[2], field(enc, 6)[2], field(enc, 7)[2]
    kek = hashlib.scrypt(os.environb[b"CBTFS_PASSWORD"], salt=salt, n=n,
                         r=r, p=p, maxmem=256 * n * r + (64 << 20),
                         dklen=32)
    master = AESGCM(kek).decrypt(wrapped[:12], wrapped[12:],
                                 config_aad(cfg, enc))
    data = AESGCM(hkdf_expand(master, b"cbtfs v1 data key"))
    id_key = hkdf_expand(master, b"cbtfs v1 chunk id key")
    chunk_size = field(cfg, 3)[2]
    nchunks = nmanifests = 0
    for top, _, files in os.walk(repo):
        rel_top = os.path.relpath(top, repo)
        if rel_top.startswith("."):
            continue
        for fn in files:
            name = os.path.normpath(os.path.join(rel_top, fn))
            with open(os.path.join(top, fn), "rb") as f:
                frame = f.read()
            if name.startswith("chunks/"):
                plain = open_frame(data, name, frame)
                assert len(plain) == chunk_size, name + ": wrong length"
                got = hmac.new(id_key, plain, hashlib.sha256).hexdigest()
                assert name == "chunks/%s/%s" % (got[:2], got), \
                    name + ": content is not its id"
                nchunks += 1
            elif name.startswith("snapshots/"):
                snap = fields(open_frame(data, name, frame))
                assert field(snap, 1)[2].decode() == name[10:], \
                    name + ": id differs"
                nmanifests += 1
    print("checked %d chunks, %d manifests" % (nchunks, nmanifests))


def tamper(path, what):
    with open(path, "rb") as f:
        buf = bytearray(f.read())
    cfg = fields(bytes(buf))
    enc_f = field(cfg, 7)
    base = enc_f[3]
    enc = fields(enc_f[2])
    if what in ("salt", "wrapped_key"):
        f = field(enc, 3 if what == "salt" else 7)
        buf[base + f[3] + 5] ^= 0x10
    elif what == "chunk_size":
        f = field(cfg, 3)
        new = 512 << 10 if f[2] == 1 << 20 else 1 << 20
        assert len(enc_varint(new)) == f[4] - f[3]
        buf[f[3]:f[4]] = enc_varint(new)
    elif what == "kdf_n":
        f = field(enc, 4)
        new = enc_varint(f[2] // 2)
        assert len(new) == f[4] - f[3]
        buf[base + f[3]:base + f[4]] = new
    elif what == "created":
        f = field(cfg, 8)
        new = enc_varint(f[2] + 1)
        assert len(new) == f[4] - f[3]
        buf[f[3]:f[4]] = new
    else:
        sys.exit("unknown field " + what)
    with open(path, "wb") as f:
        f.write(buf)


def ids(image, chunk_size):
    with open(image, "rb") as f:
        while True:
            b = f.read(chunk_size)
            if not b:
                break
            b += bytes(chunk_size - len(b))
            print(hashlib.sha256(b).hexdigest())


def tty(answers, argv):
    import pty
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(argv[0], argv)
    out, given = b"", 0
    while True:
        if not select.select([fd], [], [], 60)[0]:
            break
        try:
            got = os.read(fd, 4096)
        except OSError:
            break
        if not got:
            break
        out += got
        if given < len(answers) and out.count(b"Enter ") > given:
            time.sleep(0.2)
            a = answers[given]
            os.write(fd, b"\x03" if a == "^C" else a.encode() + b"\n")
            given += 1
    _, status = os.waitpid(pid, 0)
    sys.stdout.write(out.decode(errors="replace").replace("\r", ""))
    sys.exit(os.waitstatus_to_exitcode(status) & 0xFF)


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "check" and len(sys.argv) == 3:
        check(sys.argv[2])
    elif cmd == "tamper" and len(sys.argv) == 4:
        tamper(sys.argv[2], sys.argv[3])
    elif cmd == "ids" and len(sys.argv) == 4:
        ids(sys.argv[2], int(sys.argv[3]))
    elif cmd == "tty" and len(sys.argv) > 4 and sys.argv[3] == "--":
        tty(sys.argv[2].split(","), sys.argv[4:])
    else:
        sys.exit(__doc__)
