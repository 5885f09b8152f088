"""Reading the machine: idle check from /proc/stat, CPU time and RSS of a process, machine facts.

Everything here reads /proc only; nothing blocks longer than the sampling interval it is given.
"""

import os
import platform
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _cpu_totals():
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields[:8]), idle


def _proc_ticks():
    """{pid: (name, utime+stime ticks)} for every process."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        name = raw[raw.find("(") + 1:raw.rfind(")")]
        rest = raw[raw.rfind(")") + 2:].split()
        out[int(pid)] = (name, int(rest[11]) + int(rest[12]))
    return out


def busy_seconds():
    """CPU seconds spent busy (not idle or iowait) by the whole machine since boot."""
    total, idle = _cpu_totals()
    return (total - idle) / CLK_TCK


def busy_cores(interval=1.0):
    """Cores busy over `interval` seconds, and the three busiest processes (name, cores)."""
    t0, i0 = _cpu_totals()
    p0 = _proc_ticks()
    time.sleep(interval)
    t1, i1 = _cpu_totals()
    p1 = _proc_ticks()
    ncpu = os.cpu_count() or 1
    total = max(t1 - t0, 1)
    busy = (total - (i1 - i0)) / total * ncpu
    deltas = []
    for pid, (name, ticks) in p1.items():
        before = p0.get(pid, (name, ticks))[1]
        if ticks > before:
            deltas.append((name, round((ticks - before) / CLK_TCK / interval, 3)))
    deltas.sort(key=lambda d: -d[1])
    return busy, deltas[:3]


def wait_idle(limit=0.2, timeout=120.0, log=print):
    """Waits until fewer than `limit` cores are busy; returns what was seen (never raises)."""
    start = time.time()
    while True:
        busy, top = busy_cores(1.0)
        waited = time.time() - start
        if busy < limit:
            return {"idle": True, "busy_cores": round(busy, 3), "waited_s": round(waited, 1), "top": top}
        if waited >= timeout:
            log(f"  machine not idle after {waited:.0f} s ({busy:.2f} cores busy: {top}); going on")
            return {"idle": False, "busy_cores": round(busy, 3), "waited_s": round(waited, 1), "top": top}


def cpu_seconds(pid):
    """User + system CPU seconds of a process (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        raw = f.read()
    rest = raw[raw.rfind(")") + 2:].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def rss_kib(pid):
    """VmRSS of a process in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def machine_facts():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // 1024
    return {"nproc": os.cpu_count(), "kernel": platform.release(), "cpu_model": model,
            "mem_mib": mem, "nofile_limit": _nofile()}


def _nofile():
    import resource
    return resource.getrlimit(resource.RLIMIT_NOFILE)
