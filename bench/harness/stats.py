"""Merging load-process reports and summarising repetitions.

The histogram layout mirrors `bench/loadgen/src/hist.rs`: values below 256 µs have one bucket each;
above, each power of two is split into 128 linear buckets. Reports carry sparse `[index, count]`
pairs, which add up across processes.
"""

import statistics

SUB = 128


def bucket_low(idx):
    if idx < 2 * SUB:
        return idx
    shift = idx // SUB - 1
    return (idx - shift * SUB) << shift


def bucket_width(idx):
    return 1 if idx < 2 * SUB else 1 << (idx // SUB - 1)


def merge_hist(reports):
    counts = {}
    for r in reports:
        for idx, c in r.get("hist", []):
            counts[idx] = counts.get(idx, 0) + c
    return counts


def quantile(counts, q, max_value=None):
    """Value (µs) at quantile q of a merged histogram: the midpoint of the bucket holding it."""
    total = sum(counts.values())
    if total == 0:
        return 0
    rank = min(max(1, int(-(-q * total // 1))), total)
    seen = 0
    for idx in sorted(counts):
        seen += counts[idx]
        if seen >= rank:
            v = bucket_low(idx) + bucket_width(idx) // 2
            return min(v, max_value) if max_value is not None else v
    return max_value or 0


def merge_steps(reports):
    """One step result from the reports of every load process."""
    counts = merge_hist(reports)
    mx = max((r.get("max_us", 0) for r in reports), default=0)
    out = {
        "clients": sum(r["clients"] for r in reports),
        "expected": sum(r["expected"] for r in reports),
        "in_time": sum(r["in_time"] for r in reports),
        "window_rx": sum(r["window_rx"] for r in reports),
        "total_rx": sum(r["total_rx"] for r in reports),
        "closed": sum(r.get("closed", 0) for r in reports),
        "late_start": any(r["late_start"] for r in reports),
        "first_idx": min((r["first_idx"] for r in reports if r.get("first_idx") is not None), default=None),
        "p50_us": quantile(counts, 0.5, mx),
        "p99_us": quantile(counts, 0.99, mx),
        "p999_us": quantile(counts, 0.999, mx),
        "max_us": mx,
    }
    out["delivered_ratio"] = out["in_time"] / out["expected"] if out["expected"] else 0.0
    elapsed = max((r.get("elapsed_s", 0.0) for r in reports), default=0.0)
    # CPU of the load processes from step start to report (they share one core).
    out["loadgen_cores"] = round(sum(r.get("cpu_s", 0.0) for r in reports) / elapsed, 3) if elapsed else None
    if all("span_first" in r for r in reports) and reports:
        out.update(spans(reports))
    return out


def spans(reports):
    """Fan-out span (first to last receipt of one event over every client) of complete events."""
    n = len(reports[0]["span_first"])
    clients = sum(r["clients"] for r in reports)
    values = []
    for k in range(n):
        if sum(r["span_count"][k] for r in reports) < clients:
            continue
        first = min(r["span_first"][k] for r in reports if r["span_count"][k])
        last = max(r["span_last"][k] for r in reports if r["span_count"][k])
        values.append(last - first)
    if not values:
        return {"span_events": 0}
    values.sort()
    return {
        "span_events": len(values),
        "span_p50_us": values[len(values) // 2],
        "span_p99_us": values[min(len(values) - 1, int(len(values) * 0.99))],
        "span_max_us": values[-1],
    }


def summary(values):
    """Median with min and max of the non-None values, or None."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}
