#!/bin/bash
# Four generations of a 64 MiB image with random writes at random offsets,
# ingested with scan (volume ns/scan) and with ranges (volume ns/ranges),
# restored byte for byte from a real FUSE mount.  Capacity grows in
# generation 3 (to an unaligned size) and shrinks in generation 4, which
# is ingested while the repository is mounted.
. "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires_fuse
requires /usr/bin/python3

R=$T/repo
MNT=$T/mnt
. "$top_srcdir/tests/generations.inc"
exit 0
