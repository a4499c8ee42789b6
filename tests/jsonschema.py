"""The JSON outputs of cbtfs, field by field (run with /usr/bin/python3).

  jsonschema.py KIND FILE [MAN_PAGE]

checks that FILE holds the JSON of KIND (ingest, snapshots, verify, forget,
prune, restore) with exactly the fields below, each of its type: "int",
"str", "bool", "num", "time" (an RFC 3339 UTC string), "str?" (a string
or null), "list"; and, with MAN_PAGE, that the page names every field
(as \\fBfield\\fR).  Exits 1 naming the first difference.
"""
import json
import re
import sys

STATS = {
    "read_bytes": "int", "chunks_read": "int", "chunks_changed": "int",
    "chunks_new": "int", "chunks_reused": "int", "chunks_zero": "int",
    "stored_bytes": "int",
}
SNAPSHOT = dict(STATS, **{
    "volume": "str", "snapshot": "str", "id": "str", "parent": "str?",
    "parent_id": "str?", "capacity": "int", "chunk_size": "int",
    "created": "time", "changes": "str?", "csi_snapshot_handle": "str?",
    "csi_driver": "str?",
})
SCHEMAS = {
    "ingest": dict(STATS, **{
        "volume": "str", "snapshot": "str", "id": "str", "parent": "str?",
        "full_fallback": "bool", "changes": "str", "capacity": "int",
        "chunk_size": "int", "chunks_total": "int", "chunks_found": "int",
        "chunks_healed": "int", "already_committed": "bool",
        "manifest_bytes": "int", "seconds": "num", "requests": "int",
        "retries": "int",
    }),
    "snapshots": [SNAPSHOT],
    "verify": {
        "ok": "bool", "manifests": "int", "chunks_checked": "int",
        "chunks_read": "int", "read_bytes": "int", "damage_marked": "int",
        "damage_cleared": "int", "seconds": "num",
        "problems": [{"kind": "str", "object": "str", "why": "str",
                      "snapshots": [{"volume": "str", "snapshot": "str",
                                     "id": "str", "ranges": "list"}]}],
    },
    "forget": {
        "dry_run": "bool", "volumes": "int", "kept": "int",
        "forgotten": "int", "rewritten": "int", "seconds": "num",
        "snapshots": [{"volume": "str", "snapshot": "str", "id": "str",
                       "created": "time", "keep": "bool",
                       "reasons": "list", "rewritten": "bool"}],
    },
    "prune": {
        "dry_run": "bool", "manifests": "int", "chunks_listed": "int",
        "chunks_referenced": "int", "chunks_missing": "int",
        "chunks_deleted": "int", "freed_bytes": "int",
        "damage_removed": "int", "temp_removed": "int",
        "temp_bytes": "int", "seconds": "num",
    },
    "restore": {
        "volume": "str", "snapshot": "str", "from": "str?",
        "target": "str", "new_file": "bool", "verified": "bool",
        "capacity": "int", "chunk_size": "int", "chunks": "int",
        "chunks_written": "int", "chunks_zeroed": "int",
        "chunks_skipped": "int", "chunks_verified": "int",
        "written_bytes": "int", "zeroed_bytes": "int", "requests": "int",
        "retries": "int", "seconds": "num",
    },
}
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def check_value(where, want, got):
    if isinstance(want, dict):
        if not isinstance(got, dict):
            sys.exit("%s: an object expected, got %r" % (where, got))
        extra = sorted(set(got) - set(want))
        missing = sorted(set(want) - set(got))
        if extra or missing:
            sys.exit("%s: fields not in the schema %s, missing %s"
                     % (where, extra, missing))
        for k, w in want.items():
            check_value("%s.%s" % (where, k), w, got[k])
        return
    if isinstance(want, list):
        if not isinstance(got, list):
            sys.exit("%s: an array expected, got %r" % (where, got))
        for i, g in enumerate(got):
            check_value("%s[%d]" % (where, i), want[0], g)
        return
    ok = {
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "num": lambda v: isinstance(v, (int, float))
        and not isinstance(v, bool),
        "str": lambda v: isinstance(v, str) and v != "",
        "str?": lambda v: v is None or (isinstance(v, str) and v != ""),
        "bool": lambda v: isinstance(v, bool),
        "time": lambda v: isinstance(v, str) and TIME.match(v),
        "list": lambda v: isinstance(v, list),
    }[want](got)
    if not ok:
        sys.exit("%s: %r is not %s" % (where, got, want))


def fields(schema):
    if isinstance(schema, list):
        return fields(schema[0])
    if isinstance(schema, dict):
        out = set(schema)
        for v in schema.values():
            out |= fields(v)
        return out
    return set()


def main():
    kind, path = sys.argv[1], sys.argv[2]
    got = json.load(open(path))
    if kind == "snapshots":
        # manifests that cannot be read are {"id":..., "unreadable":true}
        got = [s for s in got if "unreadable" not in s]
    check_value(kind, SCHEMAS[kind], got)
    if len(sys.argv) > 3:
        man = open(sys.argv[3]).read()
        for f in sorted(fields(SCHEMAS[kind])):
            if "\\fB%s\\fR" % f.replace("_", "_") not in man:
                sys.exit("%s: %s is not documented in %s"
                         % (kind, f, sys.argv[3]))


main()
