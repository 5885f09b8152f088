#!/usr/bin/env python3
"""Stand-in for `cryptoworker simulate --bench` (testing the harness without the worker).

Serves `GET /ws` behind HTTP Basic auth and pushes `new_transaction` updates on an open-loop
schedule: event i is due at start + i/rate, and its tx hash embeds that due time
(`0x<16 hex scheduled unix µs><48 hex i>`), so a late send counts as latency. The schedule starts
when the first client connects. After `--count` events it stays up, silent, until killed.
Only the bench's own relays need it; it does not answer JSON-RPC.
"""

import argparse
import asyncio
import base64
import json
import time

from websockets.asyncio.server import broadcast, serve
from websockets.datastructures import Headers
from websockets.http11 import Response

FRAME = ('{"updates":[{"event":"new_transaction","tx":"0x%016x%048x","from_address":"0x%040x",'
         '"to":"0x%040x","amount":"0.100000000000000000","contract":null}],'
         '"wallet":"%s","currency":"%s"}')


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--rate", type=float, required=True, help="events per second")
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--wallets", default="benchwallet")
    ap.add_argument("--coin", default="ETH")
    ap.add_argument("--auth", default="electrum:electrumz")
    args = ap.parse_args()
    expected = "Basic " + base64.b64encode(args.auth.encode()).decode()
    clients = set()
    first = asyncio.Event()

    def check_auth(connection, request):
        if request.headers.get("Authorization") != expected:
            body = json.dumps({"jsonrpc": "2.0", "error": {"code": -32600, "message": "Unauthorized"},
                               "id": None}).encode()
            return Response(200, "OK", Headers([("Content-Type", "application/json")]), body)
        return None

    async def handler(ws):
        clients.add(ws)
        first.set()
        try:
            await ws.wait_closed()
        finally:
            clients.discard(ws)

    async with serve(handler, "127.0.0.1", args.port, process_request=check_auth, compression=None):
        await first.wait()
        start = time.time()
        i = 0
        while i < args.count:
            due = start + i / args.rate
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            msg = FRAME % (int(due * 1e6), i, i, i + 1, args.wallets, args.coin)
            broadcast(clients, msg)
            i += 1
        await asyncio.Future()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
