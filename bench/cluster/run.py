#!/usr/bin/env python3
"""The cluster benchmark: three `cryptoworker run` nodes sharing Redis and PostgreSQL, each holding
`--per-node` subscribed clients under a steady moderate stream, against one node alone (database
on, same clients per node, same rate), in one run.

Measures per-node RSS (VmRSS), end-to-end p50/p99 (daemon push -> client, as the load generator
reports it, per node and overall) and so the latency the Redis stream hop adds. Reuses the fan-out
harness (bench/harness: Source, LoadGroup, BenchDatabase, Proc, clean_env, wait_port, stats).
Writes bench/results/cluster-<timestamp>.{json,md}. See bench/cluster/README.md.
"""

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness import machine, measure, procs, stats  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/0"
LEADER_RE = re.compile(r'^cryptoworker_cluster_leader\{[^}]*\}\s+(\d+)', re.M)
LAG_RE = re.compile(r'^cryptoworker_cluster_stream_lag\{[^}]*\}\s+(\d+)', re.M)


def log(msg):
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-node", type=int, default=19000, help="subscribed clients per node (max 19,000)")
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--rate", default="10", help="events/s of the steady stream; a comma list measures "
                    "each rate in turn on the same clients (e.g. 1,2,10)")
    ap.add_argument("--window", type=float, default=5.0, help="measured seconds of the stream")
    ap.add_argument("--server-core", default="0", help="core of every worker node (taskset -c)")
    ap.add_argument("--load-core", default="1", help="core of the source and the load generators")
    ap.add_argument("--port-base", type=int, default=23700)
    ap.add_argument("--timeout", type=float, default=60, help="seconds to wait for a leader and /ready")
    ap.add_argument("--skip-single", action="store_true", help="measure the cluster only")
    ap.add_argument("--out", default=os.path.join(procs.BENCH, "results"))
    a = ap.parse_args(argv)
    try:
        a.rates = [float(x) for x in a.rate.split(",") if x.strip()]
    except ValueError as e:
        ap.error(str(e))
    if not a.rates or min(a.rates) <= 0:
        ap.error("--rate needs positive events/s")
    if not 1 <= a.per_node <= 19_000:
        ap.error("--per-node must be between 1 and 19,000 (one process holds ~20,000 descriptors)")
    return a


class Stack:
    """Everything a phase started, stopped in reverse order whatever happens."""

    def __init__(self):
        self.items = []

    def push(self, stop):
        self.items.append(stop)

    def close(self):
        while self.items:
            try:
                self.items.pop()()
            except Exception as e:  # noqa: BLE001 - keep stopping the rest
                log(f"  cleanup: {type(e).__name__}: {e}")


def node_env(port, daemon_port, database_env, spool, cluster=None):
    """The environment of one worker node (clean: nothing of the caller's worker settings)."""
    c = procs.BENCH_COIN
    env = procs.clean_env({
        "WORKER_COINS": c, f"{c}_HOST": "127.0.0.1", f"{c}_PORT": str(daemon_port),
        "WORKER_HOST": "127.0.0.1", "WORKER_PORT": str(port), "WORKER_MAX_CLIENTS": "25000",
        "WORKER_MAX_CONNECTIONS_PER_IP": "0", "LOG_LEVEL": "warn"})
    env.pop("REDIS_URL", None)
    env.pop("REDIS_KEY_PREFIX", None)
    env.update(database_env)
    env["DB_SPOOL_DIR"] = spool
    if cluster:
        env.update({"REDIS_URL": REDIS_URL, "REDIS_KEY_PREFIX": cluster["prefix"],
                    "WORKER_NODE_ID": cluster["node_id"]})
    return env


def http_get(port, path):
    """(status, body) of GET http://127.0.0.1:port/path; (0, '') if unreachable."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""
    except OSError:
        return 0, ""


def leader_flags(ports):
    """The `cryptoworker_cluster_leader` gauge of each node (None if not readable)."""
    out = []
    for port in ports:
        status, body = http_get(port, "/metrics")
        m = LEADER_RE.search(body) if status == 200 else None
        out.append(int(m.group(1)) if m else None)
    return out


def one_leader(ports):
    """The leader flags once every node answers and exactly one leads, else None."""
    flags = leader_flags(ports)
    return flags if None not in flags and sum(flags) == 1 else None


def wait_until(what, check, timeout, nodes):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any(not n.alive() for n in nodes):
            raise RuntimeError(f"a node exited while waiting for {what} (see bench/results/logs)")
        if (got := check()) is not None:
            return got
        time.sleep(0.1)
    raise RuntimeError(f"no {what} within {timeout:.0f} s")


def start_nodes(count, ports, daemon_port, database, core, stack, prefix=None):
    nodes = []
    for i, port in enumerate(ports):
        spool = tempfile.mkdtemp(prefix="cwbench-cluster-spool-")
        stack.push(lambda s=spool: shutil.rmtree(s, ignore_errors=True))
        cluster = {"prefix": prefix, "node_id": f"node-{i}"} if prefix else None
        name = f"cluster-node-{i}" if prefix else "cluster-single"
        p = procs.Proc(name, [procs.WORKER, "run"], core,
                       env=node_env(port, daemon_port, database.env(), spool, cluster))
        stack.push(p.stop)
        if not procs.wait_port(port, proc=p.popen):
            raise RuntimeError(f"{name} did not listen on {port} (see {p.log.name})")
        nodes.append(p)
    return nodes


def drop_redis_keys(prefix):
    """Deletes this run's keys (only those of its own unique prefix)."""
    cli = ["redis-cli", "-u", REDIS_URL]
    keys = subprocess.run([*cli, "--scan", "--pattern", prefix + "*"], capture_output=True,
                          text=True, timeout=30).stdout.split()
    keys = [k for k in keys if k.startswith(prefix)]
    for i in range(0, len(keys), 100):
        subprocess.run([*cli, "DEL", *keys[i:i + 100]], capture_output=True, timeout=30)
    return len(keys)


def connect_clients(ports, per_node, core, stack):
    groups = []
    for i, port in enumerate(ports):
        g = procs.LoadGroup(f"ws://127.0.0.1:{port}/", per_node, core, measure.next_src_base(),
                            offset=i * per_node, tag=f"cluster-load-{i}")
        stack.push(g.stop)
        groups.append(g)
    t0 = time.time()
    readies = [procs.merged_ready(g.expect("ready", 180 + per_node / 50)) for g in groups]
    for i, r in enumerate(readies):
        if r["open"] < per_node:
            raise RuntimeError(f"node {i}: only {r['open']}/{per_node} clients subscribed: {r}")
    log(f"  {per_node * len(ports):,} clients subscribed ({per_node:,} per node) in {time.time() - t0:.1f} s")
    return groups, readies


def run_step(source, groups, nodes, rate, window_s, s, min_events=None):
    """One open-loop step at `rate` events/s over every load process; per-node and merged results."""
    everyone = procs.JsonProcs()
    everyone.procs = [p for g in groups for p in g.procs]
    lead = max(3, int(rate * s.lead_s))
    window = max(min_events or s.min_events, int(rate * window_s))
    count = lead + window + max(2, int(rate * 0.2))
    everyone.send(f"step {rate:.6g} {lead} {window} {s.grace_ms} 1")
    everyone.expect("step_started", 30)
    t0, cpu0 = time.time(), [machine.cpu_seconds(n.pid) for n in nodes]
    ours0, busy0 = everyone.cpu_seconds() + source.cpu_seconds(), machine.busy_seconds()
    source.stream(rate, count)
    reports = everyone.expect("step", count / rate + s.grace_ms / 1000 + 60)
    done = source.expect("stream_done", count / rate + 60)[0]
    everyone.send(f"quiet 300 {s.quiet_timeout_ms}")
    quiet = everyone.expect("quiet", s.quiet_timeout_ms / 1000 + 10)
    t1, cpu1 = time.time(), [machine.cpu_seconds(n.pid) for n in nodes]
    ours1, busy1 = everyone.cpu_seconds() + source.cpu_seconds(), machine.busy_seconds()
    per_node, at = [], 0
    for i, g in enumerate(groups):
        part = reports[at:at + len(g.procs)]
        at += len(g.procs)
        r = stats.merge_steps(part)
        r["server_cores"] = round((cpu1[i] - cpu0[i]) / (t1 - t0), 3)
        per_node.append(r)
    merged = stats.merge_steps(reports)
    merged.update({"rate": rate, "lead": lead, "window": window, "elapsed_s": round(t1 - t0, 2),
                   "quiet": all(q["quiet"] for q in quiet),
                   "source_behind_max_us": done["behind_max_us"],
                   "server_cores": round(sum(c1 - c0 for c0, c1 in zip(cpu0, cpu1)) / (t1 - t0), 3),
                   "load_cores": round((ours1 - ours0) / (t1 - t0), 3)})
    # Everything else the machine ran meanwhile: PostgreSQL, Redis, other users, the kernel.
    merged["other_cores"] = round(max(0.0, (busy1 - busy0) / (t1 - t0) - merged["server_cores"]
                                      - merged["load_cores"]), 3)
    return merged, per_node


def phase(label, opts, s, ports, daemon_port, sim_port, prefix=None):
    """Starts source, database and nodes, waits for leader and readiness, loads the clients, runs a
    warm-up and the measured step; returns the phase's results. Stops everything it started."""
    stack = Stack()
    out = {"phase": label, "nodes": len(ports), "per_node": opts.per_node, "rates": opts.rates,
           "ports": ports, "redis_prefix": prefix, "steps": []}
    try:
        out["idle_before"] = machine.wait_idle(timeout=30, log=log)
        source = procs.Source("simulate", opts.load_core)
        stack.push(source.stop)
        source.start(daemon_port, sim_port)
        database = procs.BenchDatabase()
        stack.push(database.drop)
        if prefix:
            stack.push(lambda: log(f"  removed {drop_redis_keys(prefix)} Redis keys of {prefix}"))
        t0 = time.time()
        nodes = start_nodes(len(ports), ports, daemon_port, database, opts.server_core, stack, prefix)
        if prefix:
            flags = wait_until("single leader", lambda: one_leader(ports), opts.timeout, nodes)
            out["leader"] = flags.index(1)
            log(f"  leader: node-{out['leader']} after {time.time() - t0:.1f} s")
        wait_until("/ready 200 on every node", lambda: True if all(
            http_get(p, "/ready")[0] == 200 for p in ports) else None, opts.timeout, nodes)
        out["ready_after_s"] = round(time.time() - t0, 2)
        log(f"  every node ready after {out['ready_after_s']:.1f} s")
        source.wait_streams(1)
        out["rss_base_kib"] = [machine.rss_kib(n.pid) for n in nodes]
        groups, readies = connect_clients(ports, opts.per_node, opts.load_core, stack)
        out["connect"] = readies
        out["rss_idle_kib"] = [machine.rss_kib(n.pid) for n in nodes]
        # Warm-up (allocator, caches, the database's first batches), not recorded.
        run_step(source, groups, nodes, max(1.0, opts.rates[0]), 1.0, s, min_events=3)
        for rate in opts.rates:
            merged, per_node = run_step(source, groups, nodes, rate, opts.window, s)
            out["steps"].append({"rate": rate, "step": merged, "per_node_step": per_node,
                                 "rss_kib": [machine.rss_kib(n.pid) for n in nodes]})
            log(f"  {label} at {rate:g} events/s: in time {merged['delivered_ratio']:.3f}, p50 "
                f"{merged['p50_us'] / 1000:.2f} ms, p99 {merged['p99_us'] / 1000:.2f} ms, nodes "
                f"{merged['server_cores']:.2f} cores, load {merged['load_cores']:.2f}, other {merged['other_cores']:.2f}")
        out["rss_loaded_kib"] = [machine.rss_kib(n.pid) for n in nodes]
        if prefix:
            out["leader_after"] = leader_flags(ports)
            out["stream_lag"] = [int(m.group(1)) if (m := LAG_RE.search(http_get(p, "/metrics")[1])) else None
                                 for p in ports]
        log(f"  {label}: RSS after the steps {', '.join(f'{k / 1024:.1f}' for k in out['rss_loaded_kib'])} MiB")
    except Exception as e:  # noqa: BLE001 - record it, clean up, go on with the next phase
        out["error"] = f"{type(e).__name__}: {e}"
        log(f"  {label} FAILED: {out['error']}")
    finally:
        stack.close()
    return out


def ms(us):
    return f"{us / 1000:.2f}" if us is not None else "–"


def markdown(res):
    o = res["settings"]
    lines = [f"# Cluster benchmark {res['started']}", "",
             f"`{res['command']}`: {o['nodes']} nodes x {o['per_node']:,} subscribed clients, rates "
             f"{', '.join(f'{r:g}' for r in o['rates'])} events/s, {o['window']:g} s measured per rate; "
             f"nodes on core {o['server_core']}, source and load on core {o['load_core']}; PostgreSQL "
             f"and Redis unpinned. Machine busy before each phase: "
             f"{busy_before(res)}"
             f" (other cores per step in the latency table).", "", "Memory (VmRSS; KiB/conn = idle minus before clients, over clients):", "",
             "| run | node | role | clients | RSS before clients MiB | idle MiB | after the steps MiB | KiB/conn |",
             "|---|---|---|---|---|---|---|---|"]
    for ph in res["phases"]:
        if ph.get("error") and not ph.get("rss_idle_kib"):
            lines.append(f"| {ph['phase']} | FAILED: {ph['error']} | | | | | | |")
            continue
        for i, base in enumerate(ph["rss_base_kib"]):
            idle = ph["rss_idle_kib"][i]
            after = ph.get("rss_loaded_kib", [None] * len(ph["rss_base_kib"]))[i]
            lines.append(f"| {ph['phase']} | {i} | {role_of(ph, i)} | {ph['per_node']:,} | {base / 1024:.1f} | "
                         f"{idle / 1024:.1f} | {after / 1024 if after else 0:.1f} | {(idle - base) / ph['per_node']:.2f} |")
    lines += ["", "Latency (daemon push to client; scheduled send time to receipt):", "",
              "| events/s | deliveries/s per node | run | node | role | p50 ms | p99 ms | p99.9 ms | in time | node cores | fan-out span p50 ms | other cores |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for rate in res["settings"]["rates"]:
        for ph in res["phases"]:
            st = next((x for x in ph.get("steps", []) if x["rate"] == rate), None)
            if st is None:
                lines.append(f"| {rate:g} | | {ph['phase']} | | | not measured{': ' + ph['error'] if ph.get('error') else ''} | | | | | | |")
                continue
            rows = [(str(i), role_of(ph, i), r) for i, r in enumerate(st["per_node_step"])] if len(ph["ports"]) > 1 else []
            rows.append(("all", "", st["step"]))
            for node, role, r in rows:
                b = "**" if node == "all" else ""
                lines.append(f"| {rate:g} | {rate * ph['per_node']:,.0f} | {ph['phase']} | {node} | {role} | {b}{ms(r['p50_us'])}{b} | "
                             f"{b}{ms(r['p99_us'])}{b} | {ms(r['p999_us'])} | {r['delivered_ratio']:.3f} | {r['server_cores']:.2f} | "
                             f"{ms(r.get('span_p50_us'))} | {r.get('other_cores', '')} |")
    for h in res.get("stream_hop") or []:
        lines += ["", f"Stream hop at {h['rate']:g} events/s (cluster minus single node): p50 {h['p50_ms']:+.2f} ms, "
                  f"p99 {h['p99_ms']:+.2f} ms over all cluster clients; slowest follower p50 "
                  f"{h['followers_p50_ms']:+.2f} ms, p99 {h['followers_p99_ms']:+.2f} ms."]
    return "\n".join(lines) + "\n"


def busy_before(res):
    return ", ".join(f"{ph['phase']} {ph.get('idle_before', {}).get('busy_cores', '?')} cores" for ph in res["phases"])


def role_of(ph, i):
    return "single" if ph["redis_prefix"] is None else ("leader" if ph.get("leader") == i else "follower")


def stream_hop(phases):
    by = {ph["phase"]: {x["rate"]: x for x in ph.get("steps", [])} for ph in phases}
    out = []
    for rate, c in by.get("cluster", {}).items():
        single = by.get("single", {}).get(rate)
        if single is None:
            continue
        s = single["step"]
        leader = next((ph.get("leader") for ph in phases if ph["phase"] == "cluster"), None)
        followers = [r for i, r in enumerate(c["per_node_step"]) if i != leader] or [c["step"]]
        out.append({"rate": rate, "p50_ms": (c["step"]["p50_us"] - s["p50_us"]) / 1000,
                    "p99_ms": (c["step"]["p99_us"] - s["p99_us"]) / 1000,
                    "followers_p50_ms": (max(r["p50_us"] for r in followers) - s["p50_us"]) / 1000,
                    "followers_p99_ms": (max(r["p99_us"] for r in followers) - s["p99_us"]) / 1000})
    return out


def _terminate(signum, frame):
    raise KeyboardInterrupt


def main(argv):
    opts = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    for part in (procs.WORKER, procs.LOADGEN, procs.BENCHSRC):
        if not os.path.exists(part):
            sys.exit(f"missing {part}: build it first (bench/run.sh builds everything)")
    started = datetime.datetime.now(datetime.timezone.utc)
    stamp = started.strftime("%Y-%m-%dT%H%M%S")
    os.makedirs(opts.out, exist_ok=True)
    procs.LOGS = os.path.join(opts.out, "logs", f"cluster-{stamp}")
    s = measure.Settings()
    res = {"started": started.isoformat(timespec="seconds"), "command": " ".join(["bench/cluster/run.py", *argv]),
           "machine": machine.machine_facts(),
           "settings": {"nodes": opts.nodes, "per_node": opts.per_node, "rates": opts.rates, "window": opts.window,
                        "server_core": opts.server_core, "load_core": opts.load_core, "method": vars(s),
                        "redis": REDIS_URL},
           "phases": []}
    log(f"cluster benchmark {stamp}: {opts.nodes} nodes x {opts.per_node:,} clients at {opts.rate} events/s")
    b = opts.port_base
    prefix = f"cwbench-cluster-{os.getpid()}-{int(time.time() * 1000)}:"
    try:
        log(f"cluster: {opts.nodes} nodes, Redis prefix {prefix}")
        res["phases"].append(phase("cluster", opts, s, [b + 2 + i for i in range(opts.nodes)], b, b + 1, prefix))
        if not opts.skip_single:
            log("single node (no Redis, database on)")
            res["phases"].append(phase("single", opts, s, [b + 20], b + 18, b + 19))
    except KeyboardInterrupt:
        log("interrupted: writing what was measured")
        res["interrupted"] = True
    res["stream_hop"] = stream_hop(res["phases"])
    path = os.path.join(opts.out, f"cluster-{stamp}")
    md = markdown(res)
    with open(path + ".json", "w") as f:
        json.dump(res, f, indent=1)
    with open(path + ".md", "w") as f:
        f.write(md)
    print("\n" + md, flush=True)
    log(f"wrote {path}.json and {path}.md")


if __name__ == "__main__":
    main(sys.argv[1:])
