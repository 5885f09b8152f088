#!/usr/bin/env python3
"""Heap by allocation site at two times of a heaptrack (massif-exported) profile, and the delta.

Usage: massif_diff.py PROFILE.massif T1 T2 [--top N] [--match cryptoworker::]

Export the profile first: ``heaptrack_print -f X.zst -M X.massif --massif-threshold 0.2
--massif-detailed-freq 1``. Bytes are attributed to the innermost frame matching ``--match``
(the crate's own code that asked for the memory), summed per function and line, at the first
detailed snapshot at or after each time (seconds since the worker started).
"""

import re
import sys
from collections import defaultdict

NODE = re.compile(r"^(\s*)n(\d+): (\d+) (.*)$")


def snapshots(path):
    snap = None
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("snapshot="):
                if snap:
                    yield snap
                snap = {"time": None, "heap": 0, "lines": []}
            elif snap is None:
                continue
            elif line.startswith("time="):
                snap["time"] = float(line.split("=")[1])
            elif line.startswith("mem_heap_B="):
                snap["heap"] = int(line.split("=")[1])
            elif NODE.match(line):
                snap["lines"].append(line.rstrip("\n"))
    if snap:
        yield snap


def attribute(lines, match):
    """Bytes per innermost matching frame."""
    out = defaultdict(int)
    stack = []  # (depth, matched_above)
    for line in lines:
        m = NODE.match(line)
        depth, size, what = len(m.group(1)), int(m.group(3)), m.group(4)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        matched_above = stack[-1][1] if stack else False
        hit = match in what and not matched_above
        if hit:
            fn = re.sub(r"::h[0-9a-f]{16}", "", what.split(": ", 1)[-1])
            out[fn] += size
        stack.append((depth, matched_above or hit))
    return out


def main():
    args = sys.argv[1:]
    top = int(args[args.index("--top") + 1]) if "--top" in args else 25
    match = args[args.index("--match") + 1] if "--match" in args else "cryptoworker::"
    path, t1, t2 = args[0], float(args[1]), float(args[2])
    want = [t1, t2]
    got = []
    for s in snapshots(path):
        if want and s["time"] is not None and s["time"] >= want[0] and s["lines"]:
            got.append(s)
            want.pop(0)
            if not want:
                break
    a, b = (attribute(s["lines"], match) for s in got)
    print(f"heap {got[0]['heap']} B at {got[0]['time']}s -> {got[1]['heap']} B at "
          f"{got[1]['time']}s: {got[1]['heap'] - got[0]['heap']:+} B")
    rows = sorted(set(a) | set(b), key=lambda k: -abs(b.get(k, 0) - a.get(k, 0)))
    for k in rows[:top]:
        print(f"{b.get(k, 0) - a.get(k, 0):+10d} {a.get(k, 0):10d} -> {b.get(k, 0):10d}  {k[:150]}")


if __name__ == "__main__":
    main()
