"""A strict parser of the Prometheus text exposition format 0.0.4 (run with
/usr/bin/python3), for the metrics tests.

  promtext.py FILE   prints {"name{label=value,...}": value, ...} as JSON,
                     or exits 1 saying what breaks the format

Checked: every line is a # HELP, a # TYPE, or a sample; metric and label
names are well formed, label values use only the escapes \\\\, \\" and \\n;
values are floats; a family has one HELP and one TYPE, both before its
samples, which are contiguous; counters end in _total; no series twice;
the file ends with a newline and holds no blank lines.
"""
import json
import re
import sys

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
VALUE = r'"(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(r"^(%s)(?:\{((?:%s=%s)(?:,%s=%s)*)?\})? (\S+)(?: (-?\d+))?$"
                    % (NAME, LABEL, VALUE, LABEL, VALUE))
PAIR = re.compile(r"(%s)=(%s)" % (LABEL, VALUE))
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


def fail(n, line, why):
    sys.exit("line %d: %s: %r" % (n, why, line))


def unescape(v):
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)),
                  v[1:-1])


def parse(text):
    if not text.endswith("\n"):
        sys.exit("the file does not end with a newline")
    help_, type_, done, series = {}, {}, set(), {}
    current = None
    for n, line in enumerate(text[:-1].split("\n"), 1):
        if line.startswith("#"):
            m = re.match(r"^# (HELP|TYPE) (%s) (.+)$" % NAME, line)
            if not m:
                fail(n, line, "a comment that is neither HELP nor TYPE")
            kind, name, rest = m.groups()
            seen = help_ if kind == "HELP" else type_
            if name in seen:
                fail(n, line, "a second %s of %s" % (kind, name))
            if name in done or name == current:
                fail(n, line, "%s after the samples of %s" % (kind, name))
            if kind == "TYPE" and rest not in TYPES:
                fail(n, line, "unknown type")
            seen[name] = rest
            continue
        m = SAMPLE.match(line)
        if not m:
            fail(n, line, "not a sample")
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        if name != current:
            if name in done:
                fail(n, line, "samples of %s are not together" % name)
            if current is not None:
                done.add(current)
            current = name
        if name not in help_ or name not in type_:
            fail(n, line, "a sample of %s without HELP and TYPE" % name)
        if type_[name] == "counter" and not name.endswith("_total"):
            fail(n, line, "a counter whose name does not end in _total")
        try:
            v = float(value)
        except ValueError:
            fail(n, line, "not a number")
        pairs = PAIR.findall(labels)
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            fail(n, line, "a label twice")
        key = name + "{" + ",".join("%s=%s" % (k, unescape(v))
                                    for k, v in sorted(pairs)) + "}"
        if key in series:
            fail(n, line, "a series twice")
        series[key] = v
    return series


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        print(json.dumps(parse(f.read()), sort_keys=True))
