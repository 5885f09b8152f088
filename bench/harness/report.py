"""Turning a results document into the Markdown table (medians with min–max) and target ratios."""

from .stats import summary


def _fmt(s, scale=1.0, digits=0, thousands=True):
    if s is None:
        return "—"

    def one(v):
        v = v * scale
        return f"{v:,.{digits}f}" if thousands else f"{v:.{digits}f}"

    if s["n"] == 1 or s["min"] == s["max"]:
        return one(s["median"])
    return f"{one(s['median'])} ({one(s['min'])}–{one(s['max'])})"


def summarise(res):
    """{(server, n): {metric: summary}} and {(server, target): summary} from the raw runs."""
    table = {}
    for run in res["runs"]:
        row = table.setdefault((run["server"], run["n"]), {k: [] for k in
                               ("sat", "cpu", "p50", "p99", "p999", "span", "ok")})
        sat = run.get("saturation") or {}
        mod = run.get("moderate") or {}
        row["sat"].append(sat.get("sustained_dps"))
        row["cpu"].append(mod.get("cpu_us_per_delivery"))
        for key, field in (("p50", "p50_us"), ("p99", "p99_us"), ("p999", "p999_us"), ("span", "span_p50_us")):
            row[key].append(mod.get(field))
        row["ok"].append(mod.get("delivered_ratio"))
    out = {key: {k: summary(v) for k, v in row.items()} for key, row in table.items()}
    mem = {}
    for r in res.get("rss", []):
        for p in r["points"]:
            if p["connections"] >= p["target"]:
                mem.setdefault((r["server"], p["target"]), []).append(p["kib_per_conn"])
    return out, {k: summary(v) for k, v in mem.items()}


def _ratio(a, b):
    if not a or not b or not b["median"]:
        return None
    return a["median"] / b["median"]


def _met(ok):
    return "met" if ok else "NOT met"


def targets(table, mem, ns):
    """Lines stating each target (issue 13; the database row of issue 11) against the medians."""
    lines = []
    me, off, slow, db = "cryptoworker", "cryptoworker-noenrich", "cryptoworker-2ms", "cryptoworker-db"

    def ratio(a, b, n, key):
        return _ratio(table.get((a, n), {}).get(key), table.get((b, n), {}).get(key))

    for n in ns:
        if n < 1000:
            continue
        for server, peer, want in ((me, "tokio", 2.0), (me, off, 0.8), (slow, "tokio", 1.5)):
            r = ratio(server, peer, n, "sat")
            if r is not None:
                lines.append(f"- Saturation at N = {n:,}: {server} {r:.2f}x {peer} (target >= {want:g}x): "
                             f"{_met(r >= want)}")
    for n in ns:
        r = ratio(me, "tokio", n, "cpu")
        if r is not None:
            lines.append(f"- CPU per delivery at N = {n:,}: {r:.2f}x tokio's (target <= 0.6x): {_met(r <= 0.6)}")
        mine, peer = table.get((me, n), {}), table.get(("tokio", n), {})
        if mine.get("p99") and peer.get("p99"):
            a, b = mine["p99"]["median"] / 1000, peer["p99"]["median"] / 1000
            lines.append(f"- p99 at N = {n:,}: {a:.2f} ms vs tokio {b:.2f} ms (target <=): {_met(a <= b)}")
        with_db = table.get((db, n), {})
        if mine.get("p50") and with_db.get("p50") and with_db.get("p99") and mine.get("p99"):
            d50 = (with_db["p50"]["median"] - mine["p50"]["median"]) / 1000
            d99 = (with_db["p99"]["median"] - mine["p99"]["median"]) / 1000
            lines.append(f"- Durability cost at N = {n:,} (database on vs off, moderate load): "
                         f"p50 {d50:+.2f} ms, p99 {d99:+.2f} ms")
    for (server, target), s in sorted(mem.items()):
        if server == me and s:
            lines.append(f"- Memory at {target:,} connections: {s['median']:.2f} KiB/conn (target <= 1.5): "
                         f"{_met(s['median'] <= 1.5)}")
    return lines


def markdown(res):
    table, mem = summarise(res)
    ns = sorted({n for _, n in table})
    servers = [s for s in res["settings"]["servers"] if any(k[0] == s for k in table) or
               any(k[0] == s for k in mem)]
    m, v = res["machine"], res["versions"]
    moderate = ", ".join(f"{int(v):,} at N = {int(n):,}" for n, v in res["settings"]["moderate_dps"].items())
    out = [f"# Fan-out benchmark, {res['started']}", "",
           f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), Linux {m['kernel']}, {m['mem_mib']:,} MiB. "
           f"Repetitions: {res['settings']['reps']}{' (quick)' if res['settings']['quick'] else ''}; "
           f"source: {res['settings']['source']}.", "",
           "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()), "",
           f"Command: `{res['command']}`", "",
           f"Medians over repetitions, (min–max) when they differ. Saturation: highest rate with >= 99 % "
           f"in time and p99 <= 1 s. CPU, latency and span at the moderate load, in deliveries/s: {moderate}.", "",
           "| N | server | saturation deliveries/s | CPU µs/delivery | p50 ms | p99 ms | p99.9 ms | fan-out span p50 ms |",
           "|---|---|---|---|---|---|---|---|"]
    for n in ns:
        for s in servers:
            row = table.get((s, n))
            if row is None:
                continue
            out.append(f"| {n:,} | {s} | {_fmt(row['sat'])} | {_fmt(row['cpu'], digits=2)} | "
                       f"{_fmt(row['p50'], 0.001, 2)} | {_fmt(row['p99'], 0.001, 2)} | "
                       f"{_fmt(row['p999'], 0.001, 2)} | {_fmt(row['span'], 0.001, 2)} |")
    if mem:
        targets_n = sorted({t for _, t in mem})
        out += ["", "RSS per idle subscribed connection (KiB, VmRSS after minus before / connections):", "",
                "| server | " + " | ".join(f"{t:,} conns" for t in targets_n) + " |",
                "|---|" + "---|" * len(targets_n)]
        for s in servers:
            out.append(f"| {s} | " + " | ".join(_fmt(mem.get((s, t)), digits=2) for t in targets_n) + " |")
    lines = targets(table, mem, ns)
    if lines:
        out += ["", "Targets, from the medians above:", "", *lines]
    notes = _notes(res)
    if notes:
        out += ["", "Notes:", "", *notes]
    return "\n".join(out) + "\n"


def _notes(res):
    notes = []
    for run in res["runs"]:
        tag = f"{run['server']} N={run['n']:,} rep {run['rep']}"
        if run.get("error"):
            notes.append(f"- {tag}: failed: {run['error']}")
        if run.get("idle") and not run["idle"]["idle"]:
            notes.append(f"- {tag}: machine not idle before the run ({run['idle']['busy_cores']} cores: "
                         f"{run['idle']['top']})")
        sat = run.get("saturation") or {}
        if sat.get("bound"):
            notes.append(f"- {tag}: saturation search ended {sat['bound']} (value is a bound)")
        other = max(sat.get("max_other_cores") or 0, (run.get("moderate") or {}).get("other_cores") or 0)
        if other > 0.2:
            notes.append(f"- {tag}: other processes used up to {other:.2f} cores during a step (noisy)")
        if (sat.get("load_cores_at_best") or 0) > 0.85:
            notes.append(f"- {tag}: load generator used {sat['load_cores_at_best']} cores at the best step "
                         f"(the load side may be the limit)")
    for r in res.get("rss", []):
        if r.get("error"):
            notes.append(f"- RSS {r['server']} rep {r['rep']}: failed: {r['error']}")
    return notes
