"""Runs the client with a "*" subscription for a while and prints a JSON summary of what it
delivered (one line on stdout). Used by tests/client_libraries.rs.

    python3 clients/python/tests/resume_test.py <url> <seconds> [--out FILE] [--epoch E --seq N]
            [--token T] [--via query|message]

--out writes every delivered event as a JSON line {epoch, seq, data}. Exit status 0, or 2 when
the client stopped with an error (the summary says which).
"""

import asyncio
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from cryptoworker_client import CryptoworkerClient, CryptoworkerError, Position  # noqa: E402


async def main(url, seconds, flags):
    delivered, resyncs, gap_reports = [], [], []
    counts = {"duplicates": 0, "gaps": 0}
    last = {"pos": None}

    def on_resync(info):
        resyncs.append(info)
        last["pos"] = info.current

    position = None
    if "epoch" in flags:
        position = Position(flags["epoch"], int(flags.get("seq", "0")))
    client = CryptoworkerClient(
        url,
        events=["*"],
        position=position,
        token=flags.get("token"),
        token_via=flags.get("via", "message"),
        backoff_initial=0.1,
        backoff_max=1.0,
        heartbeat=5.0,
        on_resync=on_resync,
        on_gap=gap_reports.append,
    )

    async def consume():
        async for e in client:
            prev = last["pos"]
            if prev is not None and prev.epoch == e.epoch:
                if e.seq <= prev.seq:
                    counts["duplicates"] += 1
                elif e.seq != prev.seq + 1:
                    counts["gaps"] += 1
            last["pos"] = e.position
            delivered.append(e)

    task = asyncio.ensure_future(consume())
    done, _ = await asyncio.wait([task], timeout=seconds)
    fatal = None
    if task in done:
        fatal = task.exception()
    await client.close()
    if task not in done:
        try:
            await task
        except CryptoworkerError as e:
            fatal = e

    if "out" in flags:
        with open(flags["out"], "w") as f:
            for e in delivered:
                f.write(json.dumps({"epoch": e.epoch, "seq": e.seq, "data": e.data}) + "\n")
    pos = lambda p: None if p is None else {"epoch": p.epoch, "seq": p.seq}  # noqa: E731
    summary = {
        "client": "python",
        "delivered": len(delivered),
        "first": pos(delivered[0].position) if delivered else None,
        "last": pos(last["pos"]),
        "duplicates": counts["duplicates"],
        "gaps": counts["gaps"],
        "gap_reports": len(gap_reports),
        "resyncs": [
            {"reason": r.reason, "previous": pos(r.previous), "current": pos(r.current)} for r in resyncs
        ],
        "stats": client.stats,
        "error": None if fatal is None else {"name": type(fatal).__name__, "message": str(fatal)},
    }
    print(json.dumps(summary), flush=True)
    return 2 if fatal is not None else 0


if __name__ == "__main__":
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        sys.exit(64)
    rest = sys.argv[3:]
    flags = {rest[i].lstrip("-"): rest[i + 1] for i in range(0, len(rest) - 1, 2)}
    sys.exit(asyncio.run(main(sys.argv[1], float(sys.argv[2]), flags)))
