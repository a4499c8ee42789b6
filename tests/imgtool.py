"""Image helpers for the cbtfs shell tests (run with /usr/bin/python3).

  imgtool.py changed BASE NEW CHUNK   chunks of NEW whose content (zero-padded
                                      to CHUNK) differs from BASE's
  imgtool.py nonzero IMAGE CHUNK      chunks of IMAGE holding a non-zero byte
  imgtool.py scanned IMAGE BASE CHUNK chunks a scan ingest reads: those
                                      with allocated data (SEEK_DATA), and
                                      holes where BASE ("-": none) is not
                                      zero
  imgtool.py holes MOUNTED SOURCE CHUNK
                                      the mounted image's SEEK_DATA regions
                                      are SOURCE's rounded out to chunks,
                                      its st_blocks their size; exits 1 if
                                      not
  imgtool.py preads A B SEED COUNT    reads A and B at the same random and
                                      boundary-straddling offsets and sizes;
                                      exits 1 at the first difference
"""
import os
import random
import sys


def chunks(path, cs):
    with open(path, "rb") as f:
        while True:
            b = f.read(cs)
            if not b:
                return
            yield b.ljust(cs, b"\0")


def changed(base, new, cs):
    old = list(chunks(base, cs))
    zero = bytes(cs)
    n = 0
    for i, c in enumerate(chunks(new, cs)):
        if c != (old[i] if i < len(old) else zero):
            n += 1
    return n


def nonzero(path, cs):
    zero = bytes(cs)
    return sum(1 for c in chunks(path, cs) if c != zero)


def data_regions(path):
    """(start, end) of each data region of path, by SEEK_DATA/SEEK_HOLE;
    and the file's stat."""
    fd = os.open(path, os.O_RDONLY)
    st = os.fstat(fd)
    out, off = [], 0
    try:
        while off < st.st_size:
            try:
                d = os.lseek(fd, off, os.SEEK_DATA)
            except OSError:
                break
            h = os.lseek(fd, d, os.SEEK_HOLE)
            out.append((d, h))
            off = h
    finally:
        os.close(fd)
    return out, st


def scanned(path, base, cs):
    regions, st = data_regions(path)
    n = (st.st_size + cs - 1) // cs
    data = set()
    for d, h in regions:
        data.update(range(d // cs, (h + cs - 1) // cs))
    zero = bytes(cs)
    if base != "-":
        for i, c in enumerate(chunks(base, cs)):
            if i < n and i not in data and c != zero:
                data.add(i)
    return len([i for i in data if i < n])


def holes(image, source, cs):
    """The data regions of image (a mounted snapshot) are those of source
    rounded out to chunks, and its st_blocks counts just them."""
    mine, st = data_regions(image)
    theirs = []
    for d, h in data_regions(source)[0]:
        d, h = d // cs * cs, min(st.st_size, -(-h // cs) * cs)
        if theirs and theirs[-1][1] >= d:
            theirs[-1] = (theirs[-1][0], h)
        else:
            theirs.append((d, h))
    if mine != theirs:
        print("mount %s, source (chunk-aligned) %s" % (mine, theirs))
        return 1
    stored = sum(h - d for d, h in mine)
    if st.st_blocks != (stored + 511) // 512:
        print("st_blocks %d, stored %d bytes" % (st.st_blocks, stored))
        return 1
    return 0


def preads(a, b, seed, count):
    size = os.path.getsize(b)
    if os.path.getsize(a) != size:
        print("sizes differ: %d %d" % (os.path.getsize(a), size))
        return 1
    rnd = random.Random(seed)
    cases = [(0, 1), (size - 1, 1), (size - 5, 100), (size, 10),
             (size + 4096, 10)]
    for cs in (64 << 10, 256 << 10, 1 << 20):
        for k in (1, 3, 7):
            cases.append((k * cs - 1, 2))
            cases.append((k * cs - 777, cs + 1555))
    for _ in range(count):
        cases.append((rnd.randrange(size), rnd.randrange(1, 3 << 20)))
    fa = os.open(a, os.O_RDONLY)
    fb = os.open(b, os.O_RDONLY)
    try:
        for off, ln in cases:
            if off < 0:
                continue
            x = os.pread(fa, ln, off)
            y = os.pread(fb, ln, off)
            while len(x) < ln and off + len(x) < size:   # short reads
                more = os.pread(fa, ln - len(x), off + len(x))
                if not more:
                    break
                x += more
            if x != y:
                print("differ at offset %d length %d (%d vs %d bytes)"
                      % (off, ln, len(x), len(y)))
                return 1
    finally:
        os.close(fa)
        os.close(fb)
    print("%d reads equal" % len(cases))
    return 0


def main(argv):
    if len(argv) == 5 and argv[1] == "holes":
        return holes(argv[2], argv[3], int(argv[4]))
    if len(argv) == 5 and argv[1] == "scanned":
        print(scanned(argv[2], argv[3], int(argv[4])))
        return 0
    if len(argv) == 5 and argv[1] == "changed":
        print(changed(argv[2], argv[3], int(argv[4])))
        return 0
    if len(argv) == 4 and argv[1] == "nonzero":
        print(nonzero(argv[2], int(argv[3])))
        return 0
    if len(argv) == 6 and argv[1] == "preads":
        return preads(argv[2], argv[3], int(argv[4]), int(argv[5]))
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
