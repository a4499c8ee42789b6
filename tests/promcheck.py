"""Checks Prometheus text exposition format (version 0.0.4), stdlib only
(run with /usr/bin/python3).

  promcheck.py FILE [NAME...]   checks FILE ("-": stdin) and prints
                                "NAME VALUE" for each NAME asked for (all
                                samples if none); exits 1 with the line
                                and the reason at the first error
  promcheck.py --json FILE      checks FILE and prints its samples as
                                {"name{label=value,...}": value, ...}
                                (labels sorted by name)

What is checked: every line is a comment, blank, or a sample; "# HELP"
and "# TYPE" name a valid metric, at most once each, TYPE before the
metric's samples, with a known type; sample names and label names are
valid, label values are quoted and escaped correctly, values are floats
(or NaN/+Inf/-Inf), timestamps integers; the samples of one metric are
together; a counter is not negative and its samples end in _total (as
OpenMetrics wants); no sample (name and labels) appears twice.
"""
import json
import re
import sys

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}
SUFFIXES = ("_bucket", "_count", "_sum")


class Bad(Exception):
    pass


def parse_labels(s):
    """s starts after '{'; returns (labels tuple, rest after '}')."""
    labels, i = [], 0
    while True:
        while i < len(s) and s[i] in " \t":
            i += 1
        if i < len(s) and s[i] == "}":
            return tuple(labels), s[i + 1:]
        m = re.match(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*\"", s[i:])
        if not m:
            raise Bad("bad label")
        name, i = m.group(1), i + m.end()
        val = []
        while True:
            if i >= len(s):
                raise Bad("unterminated label value")
            c = s[i]
            if c == "\\":
                if i + 1 >= len(s) or s[i + 1] not in '\\"n':
                    raise Bad("bad escape in label value")
                val.append({"n": "\n"}.get(s[i + 1], s[i + 1]))
                i += 2
            elif c == '"':
                i += 1
                break
            else:
                val.append(c)
                i += 1
        if name in (n for n, _ in labels):
            raise Bad("label %s twice" % name)
        labels.append((name, "".join(val)))
        while i < len(s) and s[i] in " \t":
            i += 1
        if i < len(s) and s[i] == ",":
            i += 1
        elif i < len(s) and s[i] == "}":
            continue
        else:
            raise Bad("expected , or }")


def value(tok):
    if tok in ("NaN", "+Inf", "-Inf", "Inf"):
        return float(tok.replace("Inf", "inf"))
    if not re.match(r"[-+]?(\d+\.?\d*([eE][-+]?\d+)?|\.\d+([eE][-+]?\d+)?)\Z",
                    tok):
        raise Bad("bad value %r" % tok)
    return float(tok)


def check(text):
    if text and not text.endswith("\n"):
        raise Bad("no newline at the end")
    helps, types, done, seen, samples = set(), {}, set(), set(), []
    current = None
    for no, line in enumerate(text.split("\n")[:-1], 1):
        try:
            if line.startswith("#"):
                parts = line.split(None, 3)
                if len(parts) >= 2 and parts[1] in ("HELP", "TYPE"):
                    if len(parts) < 3 or not NAME.match(parts[2]):
                        raise Bad("bad metric name")
                    name = parts[2]
                    if parts[1] == "HELP":
                        if name in helps:
                            raise Bad("second HELP")
                        helps.add(name)
                    else:
                        if name in types:
                            raise Bad("second TYPE")
                        if len(parts) != 4 or parts[3] not in TYPES:
                            raise Bad("bad type")
                        if name in done or name == current:
                            raise Bad("TYPE after its samples")
                        types[name] = parts[3]
                continue
            if not line.strip():
                continue
            m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)", line)
            if not m:
                raise Bad("bad sample name")
            name, rest = m.group(1), line[m.end():]
            labels = ()
            if rest.startswith("{"):
                labels, rest = parse_labels(rest[1:])
            toks = rest.split()
            if not rest[:1] in (" ", "\t") or not 1 <= len(toks) <= 2:
                raise Bad("expected VALUE [TIMESTAMP]")
            v = value(toks[0])
            if len(toks) == 2 and not re.match(r"-?\d+\Z", toks[1]):
                raise Bad("bad timestamp")
            family = name
            for suf in SUFFIXES:
                if name.endswith(suf) and name[:-len(suf)] in types:
                    family = name[:-len(suf)]
            if family != current:
                if family in done:
                    raise Bad("samples of %s not together" % family)
                if current is not None:
                    done.add(current)
                current = family
            if types.get(family) == "counter":
                if not name.endswith("_total"):
                    raise Bad("counter not named *_total")
                if v < 0:
                    raise Bad("negative counter")
            key = (name, labels)
            if key in seen:
                raise Bad("sample twice")
            seen.add(key)
            samples.append((name, labels, toks[0]))
        except Bad as e:
            raise Bad("line %d: %s: %r" % (no, e, line))
    return samples


def main():
    as_json = sys.argv[1] == "--json"
    path = sys.argv[2] if as_json else sys.argv[1]
    text = sys.stdin.read() if path == "-" else open(path).read()
    try:
        samples = check(text)
    except Bad as e:
        print("%s: not Prometheus text format: %s" % (path, e),
              file=sys.stderr)
        return 1
    if as_json:
        out = {}
        for name, labels, v in samples:
            key = name
            if labels:
                key += "{%s}" % ",".join("%s=%s" % kv
                                         for kv in sorted(labels))
            out[key] = value(v)
        print(json.dumps(out))
        return 0
    want = sys.argv[2:]
    vals = {name: v for name, labels, v in samples if not labels}
    for name in want or [s[0] for s in samples]:
        if name not in vals:
            print("%s: no sample %s" % (path, name), file=sys.stderr)
            return 1
        print(name, vals[name])
    return 0


if __name__ == "__main__":
    sys.exit(main())
