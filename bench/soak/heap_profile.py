#!/usr/bin/env python3
"""Reads a heaptrack profile of the worker: what each MB is, and how the heap moved over time.

    heap_profile.py sites PROFILE.zst [--top 25] [--match cryptoworker::]
        Live heap at heaptrack's peak, attributed to the innermost frame of the crate's own code
        (the code that asked for the memory), per function, largest first.
    heap_profile.py timeline PROFILE.zst [--every 20]
        Live heap (bytes) every N seconds of the worker's life.

Both call ``heaptrack_print`` (installed with heaptrack): ``sites`` reads its folded stacks
(``-F --flamegraph-cost-type peak``), ``timeline`` the snapshot times and sizes of its massif
export (``-M``; the trees of that export are not used).
"""

import os
import re
import subprocess
import sys
import tempfile
from collections import defaultdict


def opt(args, name, default):
    return type(default)(args[args.index(name) + 1]) if name in args else default


def heaptrack_print(profile, *extra):
    subprocess.run(["heaptrack_print", "-f", profile, "-p", "0", "-a", "0", "-T", "0", "-l", "0",
                    *extra], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def clean(frame):
    frame = re.sub(r"::h[0-9a-f]{16}", "", frame)
    frame = frame.replace("_$LT$impl$u20$cryptoworker..reactor..Reactor$GT$", "Reactor")
    return frame


def sites(profile, top, match):
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "stacks")
        heaptrack_print(profile, "--flamegraph-cost-type", "peak", "-F", out)
        per = defaultdict(int)
        total = 0
        with open(out, errors="replace") as f:
            for line in f:
                stack, _, n = line.rstrip("\n").rpartition(" ")
                if not n.isdigit():
                    continue
                total += int(n)
                frames = stack.split(";")
                own = [fr for fr in frames if match in fr]
                per[clean(own[-1]) if own else "(outside the crate) " + clean(frames[-1])] += int(n)
    print(f"live heap at peak: {total / 1e6:.2f} MB")
    for k, v in sorted(per.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{v / 1e6:9.3f} MB  {k[:160]}")


def timeline(profile, every):
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "massif")
        heaptrack_print(profile, "-M", out, "--massif-detailed-freq", "1000000")
        last = None
        t = None
        with open(out, errors="replace") as f:
            for line in f:
                if line.startswith("time="):
                    t = float(line.split("=")[1])
                elif line.startswith("mem_heap_B=") and t is not None:
                    slot = int(t // every)
                    if slot != last:
                        print(f"{t:8.1f} s  {int(line.split('=')[1]):>12,d} B")
                        last = slot


def main():
    args = sys.argv[1:]
    if len(args) < 2 or args[0] not in ("sites", "timeline"):
        print(__doc__)
        return 2
    if args[0] == "sites":
        sites(args[1], opt(args, "--top", 25), opt(args, "--match", "cryptoworker::"))
    else:
        timeline(args[1], opt(args, "--every", 20.0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
