// cryptoworker-client: a resume-correct client for the cryptoworker WebSocket event server.
// One dependency-free ES module for browsers and Node (a global `WebSocket`: browsers, Node >= 22,
// Node 20 with --experimental-websocket; otherwise pass a constructor as `options.WebSocket`).
//
// Guarantees, within one client object: events are delivered in seq order, each at most once
// (a seq <= the last one delivered in the same epoch is dropped); after every reconnect the
// client resubscribes with `since`/`epoch` so nothing is missed while the worker still holds the
// events; when it cannot (`resumed: false`) `onResync` says why and the stream continues from
// the worker's current position. For a `"*"` subscription seq grows by exactly one per event,
// so any jump is reported to `onGap`; with a narrower filter seq only grows (gaps are normal
// and not reported). Across process restarts, persist `event.epoch`/`event.seq` after handling
// each event and pass them back as `options.position`.

const DEFAULTS = {
  events: ['*'],
  coins: undefined,
  wallets: undefined,
  addresses: undefined,
  token: undefined,
  tokenVia: 'message', // 'message' (an `auth` message first) or 'query' (?token=; a refused key then
  // looks like a network failure to a browser, so the client keeps retrying instead of stopping)
  position: undefined, // {epoch, seq} to resume from
  backoffInitialMs: 500,
  backoffMaxMs: 30000,
  openTimeoutMs: 10000,
  heartbeatMs: 25000, // idle this long: send a `ping`; no answer within as long again: reconnect
  maxAttempts: Infinity, // consecutive failed connections before giving up
  WebSocket: undefined,
  onEvent: undefined, // (event) => void | Promise; awaited, one at a time, in order
  onResync: undefined, // ({reason, previous, current}) => void | Promise
  onGap: undefined, // ({epoch, expected, got, missing}) => void | Promise
  onSubscribed: undefined, // ({epoch, seq, resumed, position}) => void | Promise
  onDisconnect: undefined, // ({code, reason, delayMs}) => void
  onError: undefined, // (error, {fatal}) => void
};

/** The worker refused the token (close 1008 or an `unauthorized` error): the client stops. */
export class AuthError extends Error {
  constructor(message) {
    super(message);
    this.name = 'AuthError';
  }
}

/** The worker refused the subscription (bad filter, unknown coin): the client stops. */
export class SubscribeError extends Error {
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.name = 'SubscribeError';
    this.code = code;
  }
}

/** Too many consecutive failed connections (`maxAttempts`): the client stops. */
export class GiveUpError extends Error {
  constructor(message) {
    super(message);
    this.name = 'GiveUpError';
  }
}

const isStar = (list) => list === undefined || list === null || (list.length === 1 && list[0] === '*');

export class CryptoworkerClient {
  constructor(url, options = {}) {
    this.url = url;
    this.opts = { ...DEFAULTS, ...options };
    this.WS = this.opts.WebSocket || globalThis.WebSocket;
    if (typeof this.WS !== 'function') {
      throw new TypeError('no WebSocket: pass options.WebSocket (Node 20: run with --experimental-websocket)');
    }
    const p = this.opts.position;
    // The resume cursor: the last event accepted (events after it will be requested).
    this.cursor = p && p.epoch && Number.isInteger(p.seq) ? { epoch: p.epoch, seq: p.seq } : null;
    // The last event whose onEvent finished (what to persist).
    this.position = this.cursor ? { ...this.cursor } : null;
    this.star =
      isStar(this.opts.events) && isStar(this.opts.coins) && isStar(this.opts.wallets) && isStar(this.opts.addresses);
    this.stats = { connections: 0, subscribes: 0, resumes: 0, resyncs: 0, gaps: 0, duplicates: 0, delivered: 0, disconnects: 0 };
    this.stopped = false;
    this.attempts = 0;
    this.conn = 0;
    this.ws = null;
    this.timers = [];
    this.queue = [];
    this.draining = false;
    this.nextId = 1;
    this.done = new Promise((resolve, reject) => {
      this.resolveDone = resolve;
      this.rejectDone = reject;
    });
    this.done.catch(() => {}); // a caller that never awaits `done` gets no unhandled rejection
  }

  /** Connects (and keeps reconnecting until `close()` or a fatal error). Returns `this`. */
  start() {
    if (!this.ws && !this.stopped) this.connect();
    return this;
  }

  /** Stops for good: closes the connection with 1000 and resolves `done`. */
  close() {
    if (this.stopped) return this.done;
    this.stopped = true;
    this.teardown(1000, 'client closing');
    this.enqueue(() => this.resolveDone());
    return this.done;
  }

  connect() {
    const conn = ++this.conn;
    let url = this.url;
    if (this.opts.token && this.opts.tokenVia === 'query') {
      const u = new URL(url);
      u.searchParams.set('token', this.opts.token);
      url = u.toString();
    }
    let ws;
    try {
      ws = new this.WS(url);
    } catch (e) {
      this.report(e, false);
      this.lost(1006, String(e && e.message));
      return;
    }
    this.ws = ws;
    this.subscribed = false;
    this.lastRx = Date.now();
    this.pingSentAt = 0;
    this.later(this.opts.openTimeoutMs, () => {
      if (conn === this.conn && ws.readyState !== 1) this.drop(4000, 'open timeout');
    });
    ws.onopen = () => {
      if (conn !== this.conn) return;
      this.stats.connections++;
      this.lastRx = Date.now();
      if (this.opts.token && this.opts.tokenVia === 'message') {
        this.send({ type: 'auth', id: `auth-${this.nextId++}`, token: this.opts.token });
      }
      this.subscribeNow();
      this.heartbeat(conn);
    };
    ws.onmessage = (ev) => {
      if (conn === this.conn) this.message(ev.data);
    };
    ws.onclose = (ev) => {
      if (conn === this.conn) this.lost(ev.code, ev.reason || '');
    };
    ws.onerror = () => {}; // a close event follows
  }

  subscribeNow() {
    const o = this.opts;
    const msg = { type: 'subscribe', id: `sub-${this.nextId++}`, events: o.events };
    for (const k of ['coins', 'wallets', 'addresses']) if (o[k] !== undefined && o[k] !== null) msg[k] = o[k];
    if (this.cursor) {
      msg.since = this.cursor.seq;
      msg.epoch = this.cursor.epoch;
    }
    this.pendingSub = { id: msg.id, since: this.cursor ? { ...this.cursor } : null };
    this.send(msg);
  }

  send(obj) {
    if (this.ws && this.ws.readyState === 1) this.ws.send(JSON.stringify(obj));
  }

  message(text) {
    this.lastRx = Date.now();
    this.pingSentAt = 0;
    let m;
    try {
      m = JSON.parse(typeof text === 'string' ? text : String(text));
    } catch {
      return;
    }
    switch (m.type) {
      case 'event':
        return this.onWireEvent(m);
      case 'subscribed':
        if (this.pendingSub && m.id === this.pendingSub.id) this.onSubscribedReply(m);
        return;
      case 'error':
        return this.onErrorReply(m);
      default:
        return; // pong, authenticated, status, anything newer: nothing to do
    }
  }

  onSubscribedReply(m) {
    const since = this.pendingSub.since;
    this.pendingSub = null;
    this.subscribed = true;
    this.attempts = 0;
    this.stats.subscribes++;
    if (since && m.resumed === true) {
      this.stats.resumes++;
    } else {
      const current = { epoch: m.epoch, seq: m.seq };
      if (since) {
        this.stats.resyncs++;
        let reason = 'not_held';
        if (m.epoch !== since.epoch) reason = 'epoch_changed';
        else if (since.seq > m.seq) reason = 'ahead_of_server';
        const info = { reason, previous: since, current };
        this.enqueue(async () => {
          this.position = { ...current };
          if (this.opts.onResync) await this.opts.onResync(info);
        });
      } else {
        this.enqueue(() => {
          this.position = { ...current };
        });
      }
      this.cursor = { ...current };
    }
    const info = { epoch: m.epoch, seq: m.seq, resumed: m.resumed, position: { ...this.cursor } };
    if (this.opts.onSubscribed) this.enqueue(() => this.opts.onSubscribed(info));
  }

  onWireEvent(m) {
    if (!this.subscribed || !this.cursor || !Number.isInteger(m.seq)) return;
    const epoch = this.cursor.epoch;
    if (m.seq <= this.cursor.seq) {
      this.stats.duplicates++;
      return;
    }
    if (this.star && m.seq !== this.cursor.seq + 1) {
      this.stats.gaps++;
      const info = { epoch, expected: this.cursor.seq + 1, got: m.seq, missing: m.seq - this.cursor.seq - 1 };
      if (this.opts.onGap) this.enqueue(() => this.opts.onGap(info));
    }
    this.cursor.seq = m.seq;
    const event = { epoch, seq: m.seq, data: m.data, timestamp: m.timestamp };
    this.enqueue(async () => {
      if (this.opts.onEvent) await this.opts.onEvent(event);
      this.position = { epoch, seq: m.seq };
      this.stats.delivered++;
    });
  }

  onErrorReply(m) {
    const code = m.error && m.error.code;
    const text = (m.error && m.error.message) || '';
    if (code === 'unauthorized') return this.fatal(new AuthError(text || 'unauthorized'));
    if (this.pendingSub && m.id === this.pendingSub.id) {
      this.pendingSub = null;
      if (code === 'rate_limited') return this.drop(4029, 'subscribe rate limited');
      return this.fatal(new SubscribeError(code, text));
    }
    this.report(new Error(`worker error ${code}: ${text}`), false);
  }

  heartbeat(conn) {
    const every = this.opts.heartbeatMs;
    if (!(every > 0)) return;
    this.later(Math.max(50, every / 2), () => {
      if (conn !== this.conn || this.stopped) return;
      const now = Date.now();
      if (this.pingSentAt && now - this.pingSentAt >= every) return this.drop(4000, 'heartbeat timeout');
      if (!this.pingSentAt && now - this.lastRx >= every) {
        this.pingSentAt = now;
        this.send({ type: 'ping', id: `hb-${this.nextId++}` });
      }
      this.heartbeat(conn);
    });
  }

  /** Abandons the current connection (its late callbacks are ignored) and handles it as lost. */
  drop(code, reason) {
    this.teardown(code, reason);
    this.lost(code, reason);
  }

  teardown(code, reason) {
    this.conn++;
    for (const t of this.timers) clearTimeout(t);
    this.timers = [];
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      try {
        ws.close(code === 1000 || (code >= 3000 && code <= 4999) ? code : 1000, reason.slice(0, 100));
      } catch {
        // already closed
      }
    }
  }

  lost(code, reason) {
    this.conn++;
    for (const t of this.timers) clearTimeout(t);
    this.timers = [];
    this.ws = null;
    this.subscribed = false;
    this.pendingSub = null;
    if (this.stopped) return;
    this.stats.disconnects++;
    if (code === 1008) return this.fatal(new AuthError(reason || 'authentication failed (close 1008)'));
    if (code === 4008) this.attempts = 0; // slow consumer: resume at once (after a short jitter)
    if (this.attempts >= this.opts.maxAttempts) {
      return this.fatal(new GiveUpError(`gave up after ${this.attempts} failed connections (last close ${code})`));
    }
    const cap = Math.min(this.opts.backoffMaxMs, this.opts.backoffInitialMs * 2 ** Math.min(this.attempts, 30));
    const delayMs = Math.floor(Math.random() * cap);
    this.attempts++;
    if (this.opts.onDisconnect) {
      try {
        this.opts.onDisconnect({ code, reason, delayMs });
      } catch (e) {
        this.report(e, false);
      }
    }
    this.timers.push(setTimeout(() => this.stopped || this.connect(), delayMs));
  }

  fatal(err) {
    if (this.stopped) return;
    this.stopped = true;
    this.teardown(1000, 'client stopping');
    this.report(err, true);
    this.enqueue(() => this.rejectDone(err));
  }

  report(err, fatal) {
    if (this.opts.onError) {
      try {
        this.opts.onError(err, { fatal });
      } catch {
        // the caller's error handler failed: nothing left to tell
      }
    }
  }

  later(ms, fn) {
    this.timers.push(setTimeout(fn, ms));
  }

  enqueue(fn) {
    this.queue.push(fn);
    if (!this.draining) this.drain();
  }

  async drain() {
    this.draining = true;
    while (this.queue.length) {
      const fn = this.queue.shift();
      try {
        await fn();
      } catch (e) {
        this.report(e, false);
      }
    }
    this.draining = false;
  }
}

/** `new CryptoworkerClient(url, options).start()`. */
export function connect(url, options) {
  return new CryptoworkerClient(url, options).start();
}
