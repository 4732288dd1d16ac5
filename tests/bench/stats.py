#!/usr/bin/env python3
"""Summarise the benchmark's raw results into the side-by-side table.

Input: the TSV that run.sh writes, one line per smtp-source run:
  server size sessions pattern rep msgs accept_s e2e_s rc
where accept_s is smtp-source's wall time (the last 250 received), e2e_s the
time until smtp-sink had received all messages ("-" if it never did), rc
smtp-source's exit status.

Output: for each (size, sessions, pattern), the median msgs/s over the
repetitions that succeeded, for the smtp-sink baseline, Postfix and
Portcullis, and the ratio Portcullis/Postfix; once for acceptance throughput
and once for end-to-end throughput. When the run has "portcullis-screen"
results (Portcullis with the screen on), two more columns: its rate and the
ratio screen on / screen off. When it has "portcullis-cluster" results (the
screen on and [cluster] on a PostgreSQL), two more: its rate and the ratio
cluster / single node (both with the screen on).
"""

import statistics
import sys
from collections import defaultdict

SERVERS = ("sink", "postfix", "portcullis", "portcullis-screen", "portcullis-cluster")


def human_size(n: int) -> str:
    if n % 1024 == 0:
        return f"{n // 1024} KiB"
    return f"{n} B"


def fmt_rate(v):
    return "n/a" if v is None else f"{v:,.0f}"


def fmt_ratio(a, b):
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.2f}"


def main(path: str) -> int:
    # (size, sessions, pattern) -> server -> {"acc": [...], "e2e": [...], "fail": n}
    data = defaultdict(lambda: defaultdict(lambda: {"acc": [], "e2e": [], "fail": 0, "runs": 0}))
    order = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if not parts or parts[0].startswith("#"):
                continue
            server, size, sessions, pattern, _rep, msgs, acc, e2e, rc = parts[:9]
            key = (int(size), int(sessions), pattern)
            if key not in order:
                order.append(key)
            cell = data[key][server]
            cell["runs"] += 1
            if rc != "0":
                cell["fail"] += 1
                continue
            msgs = int(msgs)
            cell["acc"].append(msgs / float(acc))
            if e2e != "-":
                cell["e2e"].append(msgs / float(e2e))

    def median(key, server, what):
        vals = data[key][server][what]
        return statistics.median(vals) if vals else None

    for what, title in (
        ("acc", "Acceptance throughput (msgs/s until the client got its last 250; median)"),
        ("e2e", "End-to-end throughput (msgs/s until smtp-sink received every message; median)"),
    ):
        screened = any("portcullis-screen" in data[k] for k in order)
        headers = ["size", "sessions", "pattern", "sink (ceiling)", "Postfix",
                   "Portcullis", "Portcullis/Postfix"]
        clustered = any("portcullis-cluster" in data[k] for k in order)
        if screened:
            headers += ["screen on", "on/off"]
        if clustered:
            headers += ["cluster", "cluster/single"]
        rows = []
        for key in sorted(order, key=lambda k: (k[2], k[0], k[1])):
            size, sessions, pattern = key
            sink = median(key, "sink", "acc")  # the sink's own acceptance is its e2e
            pf = median(key, "postfix", what)
            pc = median(key, "portcullis", what)
            row = [human_size(size), str(sessions), pattern, fmt_rate(sink),
                   fmt_rate(pf), fmt_rate(pc), fmt_ratio(pc, pf)]
            on = median(key, "portcullis-screen", what)
            if screened:
                row += [fmt_rate(on), fmt_ratio(on, pc)]
            if clustered:
                cl = median(key, "portcullis-cluster", what)
                row += [fmt_rate(cl), fmt_ratio(cl, on)]
            rows.append(row)
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
                  for i, h in enumerate(headers)]
        print(title)
        print("  ".join(h.rjust(w) for h, w in zip(headers, widths)))
        print("  ".join("-" * w for w in widths))
        for r in rows:
            print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
        print()

    failures = [
        f"{server} {human_size(k[0])} s={k[1]} {k[2]}: {c['fail']}/{c['runs']} runs failed"
        for k in order for server, c in data[k].items() if c["fail"]
    ]
    incomplete = [
        f"{server} {human_size(k[0])} s={k[1]} {k[2]}: "
        f"{c['runs'] - c['fail'] - len(c['e2e'])} runs not fully delivered"
        for k in order for server, c in data[k].items()
        if server != "sink" and c["runs"] - c["fail"] - len(c["e2e"]) > 0
    ]
    if failures or incomplete:
        print("Problems:")
        for line in failures + incomplete:
            print("  " + line)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
