// Runs the client with a "*" subscription for a while and prints a JSON summary of what it
// delivered (one line on stdout). Used by tests/client_libraries.rs.
//
//   node clients/js/test/resume_test.mjs <url> <seconds> [--out FILE] [--epoch E --seq N]
//        [--token T] [--via query|message]
//
// --out writes every delivered event as a JSON line {epoch, seq, data}. Exit status 0, or 2
// when the client stopped with an error (the summary says which).
import { writeFileSync } from 'node:fs';
import { CryptoworkerClient } from '../cryptoworker-client.mjs';

const [url, secondsText, ...rest] = process.argv.slice(2);
if (!url || !secondsText) {
  console.error('usage: resume_test.mjs <url> <seconds> [--out FILE] [--epoch E --seq N] [--token T] [--via query|message]');
  process.exit(64);
}
const flags = {};
for (let i = 0; i < rest.length; i += 2) flags[rest[i].replace(/^--/, '')] = rest[i + 1];

const delivered = [];
const resyncs = [];
const gapReports = [];
const errors = [];
let duplicates = 0;
let gaps = 0;
let last = null;
const position = flags.epoch !== undefined ? { epoch: flags.epoch, seq: Number(flags.seq || 0) } : undefined;

const client = new CryptoworkerClient(url, {
  events: ['*'],
  position,
  token: flags.token,
  tokenVia: flags.via || 'message',
  backoffInitialMs: 100,
  backoffMaxMs: 1000,
  heartbeatMs: 5000,
  onEvent: (e) => {
    if (last && last.epoch === e.epoch) {
      if (e.seq <= last.seq) duplicates++;
      else if (e.seq !== last.seq + 1) gaps++;
    }
    last = { epoch: e.epoch, seq: e.seq };
    delivered.push(e);
  },
  onResync: (info) => {
    resyncs.push(info);
    last = { ...info.current };
  },
  onGap: (info) => gapReports.push(info),
  onError: (err, { fatal }) => errors.push({ name: err.name, message: err.message, fatal }),
}).start();

let fatal = null;
client.done.catch((e) => {
  fatal = e;
});
const stopAt = Date.now() + Number(secondsText) * 1000;
while (Date.now() < stopAt && !fatal) await new Promise((r) => setTimeout(r, 50));
await client.close().catch(() => {});

if (flags.out) writeFileSync(flags.out, delivered.map((e) => JSON.stringify({ epoch: e.epoch, seq: e.seq, data: e.data })).join('\n') + (delivered.length ? '\n' : ''));
const summary = {
  client: 'js',
  delivered: delivered.length,
  first: delivered.length ? { epoch: delivered[0].epoch, seq: delivered[0].seq } : null,
  last,
  duplicates,
  gaps,
  gap_reports: gapReports.length,
  resyncs: resyncs.map((r) => ({ reason: r.reason, previous: r.previous, current: r.current })),
  stats: client.stats,
  error: fatal ? { name: fatal.name, message: fatal.message } : null,
  errors,
};
console.log(JSON.stringify(summary));
process.exit(fatal ? 2 : 0);
