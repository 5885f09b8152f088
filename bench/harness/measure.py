"""Measurements of one server: a step, the saturation search, the moderate-load step, idle RSS.

A step starts a new open-loop stream at a given rate on the source (the server stays connected
to it across steps); every load process measures the same window of event indices (after a
short lead-in), then the harness waits until deliveries stop. Server CPU is read from /proc before the source starts and after
the last delivery, so CPU per delivery covers every delivery of the step.
"""

import ipaddress
import math
import time

from . import machine, procs, stats

_GROUPS = [0]
_PORTS = [0]


def next_src_base():
    """A fresh block of loopback source addresses for each load group (no TIME_WAIT reuse)."""
    _GROUPS[0] += 1
    return str(ipaddress.IPv4Address(0x7F010001 + 16 * (_GROUPS[0] % 500_000)))


def next_ports(base):
    """(server port, source port the server connects to, simulator port), fresh for each run."""
    _PORTS[0] = (_PORTS[0] + 1) % 1500
    first = base + 3 * _PORTS[0]
    return first, first + 1, first + 2


class Settings:
    """Knobs of the method (see README); `quick` trades precision for time."""

    def __init__(self, quick=False):
        self.lead_s = 0.3
        self.window_s = 1.0 if quick else 2.0
        self.min_events = 5 if quick else 10
        self.grace_ms = 1000
        self.moderate_window_s = 2.0 if quick else 5.0
        self.precision = 0.5 if quick else 0.12
        self.max_steps = 8 if quick else 14
        self.quiet_timeout_ms = 20_000
        self.max_dps = 12_000_000
        self.min_dps = 1_000


class ServerRun:
    """One server process with N subscribed clients, and the source feeding it."""

    def __init__(self, kind, n, opts, settings, log, warm_dps=20_000):
        self.kind, self.n, self.opts, self.settings, self.log = kind, n, opts, settings, log
        self.warm_dps = warm_dps
        self.port, self.daemon_port, self.sim_port = next_ports(opts.port_base)
        self.source = procs.Source(opts.source, opts.load_core, procs.rpc_delay_for(kind))
        self.server = None
        self.load = None
        self.sat_steps = []

    def start(self):
        if self.source.sim is None:
            self.source.start(self.daemon_port, self.sim_port)
        self.server = procs.start_server(self.kind, self.port, self.daemon_port, self.opts.server_core,
                                         self.opts.worker_env)
        self.source.wait_streams(1)
        self.load = procs.LoadGroup(f"ws://127.0.0.1:{self.port}/", self.n, self.opts.load_core,
                                    next_src_base(), tag=f"load-{self.kind}")
        ready = procs.merged_ready(self.load.expect("ready", 120 + self.n / 100))
        if ready["open"] < self.n:
            raise RuntimeError(f"{self.kind}: only {ready['open']}/{self.n} clients subscribed: {ready}")
        # Warm-up (JIT, allocator, caches), not recorded.
        self._step(self.warm_dps / self.n, 1.0, False, self.settings, s_min=5)
        return ready

    def stop(self, keep_source=False):
        for part in (self.load, self.server):
            if part is not None:
                part.stop()
        if not keep_source:
            self.source.stop()
        self.load = self.server = None

    def restart(self):
        self.log(f"    restarting {self.kind} (backlog or lost clients)")
        self.stop(keep_source=True)
        time.sleep(0.5)
        return self.start()

    def ensure_clients(self):
        self.load.send("status")
        st = procs.merged_ready(self.load.expect("status", 10))
        if st["open"] < self.n:
            self.load.send("reconnect")
            ready = procs.merged_ready(self.load.expect("ready", 120))
            if ready["open"] < self.n:
                self.restart()

    def step(self, rate, window_s, spans, s, min_events=None):
        """Runs one step at `rate` events/s; returns the merged result. A step that hangs (a
        process stops answering) counts as failed and the server is restarted."""
        lead_s = s.lead_s
        while True:
            try:
                r = self._step(rate, window_s, spans, s, lead_s, min_events)
            except (TimeoutError, RuntimeError) as e:
                self.log(f"    step at {rate * self.n:,.0f}/s failed: {e}")
                self.restart()
                return {"rate": rate, "target_dps": rate * self.n, "pass": False, "error": str(e),
                        "delivered_ratio": 0.0, "dps": 0.0, "p99_us": 0, "server_cores": 0.0,
                        "load_cores": 0.0, "closed": 0, "late_start": False}
            if not r["late_start"] or lead_s >= 1.5:
                self._recover(r)
                return r
            self.log(f"    late start at {rate * self.n:,.0f}/s (first index {r['first_idx']}); longer lead-in")
            self._recover(r)
            lead_s *= 2

    def _step(self, rate, window_s, spans, s, lead_s=None, s_min=None):
        lead = max(3, int(rate * (lead_s or s.lead_s)))
        window = max(s_min or s.min_events, int(rate * window_s))
        count = lead + window + max(2, int(rate * 0.2))
        self.load.send(f"step {rate:.6g} {lead} {window} {s.grace_ms} {1 if spans else 0}")
        self.load.expect("step_started", 30)
        t0, cpu0 = time.time(), machine.cpu_seconds(self.server.pid)
        lcpu0 = self.load.cpu_seconds() + self.source.cpu_seconds()
        busy0 = machine.busy_seconds()
        self.source.stream(rate, count)
        budget = count / rate + s.grace_ms / 1000 + 30
        r = stats.merge_steps(self.load.expect("step", budget))
        done = self.source.expect("stream_done", count / rate + 60)[0]
        self.load.send(f"quiet 300 {s.quiet_timeout_ms}")
        q = self.load.expect("quiet", s.quiet_timeout_ms / 1000 + 10)
        t1, cpu1 = time.time(), machine.cpu_seconds(self.server.pid)
        lcpu1 = self.load.cpu_seconds() + self.source.cpu_seconds()
        busy1 = machine.busy_seconds()
        total = sum(x["total_rx"] for x in q)
        r.update({
            "rate": rate, "lead": lead, "window": window, "target_dps": rate * self.n,
            "dps": r["in_time"] * rate / window,
            "server_cpu_s": round(cpu1 - cpu0, 3), "total_rx": total,
            "cpu_us_per_delivery": (cpu1 - cpu0) * 1e6 / total if total else None,
            "server_cores": round((cpu1 - cpu0) / (t1 - t0), 3),
            "load_cores": round((lcpu1 - lcpu0) / (t1 - t0), 3),
            # Everything else the machine ran meanwhile (other users, the kernel's own work).
            "other_cores": round(max(0.0, (busy1 - busy0) - (cpu1 - cpu0) - (lcpu1 - lcpu0)) / (t1 - t0), 3),
            "quiet": all(x["quiet"] for x in q), "elapsed_s": round(t1 - t0, 2),
            "source_behind_max_us": done["behind_max_us"],
        })
        r["pass"] = r["delivered_ratio"] >= 0.99 and r["p99_us"] <= 1_000_000 and not r["late_start"]
        return r

    def _recover(self, r):
        """Before the next step: no backlog, every client subscribed, the server on the source."""
        if not r["quiet"]:
            return self.restart()
        if r["first_idx"] is None:
            self.source.send("status")
            if self.source.expect("status", 5)[0]["streams"] != 1:
                return self.restart()
        if r["closed"]:
            self.ensure_clients()

    def saturation(self, s, guess_dps, factor):
        """Steps the rate (factor up or down, then geometric bisection) to the last sustained one."""
        steps = self.sat_steps

        def test(dps):
            r = self.step(dps / self.n, s.window_s, False, s)
            steps.append(r)
            mark = "ok " if r["pass"] else "LOW"
            self.log(f"    {mark} target {dps:>10,.0f}/s -> in time {r['delivered_ratio']:.3f}, "
                     f"{r['dps']:>10,.0f}/s, p99 {r['p99_us'] / 1000:.1f} ms, server {r['server_cores']:.2f} "
                     f"cores, load {r['load_cores']:.2f} cores (loadgen {r.get('loadgen_cores') or 0:.2f} in the step)")
            return r["pass"]

        lo = hi = None
        d = guess_dps
        while len(steps) < s.max_steps and (lo is None or hi is None):
            # Past a bound with the other side unexplored: try the bound itself once, so a
            # server that sustains more than the last step is not reported at that step.
            if d > s.max_dps and lo is not None and lo < s.max_dps:
                d = s.max_dps
            elif d < s.min_dps and hi is not None and hi > s.min_dps:
                d = s.min_dps
            if not s.min_dps <= d <= s.max_dps:
                break
            if test(d):
                lo = d
                d *= factor
            else:
                hi = d
                d /= factor
        while lo and hi and hi / lo > 1 + s.precision and len(steps) < s.max_steps:
            mid = math.sqrt(lo * hi)
            if test(mid):
                lo = mid
            else:
                hi = mid
        passing = [r for r in steps if r["pass"]]
        best = max(passing, key=lambda r: r["dps"]) if passing else None
        return {
            "sustained_dps": best["dps"] if best else None,
            "bound": None if (lo and hi) else ("above-max" if lo else "below-min"),
            "load_cores_at_best": max(best["load_cores"], best.get("loadgen_cores") or 0) if best else None,
            "max_other_cores": max((r.get("other_cores", 0) for r in steps), default=0),
            "steps": steps,
        }

    def moderate(self, s, dps):
        """The fixed moderate load: latency, fan-out span and CPU per delivery."""
        r = self.step(dps / self.n, s.moderate_window_s, True, s)
        if r.get("error"):
            return r
        self.log(f"    moderate {dps:,.0f}/s: in time {r['delivered_ratio']:.3f}, p50 {r['p50_us'] / 1000:.2f} "
                 f"p99 {r['p99_us'] / 1000:.2f} p99.9 {r['p999_us'] / 1000:.2f} ms, span p50 "
                 f"{r.get('span_p50_us', 0) / 1000:.2f} ms, {r['cpu_us_per_delivery'] or 0:.2f} µs CPU/delivery")
        return r


def rss_run(kind, counts, opts, log):
    """RSS per idle subscribed connection at each of `counts` connections (cumulative)."""
    port, daemon_port, sim_port = next_ports(opts.port_base)
    source = procs.Source(opts.source, opts.load_core, procs.rpc_delay_for(kind))
    server = None
    groups = []
    out = {"server": kind, "points": []}
    try:
        source.start(daemon_port, sim_port)
        server = procs.start_server(kind, port, daemon_port, opts.server_core, opts.worker_env)
        source.wait_streams(1)
        time.sleep(2.0)
        base = machine.rss_kib(server.pid)
        out["base_kib"] = base
        have = 0
        for target in counts:
            g = procs.LoadGroup(f"ws://127.0.0.1:{port}/", target - have, opts.load_core, next_src_base(),
                                offset=have, tag=f"rss-{kind}")
            groups.append(g)
            ready = procs.merged_ready(g.expect("ready", 180 + target / 100))
            have += ready["open"]
            time.sleep(2.0)
            rss = machine.rss_kib(server.pid)
            point = {"connections": have, "target": target, "rss_kib": rss,
                     "kib_per_conn": (rss - base) / have if have else None, "failed": ready["failed"]}
            out["points"].append(point)
            log(f"    {kind}: {have} idle subscribed connections: RSS {rss / 1024:.1f} MiB "
                f"({point['kib_per_conn']:.2f} KiB/conn over a {base / 1024:.1f} MiB base)")
            if have < target:
                log(f"    {kind}: only {have}/{target} connected: {ready['errors']}")
                break
    finally:
        for g in groups:
            g.stop()
        if server is not None:
            server.stop()
        source.stop()
    return out
