#!/usr/bin/env python3
"""Memory soak for cryptoworker: RSS under steady traffic and client churn with a full ring.

Phases (see bench/soak/README.md):

1. prefill: ``cryptoworker simulate --bench`` sends ``--prefill`` events (default twice the
   ring) at ``--prefill-rate`` so that the resume ring is full before anything is measured;
2. steady: a second simulator sends ``--rate`` events/s for ``--duration-min`` while
   ``soakclients`` (bench/loadgen) holds ``--clients`` subscribed clients plus ``--churners``
   that drop and resume with ``since``/``epoch`` every ``--churn-ms`` (0.5x..1.5x);
   the worker's VmRSS is sampled from /proc every ``--sample-s`` seconds;
3. burst: with the steady clients still there and traffic on, ``--bursts`` times ``--burst``
   clients connect, subscribe and drop; RSS before, at the peak and ``--settle-s`` after;
4. check: the simulator stops, every client must end at the same last sequence number with
   contiguous sequence numbers and no refused resume; RSS once every client is gone
   (``--trim``: and after ``malloc_trim(0)``, called through gdb).

It prints a summary and writes ``bench/results/soak-<date>.json`` (every sample, the
least-squares slope after ``--warmup-min`` in KB/min, the burst figures). The worker can run
under a wrapper (``--wrap 'heaptrack -o /tmp/w'``); RSS is then sampled from the wrapped
cryptoworker process. Everything runs under ``nice`` (``--nice``).
"""

import argparse
import datetime as dt
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOADGEN = ROOT / "bench" / "loadgen"


def log(msg):
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def rss_kb(pid):
    """VmRSS, RssAnon and RssFile of `pid` in KB (None when gone)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                    out[k] = int(v.split()[0])
    except OSError:
        return None
    if "VmRSS" not in out:  # a traced or exiting process may show no memory lines
        time.sleep(0.5)
        return rss_kb(pid) if os.path.exists(f"/proc/{pid}") else None
    return out


def children(pid):
    out = []
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def find_worker(pid, deadline=10.0):
    """The cryptoworker process at or below `pid` (a wrapper may be in between)."""
    end = time.time() + deadline
    while time.time() < end:
        todo = [pid]
        while todo:
            p = todo.pop()
            try:
                comm = Path(f"/proc/{p}/comm").read_text().strip()
            except OSError:
                continue
            if comm == "cryptoworker":
                return p
            todo += children(p)
        time.sleep(0.2)
    raise RuntimeError("worker process not found")


def slope_kb_per_min(points):
    """Least-squares slope of (seconds, KB) points, in KB/min."""
    n = len(points)
    if n < 2:
        return None
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    sxx = sum((t - mx) ** 2 for t, _ in points)
    if sxx == 0:
        return None
    sxy = sum((t - mx) * (v - my) for t, v in points)
    return sxy / sxx * 60.0


def metric(port, name):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " ") or line.startswith(name + "{"):
                    return float(line.rsplit(" ", 1)[1])
    except OSError:
        return None
    return None


class Clients:
    """The soakclients process: commands on stdin, JSON lines on stdout."""

    def __init__(self, cmd):
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True, bufsize=1)
        self.lines = []
        self.cv = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            try:
                v = json.loads(line)
            except ValueError:
                continue
            with self.cv:
                self.lines.append(v)
                self.cv.notify_all()

    def send(self, cmd):
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()

    def wait(self, kind, timeout):
        end = time.time() + timeout
        with self.cv:
            while True:
                for i, v in enumerate(self.lines):
                    if v.get("type") == kind:
                        return self.lines.pop(i)
                left = end - time.time()
                if left <= 0 or self.p.poll() is not None:
                    raise RuntimeError(f"soakclients: no {kind!r} within {timeout}s")
                self.cv.wait(min(left, 1.0))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration-min", type=float, default=60.0)
    ap.add_argument("--warmup-min", type=float, default=5.0,
                    help="samples before this are left out of the slope")
    ap.add_argument("--rate", type=float, default=200.0, help="steady events/s")
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--churners", type=int, default=10)
    ap.add_argument("--churn-ms", type=int, default=3000)
    ap.add_argument("--ring", type=int, default=100000, help="WORKER_RING_SIZE")
    ap.add_argument("--prefill", type=int, default=None, help="default: 2 x ring")
    ap.add_argument("--prefill-rate", type=float, default=3000.0)
    ap.add_argument("--sample-s", type=float, default=10.0)
    ap.add_argument("--burst", type=int, default=2000)
    ap.add_argument("--bursts", type=int, default=3)
    ap.add_argument("--burst-hold-ms", type=int, default=2000)
    ap.add_argument("--settle-s", type=float, default=15.0,
                    help="wait after a burst (and before it) before reading RSS")
    ap.add_argument("--database-url", default=None,
                    help="default: a fresh database soak_<random> on 127.0.0.1, dropped after")
    ap.add_argument("--no-db", action="store_true", help="run the worker without a database")
    ap.add_argument("--port", type=int, default=18190, help="worker port (simulator: +1)")
    ap.add_argument("--wrap", default="", help="command prefix for the worker, e.g. heaptrack")
    ap.add_argument("--worker-env", action="append", default=[], help="KEY=VALUE")
    ap.add_argument("--nice", type=int, default=10)
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--flows", action="store_true",
                    help="steady traffic from the simulator's payment flows (events of varying "
                         "kind and size) instead of --bench pushes")
    ap.add_argument("--trim", action="store_true",
                    help="at the end, call malloc_trim(0) in the worker (gdb) and record RSS")
    ap.add_argument("--target-dir", default=os.environ.get("CARGO_TARGET_DIR",
                                                          str(ROOT / "target")))
    ap.add_argument("--out", default=None, help="results file (default bench/results/soak-*.json)")
    ap.add_argument("--label", default="")
    a = ap.parse_args()
    prefill = a.prefill if a.prefill is not None else 2 * a.ring
    nice = ["nice", "-n", str(a.nice)]
    target = Path(a.target_dir)
    lg_target = target / "loadgen"
    if not a.no_build:
        log("building (release)")
        env = dict(os.environ, CARGO_TARGET_DIR=str(target))
        subprocess.run(nice + ["cargo", "build", "--release", "--bin", "cryptoworker"],
                       cwd=ROOT, env=env, check=True)
        env["CARGO_TARGET_DIR"] = str(lg_target)
        subprocess.run(nice + ["cargo", "build", "--release", "--bin", "soakclients"],
                       cwd=LOADGEN, env=env, check=True)
    worker_bin = target / "release" / "cryptoworker"
    clients_bin = lg_target / "release" / "soakclients"

    work = Path(tempfile.mkdtemp(prefix="soak-"))
    db_name = None
    db_url = a.database_url
    if not a.no_db and not db_url:
        db_name = f"soak_{random.randrange(1 << 30):x}"
        subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", db_name], check=True)
        db_url = f"postgres://postgres@127.0.0.1:5432/{db_name}"
    sim_port = a.port + 1
    procs = []
    wpid = worker = None
    result = {
        "started": dt.datetime.now().isoformat(timespec="seconds"),
        "label": a.label,
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                 capture_output=True, text=True).stdout.strip(),
        "config": {k: v for k, v in vars(a).items() if k not in ("no_build",)},
        "prefill": prefill,
    }
    result["config"]["database"] = not a.no_db

    def simulator(rate, count, delay_ms=0, flows=False):
        cmd = nice + [str(worker_bin), "simulate", "--port", str(sim_port)]
        if flows:
            cmd += ["--block-interval", "10"]
        else:
            cmd += ["--bench", "--start-delay-ms", str(delay_ms), "--count", str(count),
                    "--block-interval", "0"]
        cmd += ["--rate", str(rate), "--wallets", "xpubSOAK", "--preload-wallets"]
        p = subprocess.Popen(cmd, stdout=open(work / "sim.log", "a"), stderr=subprocess.STDOUT)
        procs.append(p)
        return p

    def stop(p):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    try:
        sim = simulator(a.prefill_rate, prefill, 3000)
        time.sleep(0.5)
        env = dict(os.environ, WORKER_COINS="BTC", BTC_HOST="127.0.0.1", BTC_PORT=str(sim_port),
                   WORKER_PORT=str(a.port), WORKER_RING_SIZE=str(a.ring), LOG_LEVEL="warn",
                   DB_SPOOL_DIR=str(work / "spool"))
        if db_url:
            env["DATABASE_URL"] = db_url
        else:
            env.pop("DATABASE_URL", None)
        for kv in a.worker_env:
            k, _, v = kv.partition("=")
            env[k] = v
        wcmd = nice + shlex.split(a.wrap) + [str(worker_bin), "run"]
        worker = subprocess.Popen(wcmd, env=env, stdout=open(work / "worker.log", "w"),
                                  stderr=subprocess.STDOUT)
        procs.append(worker)
        wpid = find_worker(worker.pid)
        log(f"worker pid {wpid}; prefill {prefill} events at {a.prefill_rate}/s; logs in {work}")
        t0 = time.time()
        last, still = -1, 0
        while True:
            seq = metric(a.port, "cryptoworker_last_seq") or 0
            still = still + 1 if seq == last else 0
            last = seq
            if seq >= prefill or (seq >= 0.9 * prefill and still >= 3):
                break
            if worker.poll() is not None:
                raise RuntimeError("worker exited during prefill")
            if time.time() - t0 > prefill / a.prefill_rate * 4 + 120:
                raise RuntimeError(f"prefill stalled at seq {seq}")
            time.sleep(1)
        stop(sim)
        log(f"prefill done in {time.time() - t0:.0f}s: rss {rss_kb(wpid)}")
        result["rss_after_prefill_kb"] = rss_kb(wpid)

        steady_s = a.duration_min * 60
        cl = Clients(nice + [str(clients_bin), "--addr", f"127.0.0.1:{a.port}"])
        sim = simulator(a.rate, 0, flows=a.flows)
        cl.send(f"start {a.clients} {a.churners} {a.churn_ms}")
        started = cl.wait("started", 120)
        log(f"{a.clients} + {a.churners} clients subscribed; steady phase {a.duration_min} min")
        t_start = time.time()
        samples = []
        next_at = t_start
        while True:
            now = time.time()
            if now >= next_at:
                r = rss_kb(wpid)
                if r is None:
                    raise RuntimeError("worker exited")
                cl.send("stats")
                st = cl.wait("stats", 30)
                s = {"t": round(now - t_start, 1), **r, "seq": st["max_seq"],
                     "gaps": st["gaps"], "resumes": st["resumes"]}
                samples.append(s)
                log(f"t={s['t']:.0f}s rss={r['VmRSS']} KB anon={r.get('RssAnon')} "
                    f"seq={st['max_seq']} gaps={st['gaps']} resumes={st['resumes']}")
                next_at += a.sample_s
            if now - t_start >= steady_s:
                break
            time.sleep(max(0.0, min(next_at, t_start + steady_s) - time.time()))
        warm = [(s["t"], s["VmRSS"]) for s in samples if s["t"] >= a.warmup_min * 60]
        warm_anon = [(s["t"], s["RssAnon"]) for s in samples if s["t"] >= a.warmup_min * 60]
        result.update(started_clients=started, samples=samples,
                      slope_kb_per_min=slope_kb_per_min(warm),
                      slope_anon_kb_per_min=slope_kb_per_min(warm_anon),
                      warm_samples=len(warm))

        bursts = []
        result["rss_before_bursts_kb"] = rss_kb(wpid)
        for i in range(a.bursts):
            before = rss_kb(wpid)
            cl.send(f"burst {a.burst} {a.burst_hold_ms}")
            up = cl.wait("burst_up", 120)
            peak = rss_kb(wpid)
            cl.wait("burst_down", 60)
            time.sleep(a.settle_s)
            after = rss_kb(wpid)
            bursts.append({"before": before, "peak": peak, "after": after,
                           "connect_s": up.get("secs")})
            log(f"burst {i + 1}: rss {before['VmRSS']} -> peak {peak['VmRSS']} -> "
                f"{after['VmRSS']} KB")
        result["bursts"] = bursts
        stop(sim)
        cl.send("finish 3000")
        fin = cl.wait("finished", 300)
        log(f"check: {fin}")
        result["check"] = fin
        time.sleep(a.settle_s)
        result["rss_idle_after_kb"] = rss_kb(wpid)
        log(f"all clients gone: rss {result['rss_idle_after_kb']}")
        if a.trim:
            # What glibc holds free but resident: RSS before/after malloc_trim(0) in the worker.
            before = rss_kb(wpid)
            r = subprocess.run(["gdb", "-p", str(wpid), "-batch", "-ex",
                                "call (int)malloc_trim(0)"], capture_output=True, text=True)
            after = rss_kb(wpid)
            result["malloc_trim"] = {"before": before, "after": after, "ok": r.returncode == 0}
            log(f"malloc_trim(0): {before['VmRSS']} -> {after['VmRSS']} KB")
        cl.send("exit")
        result["worker_log_tail"] = (work / "worker.log").read_text()[-2000:]
    finally:
        if wpid and worker.poll() is None:
            # Under a wrapper the signal must reach the worker itself (then the wrapper ends).
            try:
                os.kill(wpid, signal.SIGTERM)
            except OSError:
                pass
        for p in reversed(procs):
            stop(p)
        if db_name:
            subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", "--force",
                            db_name])
    out = Path(a.out) if a.out else ROOT / "bench" / "results" / (
        "soak-" + dt.datetime.now().strftime("%Y-%m-%dT%H%M%S") + ".json")
    out.write_text(json.dumps(result, indent=1) + "\n")
    s = result["samples"]
    print()
    print(f"RSS (KB) every {a.sample_s:.0f}s: " + " ".join(str(x["VmRSS"]) for x in s))
    print(f"slope after {a.warmup_min} min warm-up: {result['slope_kb_per_min']} KB/min "
          f"(anon {result['slope_anon_kb_per_min']}); {s[0]['VmRSS']} -> {s[-1]['VmRSS']} KB")
    print(f"every client got every event: {result['check'].get('ok')} ({result['check']})")
    for i, b in enumerate(result["bursts"]):
        print(f"burst {i + 1} ({a.burst} clients): {b['before']['VmRSS']} -> "
              f"{b['peak']['VmRSS']} -> {b['after']['VmRSS']} KB")
    print(f"all clients gone: {result['rss_idle_after_kb']['VmRSS']} KB"
          + (f"; after malloc_trim(0): {result['malloc_trim']['after']['VmRSS']} KB"
             if "malloc_trim" in result else ""))
    print(f"written {out}")
    return 0 if result["check"].get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
