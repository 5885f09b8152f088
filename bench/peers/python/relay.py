#!/usr/bin/env python3
"""Python peer relay for the fan-out benchmark: asyncio + the `websockets` library.

The job, the same for every peer: connect to a Bitcart-style daemon's `/ws` (HTTP Basic auth),
turn each update into the cryptoworker client envelope (serialised once per event, `seq`
incrementing), and broadcast it with `websockets.broadcast()` to the clients whose `subscribe`
filter (`events`, and `coins` if given) matches. Clients are grouped by filter so each event costs
one check per distinct filter, not per client. `ping` gets `pong`; `subscribe` gets `subscribed`.

Written the way a careful user would: compression off, the library's defaults otherwise
(`broadcast()` has no backpressure: a slow client's buffer grows until its keepalive times out),
no debug logging. Reconnects to the daemon every 100 ms while it is down.
"""

import argparse
import asyncio
import base64
import json
import logging
import time

from websockets.asyncio.client import connect
from websockets.asyncio.server import broadcast, serve
from websockets.exceptions import WebSocketException

DUMPS = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def now():
    return round(time.time(), 3)


def envelope(update, wallet, coin, seq):
    """The client message for one daemon update (SPEC section 4)."""
    name = update.get("event")
    if name == "new_transaction":
        data = {
            "event": name,
            "coin": coin,
            "wallet": wallet,
            "tx_hash": update.get("tx"),
            "data": {
                "amount": update.get("amount"),
                "from_address": update.get("from_address"),
                "to_address": update.get("to"),
                "confirmations": None,
                "contract": update.get("contract"),
            },
        }
    elif name == "new_block":
        data = {"event": name, "coin": coin, "height": update.get("height")}
    else:
        data = {"event": name, "coin": coin, "wallet": wallet}
        data.update((k, v) for k, v in update.items() if k != "event")
    return {"type": "event", "seq": seq, "data": data, "timestamp": now()}


class Hub:
    """Subscribers grouped by filter: {(events, coins): set(connection)}."""

    def __init__(self):
        self.groups = {}
        self.key_of = {}
        self.seq = 0

    def subscribe(self, ws, events, coins):
        self.remove(ws)
        key = (frozenset(events), None if coins is None else frozenset(coins))
        self.groups.setdefault(key, set()).add(ws)
        self.key_of[ws] = key

    def remove(self, ws):
        key = self.key_of.pop(ws, None)
        if key is not None:
            group = self.groups[key]
            group.discard(ws)
            if not group:
                del self.groups[key]

    def publish(self, name, coin, message):
        for (events, coins), conns in self.groups.items():
            if (name in events or "*" in events) and (coins is None or coin in coins):
                broadcast(conns, message, text=True)


def error(code, message):
    return DUMPS({"type": "error", "error": {"code": code, "message": message}, "timestamp": now()})


def str_list(value):
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


async def handle_request(ws, hub, raw):
    try:
        msg = json.loads(raw)
    except ValueError:
        return await ws.send(error("invalid_json", "message is not JSON"))
    if not isinstance(msg, dict) or "type" not in msg:
        return await ws.send(error("invalid_message", "expected an object with a type"))
    kind = msg["type"]
    if kind == "ping":
        return await ws.send(DUMPS({"type": "pong", "timestamp": now()}))
    if kind != "subscribe":
        return await ws.send(error("unknown_type", f"unknown type {kind!r}"))
    events, coins = msg.get("events"), msg.get("coins")
    if not str_list(events) or (coins is not None and not str_list(coins)):
        return await ws.send(error("invalid_field", "events and coins must be lists of strings"))
    coins = None if coins is None else [c.upper() for c in coins]
    hub.subscribe(ws, events, coins)
    reply = {"type": "subscribed", "events": events, "coins": coins or ["*"], "wallets": ["*"],
             "addresses": ["*"], "seq": hub.seq, "timestamp": now()}
    await ws.send(DUMPS(reply))


async def client_handler(ws, hub):
    try:
        async for raw in ws:
            await handle_request(ws, hub, raw)
    except WebSocketException:
        pass
    finally:
        hub.remove(ws)


async def daemon_loop(url, auth, hub):
    headers = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()}
    while True:
        try:
            async with connect(url, additional_headers=headers, compression=None, max_size=2**24) as d:
                async for raw in d:
                    relay_push(hub, raw)
        except (OSError, WebSocketException, asyncio.TimeoutError):
            pass
        await asyncio.sleep(0.1)


def relay_push(hub, raw):
    try:
        push = json.loads(raw)
        coin = str(push.get("currency") or "").upper()
        wallet = push.get("wallet")
        updates = push.get("updates") or []
    except (ValueError, AttributeError):
        return
    for update in updates:
        if not isinstance(update, dict):
            continue
        hub.seq += 1
        hub.publish(update.get("event"), coin, DUMPS(envelope(update, wallet, coin, hub.seq)).encode())


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--daemon", required=True, help="ws://HOST:PORT/ws")
    ap.add_argument("--auth", default="electrum:electrumz")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    hub = Hub()
    async with serve(lambda ws: client_handler(ws, hub), args.host, args.port,
                     compression=None, backlog=4096, max_size=65536):
        await daemon_loop(args.daemon, args.auth, hub)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
