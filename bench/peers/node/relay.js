#!/usr/bin/env node
// Node peer relay for the cryptoworker fan-out benchmark: Node 20 + the `ws` library.
//
// The job, the same for every peer: connect to a Bitcart-style daemon's `/ws` (HTTP Basic auth),
// turn each update into the cryptoworker client envelope (serialised once per event, `seq`
// incrementing), and send it to the clients whose `subscribe` filter (`events`, and `coins` if
// given) matches. Clients are grouped by filter, so each event costs one check per distinct
// filter. `ping` gets `pong`; `subscribe` gets `subscribed`.
//
// Framing (frame once): each event is JSON-encoded once, and the complete WebSocket frame is
// built once with `WebSocket.Sender.frame` and written to each matching client's socket
// (`ws._socket.write(frame)`: ws's private field, safe here because compression is off, so ws
// writes every frame synchronously and frames cannot interleave). Measured here it costs about a
// third less CPU per delivery than `ws.send(buffer)` for each client, which `--send` selects
// (ws then writes a 2-4 byte header and the shared Buffer, corked, with no copy).
// permessage-deflate is off; ws has no backpressure (a slow client's socket buffer grows).
'use strict';

const { WebSocket, WebSocketServer } = require('ws');

function parseArgs(argv) {
  const opts = { host: '127.0.0.1', auth: 'electrum:electrumz', frameOnce: true };
  for (let i = 2; i < argv.length; i++) {
    const flag = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${flag} needs a value`);
      return argv[++i];
    };
    if (flag === '--port') opts.port = Number(value());
    else if (flag === '--host') opts.host = value();
    else if (flag === '--daemon') opts.daemon = value();
    else if (flag === '--auth') opts.auth = value();
    else if (flag === '--send') opts.frameOnce = false;
    else throw new Error(`unknown option ${flag}`);
  }
  if (!Number.isInteger(opts.port) || !opts.daemon) {
    throw new Error('usage: relay.js --port Q --daemon ws://HOST:PORT/ws [--auth user:pass] [--send]');
  }
  return opts;
}

const now = () => Math.round(Date.now()) / 1000;

function envelope(update, wallet, coin, seq) {
  const name = update.event;
  let data;
  if (name === 'new_transaction') {
    data = {
      event: name, coin, wallet, tx_hash: update.tx ?? null,
      data: {
        amount: update.amount ?? null, from_address: update.from_address ?? null,
        to_address: update.to ?? null, confirmations: null, contract: update.contract ?? null,
      },
    };
  } else if (name === 'new_block') {
    data = { event: name, coin, height: update.height ?? null };
  } else {
    data = { event: name, coin, wallet, ...update };
    data.event = name;
  }
  return { type: 'event', seq, data, timestamp: now() };
}

class Hub {
  constructor(frameOnce) {
    this.groups = new Map(); // key -> { events: Set, coins: Set|null, clients: Set }
    this.keyOf = new Map();
    this.seq = 0;
    this.frameOnce = frameOnce;
  }

  subscribe(ws, events, coins) {
    this.remove(ws);
    const key = JSON.stringify([[...new Set(events)].sort(), coins && [...new Set(coins)].sort()]);
    let group = this.groups.get(key);
    if (!group) {
      group = { events: new Set(events), coins: coins && new Set(coins), clients: new Set() };
      this.groups.set(key, group);
    }
    group.clients.add(ws);
    this.keyOf.set(ws, key);
  }

  remove(ws) {
    const key = this.keyOf.get(ws);
    if (key === undefined) return;
    this.keyOf.delete(ws);
    const group = this.groups.get(key);
    group.clients.delete(ws);
    if (group.clients.size === 0) this.groups.delete(key);
  }

  publish(name, coin, buf) {
    let frame = null;
    for (const g of this.groups.values()) {
      if (!(g.events.has(name) || g.events.has('*')) || (g.coins && !g.coins.has(coin))) continue;
      if (this.frameOnce) {
        frame ??= Buffer.concat(WebSocket.Sender.frame(buf, { fin: true, opcode: 1, mask: false, readOnly: true, rsv1: false }));
        for (const ws of g.clients) if (ws.readyState === WebSocket.OPEN) ws._socket.write(frame);
      } else {
        for (const ws of g.clients) if (ws.readyState === WebSocket.OPEN) ws.send(buf, { binary: false });
      }
    }
  }
}

const strList = (v) => Array.isArray(v) && v.every((x) => typeof x === 'string');
const error = (code, message) => JSON.stringify({ type: 'error', error: { code, message }, timestamp: now() });

function onRequest(hub, ws, raw) {
  let msg;
  try {
    msg = JSON.parse(raw.toString());
  } catch {
    return ws.send(error('invalid_json', 'message is not JSON'));
  }
  if (msg === null || typeof msg !== 'object' || Array.isArray(msg) || !('type' in msg)) {
    return ws.send(error('invalid_message', 'expected an object with a type'));
  }
  if (msg.type === 'ping') return ws.send(JSON.stringify({ type: 'pong', timestamp: now() }));
  if (msg.type !== 'subscribe') return ws.send(error('unknown_type', `unknown type ${JSON.stringify(msg.type)}`));
  const { events } = msg;
  let { coins } = msg;
  if (!strList(events) || (coins !== undefined && coins !== null && !strList(coins))) {
    return ws.send(error('invalid_field', 'events and coins must be lists of strings'));
  }
  coins = coins ? coins.map((c) => c.toUpperCase()) : null;
  hub.subscribe(ws, events, coins);
  ws.send(JSON.stringify({
    type: 'subscribed', events, coins: coins || ['*'], wallets: ['*'], addresses: ['*'], seq: hub.seq, timestamp: now(),
  }));
}

function relayPush(hub, raw) {
  let push;
  try {
    push = JSON.parse(raw.toString());
  } catch {
    return;
  }
  if (!push || !Array.isArray(push.updates)) return;
  const coin = String(push.currency || '').toUpperCase();
  const wallet = push.wallet ?? null;
  for (const update of push.updates) {
    if (!update || typeof update !== 'object') continue;
    hub.seq += 1;
    hub.publish(update.event, coin, Buffer.from(JSON.stringify(envelope(update, wallet, coin, hub.seq))));
  }
}

function connectDaemon(hub, url, auth) {
  const headers = { Authorization: `Basic ${Buffer.from(auth).toString('base64')}` };
  const d = new WebSocket(url, { headers, perMessageDeflate: false, maxPayload: 16 << 20 });
  let retried = false;
  const retry = () => {
    if (retried) return;
    retried = true;
    setTimeout(() => connectDaemon(hub, url, auth), 100);
  };
  d.on('message', (raw) => relayPush(hub, raw));
  d.on('error', retry);
  d.on('close', retry);
}

function main() {
  let opts;
  try {
    opts = parseArgs(process.argv);
  } catch (e) {
    console.error(e.message);
    process.exit(2);
  }
  const hub = new Hub(opts.frameOnce);
  const wss = new WebSocketServer({
    host: opts.host, port: opts.port, backlog: 4096, perMessageDeflate: false, clientTracking: false, maxPayload: 65536,
  });
  wss.on('connection', (ws) => {
    ws.on('message', (raw) => onRequest(hub, ws, raw));
    ws.on('close', () => hub.remove(ws));
    ws.on('error', () => hub.remove(ws));
  });
  connectDaemon(hub, opts.daemon, opts.auth);
  process.on('SIGTERM', () => process.exit(0));
  process.on('SIGINT', () => process.exit(0));
}

main();
