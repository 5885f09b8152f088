#!/usr/bin/env python3
"""The fan-out benchmark in one command: cryptoworker against Python websockets, Node ws and
tokio-tungstenite relays, at several subscriber counts, in one run.

Builds everything (release), then for each repetition, in interleaved server order (A B C D,
D C B A, ...), for each N: waits for an idle machine, starts the server pinned to one core with
the source and load pinned to the other, connects N subscribers, measures the moderate load
(latency, fan-out span, CPU per delivery) and searches the saturation throughput; then measures
RSS per idle subscribed connection. Writes bench/results/<date>.json and .md and prints the table.
See bench/README.md for the method.
"""

import argparse
import datetime
import json
import os
import signal
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import build, machine, measure, procs, report  # noqa: E402


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 repetition, coarse search, short windows")
    ap.add_argument("--servers", default=",".join(procs.SERVERS), help="comma list (default: every worker configuration and the three relays)")
    ap.add_argument("--n", default="100,1000,10000", help="subscriber counts (comma list)")
    ap.add_argument("--reps", type=int, help="repetitions (default 3, --quick 1)")
    ap.add_argument("--rss", default="10000,19000",
                    help="idle connection counts for RSS per connection ('' to skip)")
    ap.add_argument("--moderate", default="100:20000,1000:20000,10000:10000",
                    help="moderate load in deliveries/s: one number, or N:rate pairs (a missing N uses "
                         "the pair of the next smaller N)")
    ap.add_argument("--start-dps", type=float, default=50_000, help="first saturation step, deliveries/s")
    ap.add_argument("--source", choices=["auto", "simulate", "stand-in"], default="auto")
    ap.add_argument("--no-build", action="store_true", help="use the binaries already built")
    ap.add_argument("--idle-timeout", type=float, default=60, help="seconds to wait for an idle machine")
    ap.add_argument("--server-core", default="0")
    ap.add_argument("--load-core", default="1")
    ap.add_argument("--port-base", type=int, default=21000)
    ap.add_argument("--worker-env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra environment for cryptoworker (repeatable)")
    ap.add_argument("--out", default=os.path.join(procs.BENCH, "results"))
    a = ap.parse_args(argv)
    a.servers = [s.strip() for s in a.servers.split(",") if s.strip()]
    bad = [s for s in a.servers if s not in procs.SERVERS]
    if bad:
        ap.error(f"unknown servers {bad}; choose from {procs.SERVERS}")
    try:
        a.ns = [int(x) for x in a.n.split(",") if x.strip()]
        a.rss_counts = sorted(int(x) for x in a.rss.split(",") if x.strip())
        a.worker_env = dict(kv.split("=", 1) for kv in a.worker_env)
        a.moderate = parse_moderate(a.moderate)
    except ValueError as e:
        ap.error(str(e))
    if any(n <= 0 or n > 19_000 for n in a.ns + a.rss_counts):
        ap.error("subscriber counts must be between 1 and 19,000 (the per-process fd limit is 20,000)")
    a.reps = a.reps or (1 if a.quick else 3)
    return a


def parse_moderate(text):
    """`20000` or `100:20000,10000:10000` -> {N: deliveries/s} (key 0 = any N)."""
    if ":" not in text:
        return {0: int(text)}
    pairs = dict(item.split(":", 1) for item in text.split(",") if item.strip())
    return {int(n): int(v) for n, v in pairs.items()}


def moderate_for(table, n):
    keys = sorted(table)
    below = [k for k in keys if k <= n]
    return table[below[-1] if below else keys[0]]


def log(msg):
    print(msg, flush=True)


def guess_for(results, server, n, opts):
    """Where the saturation search starts, and its step factor."""
    same = [r["saturation"]["sustained_dps"] for r in results if r["server"] == server and r["n"] == n
            and r.get("saturation") and r["saturation"]["sustained_dps"]]
    if same:
        return same[-1], 1.25
    other = [r["saturation"]["sustained_dps"] for r in results if r["server"] == server
             and r.get("saturation") and r["saturation"]["sustained_dps"]]
    if other:
        return other[-1] * 0.7, 1.6
    return opts.start_dps, 2.0


def one_run(server, n, rep, opts, settings, results):
    entry = {"server": server, "n": n, "rep": rep}
    entry["idle"] = machine.wait_idle(timeout=opts.idle_timeout, log=log)
    log(f"  [{server} N={n:,} rep {rep}] machine busy {entry['idle']['busy_cores']} cores")
    run = measure.ServerRun(server, n, opts, settings, log, warm_dps=moderate_for(opts.moderate, n))
    try:
        entry["ready"] = run.start()
        log(f"    {n:,} clients subscribed in {entry['ready']['connect_s']:.1f} s")
        entry["moderate"] = run.moderate(settings, moderate_for(opts.moderate, n))
        guess, factor = guess_for(results, server, n, opts)
        entry["saturation"] = run.saturation(settings, guess, factor)
        sat = entry["saturation"]["sustained_dps"]
        log(f"    saturation: {sat:,.0f} deliveries/s" if sat else "    saturation: none sustained")
    except Exception as e:  # noqa: BLE001 - one failed run must not end the benchmark
        entry["error"] = f"{type(e).__name__}: {e}"
        entry["saturation_steps_before_failure"] = run.sat_steps
        log(f"    FAILED: {entry['error']}")
        if not isinstance(e, (RuntimeError, TimeoutError, OSError)):
            log(traceback.format_exc())
    finally:
        run.stop()
    return entry


def plan(opts):
    """(rep, server) pairs in interleaved order: A B C D, D C B A, A B C D, ..."""
    for rep in range(1, opts.reps + 1):
        order = opts.servers if rep % 2 == 1 else list(reversed(opts.servers))
        yield rep, order


def _terminate(signum, frame):
    raise KeyboardInterrupt


def main(argv):
    opts = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    started = datetime.datetime.now()
    stamp = started.strftime("%Y-%m-%dT%H%M%S")
    t0 = time.time()
    log(f"fan-out benchmark {stamp}: servers {opts.servers}, N {opts.ns}, {opts.reps} repetition(s)")
    if not opts.no_build:
        log("building (release)")
        build.build_all(opts.servers, log)
    elif missing := build.missing_parts(opts.servers):
        sys.exit("--no-build, but these are missing (run once without --no-build):\n  " + "\n  ".join(missing))
    opts.source = build.source_kind(opts.source, log)
    settings = measure.Settings(opts.quick)
    res = {"started": started.isoformat(timespec="seconds"), "command": " ".join(["bench/run.sh", *argv]),
           "machine": machine.machine_facts(), "versions": build.versions(),
           "settings": {"servers": opts.servers, "ns": opts.ns, "reps": opts.reps, "quick": opts.quick,
                        "moderate_dps": {n: moderate_for(opts.moderate, n) for n in opts.ns}, "rss_counts": opts.rss_counts, "source": opts.source,
                        "server_core": opts.server_core, "load_core": opts.load_core,
                        "method": vars(settings), "worker_env": opts.worker_env},
           "runs": [], "rss": []}
    os.makedirs(opts.out, exist_ok=True)
    procs.LOGS = os.path.join(opts.out, "logs")
    path = os.path.join(opts.out, stamp)
    try:
        for rep, order in plan(opts):
            log(f"repetition {rep}: order {' '.join(order)}")
            for n in opts.ns:
                for server in order:
                    res["runs"].append(one_run(server, n, rep, opts, settings, res["runs"]))
                    save(res, path)
            for server in order if opts.rss_counts else []:
                idle = machine.wait_idle(timeout=opts.idle_timeout, log=log)
                log(f"  [{server} RSS rep {rep}]")
                try:
                    r = measure.rss_run(server, opts.rss_counts, opts, log)
                except Exception as e:  # noqa: BLE001
                    r = {"server": server, "points": [], "error": f"{type(e).__name__}: {e}"}
                    log(f"    FAILED: {e}")
                r.update({"rep": rep, "idle": idle})
                res["rss"].append(r)
                save(res, path)
    except KeyboardInterrupt:
        log("interrupted: writing what was measured")
        res["interrupted"] = True
    res["duration_s"] = round(time.time() - t0, 1)
    md = save(res, path)
    log("")
    log(md)
    log(f"wrote {path}.json and {path}.md in {res['duration_s'] / 60:.1f} min")


def save(res, path):
    with open(path + ".json", "w") as f:
        json.dump(res, f, indent=1)
    md = report.markdown(res)
    with open(path + ".md", "w") as f:
        f.write(md)
    return md


if __name__ == "__main__":
    main(sys.argv[1:])
