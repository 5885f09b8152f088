"""A resume-correct asyncio client for the cryptoworker WebSocket event server.

Guarantees, within one client object: events are handed out in seq order, each at most once (a
seq <= the last one handed out in the same epoch is dropped); after every reconnect the client
resubscribes with ``since``/``epoch`` so nothing is missed while the worker still holds the
events; when it cannot (``resumed: false``) a :class:`Resync` says why (``on_resync``, or a
:class:`ResyncNeeded` raised by the iterator) and the stream continues from the worker's current
position. For a ``"*"`` subscription seq grows by exactly one per event, so any jump is reported
as a :class:`Gap`; with a narrower filter seq only grows (gaps are normal and not reported).
Across process restarts, persist ``event.epoch``/``event.seq`` after handling each event and pass
them back as ``position``.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import random
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Optional, Sequence, Union
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

log = logging.getLogger("cryptoworker_client")


@dataclass(frozen=True)
class Position:
    """Where a stream stands: the worker's epoch and the last seq handled in it."""

    epoch: str
    seq: int


@dataclass(frozen=True)
class Event:
    """One delivered event: ``data`` is the event object (``data["event"]``, ``data["coin"]``...)."""

    epoch: str
    seq: int
    data: Any
    timestamp: Optional[float] = None

    @property
    def position(self) -> Position:
        return Position(self.epoch, self.seq)


@dataclass(frozen=True)
class Resync:
    """The worker could not resume from ``previous``: events between it and ``current`` may be
    missing. ``reason`` is ``epoch_changed`` (the worker restarted without a database, or another
    worker), ``not_held`` (older than what the worker keeps) or ``ahead_of_server``."""

    reason: str
    previous: Position
    current: Position


@dataclass(frozen=True)
class Gap:
    """A ``"*"`` subscription saw seq jump from ``expected - 1`` to ``got``."""

    epoch: str
    expected: int
    got: int

    @property
    def missing(self) -> int:
        return self.got - self.expected


class CryptoworkerError(Exception):
    """Base class of the errors the client raises."""


class AuthError(CryptoworkerError):
    """The worker refused the token (HTTP 401, close 1008 or ``unauthorized``): the client stops."""


class SubscribeError(CryptoworkerError):
    """The worker refused the subscription (bad filter, unknown coin): the client stops."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code


class GiveUpError(CryptoworkerError):
    """Too many consecutive failed connections (``max_attempts``): the client stops."""


class ResyncNeeded(CryptoworkerError):
    """Raised by the iterator when resume failed and no ``on_resync`` was given. The client goes
    on: iterate again to continue from ``resync.current``."""

    def __init__(self, resync: Resync):
        super().__init__(f"resync needed: {resync.reason}")
        self.resync = resync


Callback = Callable[[Any], Union[None, Awaitable[None]]]


class _Drop(Exception):
    """Leave the current connection and reconnect after the usual backoff."""


def _is_star(values: Optional[Sequence[str]]) -> bool:
    return values is None or list(values) == ["*"]


async def _call(fn: Optional[Callback], arg: Any) -> None:
    if fn is not None:
        result = fn(arg)
        if inspect.isawaitable(result):
            await result


class CryptoworkerClient:
    """Subscribes, reconnects with full-jitter exponential backoff and resumes.

    Use as an async iterator of :class:`Event` (``async for event in client``), ideally inside
    ``async with client:``. ``position`` is the last event handed out (what to persist once it is
    handled); ``stats`` counts connections, resumes, resyncs, gaps and dropped duplicates.
    """

    def __init__(
        self,
        url: str,
        *,
        events: Sequence[str] = ("*",),
        coins: Optional[Sequence[str]] = None,
        wallets: Optional[Sequence[str]] = None,
        addresses: Optional[Sequence[str]] = None,
        token: Optional[str] = None,
        token_via: str = "message",
        position: Optional[Union[Position, tuple]] = None,
        on_resync: Optional[Callback] = None,
        on_gap: Optional[Callback] = None,
        on_subscribed: Optional[Callback] = None,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        open_timeout: float = 10.0,
        heartbeat: float = 20.0,
        max_attempts: Optional[int] = None,
        queue_size: int = 1000,
        max_size: int = 16 * 1024 * 1024,
        **connect_kwargs: Any,
    ):
        if token_via not in ("message", "query"):
            raise ValueError("token_via is 'message' or 'query'")
        self.url = url
        self.filter = {"events": list(events)}
        for key, value in (("coins", coins), ("wallets", wallets), ("addresses", addresses)):
            if value is not None:
                self.filter[key] = list(value)
        self.star = all(_is_star(v) for v in (events, coins, wallets, addresses))
        self.token = token
        self.token_via = token_via
        if position is not None and not isinstance(position, Position):
            position = Position(*position)
        # The resume cursor: the last event accepted from the wire.
        self._cursor: Optional[Position] = position
        # The last event handed to the caller (what to persist).
        self.position: Optional[Position] = position
        self.on_resync = on_resync
        self.on_gap = on_gap
        self.on_subscribed = on_subscribed
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.open_timeout = open_timeout
        self.heartbeat = heartbeat
        self.max_attempts = max_attempts
        self.max_size = max_size
        self.connect_kwargs = connect_kwargs
        self.stats = {
            "connections": 0,
            "subscribes": 0,
            "resumes": 0,
            "resyncs": 0,
            "gaps": 0,
            "duplicates": 0,
            "delivered": 0,
            "disconnects": 0,
        }
        self._queue_size = max(1, queue_size)
        self._queue: Optional[asyncio.Queue] = None  # made on the running loop (Python 3.9)
        self._task: Optional[asyncio.Task] = None
        self._closing = False
        self._fatal: Optional[BaseException] = None
        self._ended = False
        self._attempts = 0
        self._next_id = 1

    # ----- lifecycle -------------------------------------------------------------------------

    def start(self) -> "CryptoworkerClient":
        """Starts connecting in the background (iterating starts it too)."""
        if self._task is None and not self._closing:
            self._queue = asyncio.Queue(maxsize=self._queue_size)
            self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def close(self) -> None:
        """Stops for good; a running ``async for`` ends."""
        self._closing = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        self._ended = True
        if self._queue is not None:
            try:
                self._queue.put_nowait(("closed", None))
            except asyncio.QueueFull:
                pass

    async def __aenter__(self) -> "CryptoworkerClient":
        return self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __aiter__(self) -> "CryptoworkerClient":
        return self

    async def __anext__(self) -> Event:
        self.start()
        while True:
            if self._fatal is not None:
                raise self._fatal
            if self._queue is None or (self._ended and self._queue.empty()):
                raise StopAsyncIteration
            kind, value = await self._queue.get()
            if kind == "event":
                self.position = value.position
                self.stats["delivered"] += 1
                return value
            if kind == "fresh":
                self.position = value
            elif kind == "subscribed":
                await _call(self.on_subscribed, value)
            elif kind == "resync":
                self.position = value.current
                if self.on_resync is None:
                    raise ResyncNeeded(value)
                await _call(self.on_resync, value)
            elif kind == "gap":
                if self.on_gap is None:
                    log.warning("gap in a \"*\" stream: expected seq %d, got %d", value.expected, value.got)
                else:
                    await _call(self.on_gap, value)
            elif kind == "error":
                self._fatal = value
                raise value
            elif kind == "closed":
                self._ended = True
                raise StopAsyncIteration

    # ----- connection loop -------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while not self._closing:
                code, reason = await self._connection()
                if self._closing:
                    break
                self.stats["disconnects"] += 1
                if code == 1008:
                    raise AuthError(reason or "authentication failed (close 1008)")
                if code == 4008:
                    self._attempts = 0  # slow consumer: resume at once (after a short jitter)
                if self.max_attempts is not None and self._attempts >= self.max_attempts:
                    raise GiveUpError(f"gave up after {self._attempts} failed connections (last close {code})")
                cap = min(self.backoff_max, self.backoff_initial * 2 ** min(self._attempts, 30))
                self._attempts += 1
                delay = random.uniform(0, cap)
                log.info("connection closed (%s %s); reconnecting in %.2f s", code, reason, delay)
                await asyncio.sleep(delay)
        except CryptoworkerError as e:
            await self._queue.put(("error", e))
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug must not leave the iterator waiting forever
            await self._queue.put(("error", e))

    def _url(self) -> str:
        if not (self.token and self.token_via == "query"):
            return self.url
        parts = urlsplit(self.url)
        query = [(k, v) for k, v in parse_qsl(parts.query) if k != "token"] + [("token", self.token)]
        return urlunsplit(parts._replace(query=urlencode(query)))

    async def _connection(self) -> tuple:
        """One connection: returns its close (code, reason)."""
        kwargs = dict(
            open_timeout=self.open_timeout,
            ping_interval=self.heartbeat or None,
            ping_timeout=self.heartbeat or None,
            max_size=self.max_size,
        )
        kwargs.update(self.connect_kwargs)
        try:
            ws = await ws_connect(self._url(), **kwargs)
        except InvalidStatus as e:
            status = getattr(getattr(e, "response", None), "status_code", None)
            if status in (401, 403):
                raise AuthError(f"the worker refused the token (HTTP {status})") from e
            return 1006, f"upgrade refused: HTTP {status}"
        except (OSError, asyncio.TimeoutError, InvalidHandshake) as e:
            return 1006, f"connect failed: {e}"
        self.stats["connections"] += 1
        self._pending: Optional[tuple] = None
        self._subscribed = False
        try:
            if self.token and self.token_via == "message":
                await ws.send(json.dumps({"type": "auth", "id": self._id("auth"), "token": self.token}))
            msg = dict(self.filter, type="subscribe", id=self._id("sub"))
            since = self._cursor
            if since is not None:
                msg["since"] = since.seq
                msg["epoch"] = since.epoch
            self._pending = (msg["id"], since)
            await ws.send(json.dumps(msg))
            async for text in ws:
                await self._message(text)
        except _Drop as e:
            await ws.close(1000, str(e)[:100])
            return 4000, str(e)
        except ConnectionClosed:
            pass
        except CryptoworkerError:
            await ws.close(1000, "client stopping")
            raise
        except asyncio.CancelledError:
            await asyncio.shield(ws.close(1000, "client closing"))
            raise
        code = ws.close_code if ws.close_code is not None else 1006
        return code, ws.close_reason or ""

    def _id(self, prefix: str) -> str:
        self._next_id += 1
        return f"{prefix}-{self._next_id}"

    async def _message(self, text: Union[str, bytes]) -> None:
        try:
            m = json.loads(text)
        except ValueError:
            return
        if not isinstance(m, dict):
            return
        kind = m.get("type")
        if kind == "event":
            await self._wire_event(m)
        elif kind == "subscribed":
            if self._pending is not None and m.get("id") == self._pending[0]:
                await self._subscribed_reply(m)
        elif kind == "error":
            err = m.get("error") or {}
            code, message = err.get("code"), err.get("message", "")
            if code == "unauthorized":
                raise AuthError(message or "unauthorized")
            if self._pending is not None and m.get("id") == self._pending[0]:
                self._pending = None
                if code == "rate_limited":
                    raise _Drop("subscribe rate limited")
                raise SubscribeError(code, message)
            log.warning("worker error %s: %s", code, message)
        # pong, authenticated, status and anything newer: nothing to do

    async def _subscribed_reply(self, m: dict) -> None:
        since = self._pending[1]
        self._pending = None
        self._subscribed = True
        self._attempts = 0
        self.stats["subscribes"] += 1
        current = Position(m["epoch"], int(m["seq"]))
        if since is not None and m.get("resumed") is True:
            self.stats["resumes"] += 1
        else:
            if since is not None:
                self.stats["resyncs"] += 1
                if current.epoch != since.epoch:
                    reason = "epoch_changed"
                elif since.seq > current.seq:
                    reason = "ahead_of_server"
                else:
                    reason = "not_held"
                await self._queue.put(("resync", Resync(reason, since, current)))
            else:
                await self._queue.put(("fresh", current))
            self._cursor = current
        if self.on_subscribed is not None:
            await self._queue.put(("subscribed", {**m, "position": self._cursor}))

    async def _wire_event(self, m: dict) -> None:
        seq = m.get("seq")
        if not self._subscribed or self._cursor is None or not isinstance(seq, int):
            return
        cursor = self._cursor
        if seq <= cursor.seq:
            self.stats["duplicates"] += 1
            return
        if self.star and seq != cursor.seq + 1:
            self.stats["gaps"] += 1
            await self._queue.put(("gap", Gap(cursor.epoch, cursor.seq + 1, seq)))
        self._cursor = Position(cursor.epoch, seq)
        await self._queue.put(("event", Event(cursor.epoch, seq, m.get("data"), m.get("timestamp"))))
