"""Prints the chunk ids that cbtfs manifest objects refer to (run with
/usr/bin/python3), without any cbtfs code: for checking prune.

  manifest_chunks.py MANIFEST...

Each file is a framed manifest (cbtfs-repository(5)): a 16-byte header
("CBTc", version, flags, reserved, plaintext length), a 32-byte digest when
flag 0x04 is set, then the payload, zstd-compressed with flag 0x01 (the
zstd command decompresses it).  The plaintext is a protobuf Snapshot whose
field 12 holds the ChunkEntry messages (field 1 index, field 2 id).  The
distinct non-zero ids, in lower-case hexadecimal, are printed sorted, one
a line.
"""
import struct
import subprocess
import sys


def varint(buf, pos):
    shift = value = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def fields(buf):
    """Yields (number, wire type, value) for each field of a message."""
    pos = 0
    while pos < len(buf):
        key, pos = varint(buf, pos)
        num, wt = key >> 3, key & 7
        if wt == 0:
            val, pos = varint(buf, pos)
        elif wt == 1:
            val, pos = buf[pos:pos + 8], pos + 8
        elif wt == 2:
            n, pos = varint(buf, pos)
            val, pos = buf[pos:pos + n], pos + n
        elif wt == 5:
            val, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError("wire type %d" % wt)
        yield num, wt, val


def plaintext(path):
    data = open(path, "rb").read()
    magic, version, flags, _, length = struct.unpack("<4sBBHQ", data[:16])
    if magic != b"CBTc" or version != 1:
        raise ValueError("%s: not a cbtfs frame" % path)
    payload = data[48:] if flags & 4 else data[16:]
    if flags & 1:
        payload = subprocess.run(["zstd", "-dcq"], input=payload,
                                 stdout=subprocess.PIPE, check=True).stdout
    if len(payload) != length:
        raise ValueError("%s: wrong plaintext length" % path)
    return payload


def main():
    ids = set()
    for path in sys.argv[1:]:
        for num, wt, val in fields(plaintext(path)):
            if num != 12 or wt != 2:
                continue
            for n2, w2, v2 in fields(val):
                if n2 == 2 and w2 == 2 and any(v2):
                    ids.add(v2.hex())
    for i in sorted(ids):
        print(i)


main()
