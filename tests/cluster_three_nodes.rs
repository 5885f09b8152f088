//! Three cluster nodes (docs/cluster.md) as real `cryptoworker run` processes on loopback, sharing
//! one PostgreSQL database, one Redis and one simulated daemon:
//! * every client of every node sees one sequence (same seq, same event; no gap, no duplicate);
//! * a SIGKILLed leader is replaced within 5 s, the clients of the survivors see no gap, and a
//!   client of the dead node resumes on a survivor with `since` and `epoch`, losing nothing;
//! * a Redis killed and restarted empty under load leaves every client a contiguous stream.
//!
//! Each test is self-contained: a fresh database, its own key prefix (or a private
//! `redis-server`), its own simulator and nodes. The harness part specific to a cluster
//! ([`Cluster`], [`Load`], [`spawn_reader`]) lives here; the rest is `tests/common`.

mod common;

use common::cluster::{Keys, PrivateRedis, SHARED_REDIS, unique_prefix};
use common::events::{index_of, probe};
use common::metrics::metric;
use common::pg::{TempDir, TestDb};
use common::{
    QUIET, RecvError, Sim, Worker, WorkerBuilder, WsClient, deadline, sim_emit, wait_until,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Nodes per cluster.
const NODES: usize = 3;
/// `"*"` clients per node.
const CLIENTS_PER_NODE: usize = 2;
/// Paces the simulated load: one event every 10 ms plus the `sim_emit` call (at most 100/s).
const EMIT_INTERVAL: Duration = Duration::from_millis(10);
/// The failover bound of docs/cluster.md.
const FAILOVER_LIMIT: Duration = Duration::from_secs(5);
/// Index of the last event a test injects (after its load): every client reads up to it.
const MARKER: u64 = 999_999;
/// How long a client may take to read up to the marker.
const READ_WAIT_S: f64 = 90.0;
/// How long a cluster may take to settle (one leader, daemons connected, followers ready).
const SETTLE_S: f64 = 20.0;
/// What a test prints when the worker has no cluster mode: the most likely reason of a failure.
const NOT_WIRED: &str = "no node reports data.cluster in get_status — cluster mode not wired \
                         into the reactor? (REDIS_URL is parsed but unused before the wiring)";

// ---------------------------------------------------------------------------------------------
// The cluster under test
// ---------------------------------------------------------------------------------------------

/// Three workers on one database and one Redis key prefix, one simulated BTC daemon.
/// Fields drop in order: the nodes are killed before the database is dropped.
struct Cluster {
    /// `None` once killed.
    nodes: Vec<Option<Worker>>,
    ids: Vec<String>,
    sim: Sim,
    _spools: Vec<TempDir>,
    _keys: Keys,
    db: TestDb,
}

impl Cluster {
    /// Starts the simulator, a fresh database and the nodes `node-0`..`node-2` on `redis_url`
    /// under a new key prefix; node-0 must report `data.cluster` before the others start.
    fn start(redis_url: &str, name: &str) -> Cluster {
        let sim = Sim::start("BTC", QUIET);
        let db = TestDb::create();
        let prefix = unique_prefix(name);
        let keys = Keys {
            url: redis_url.into(),
            prefix: prefix.clone(),
        };
        let mut nodes = Vec::new();
        let (mut ids, mut spools) = (Vec::new(), Vec::new());
        for i in 0..NODES {
            let id = format!("node-{i}");
            let spool = TempDir::new("cluster-spool");
            let worker = WorkerBuilder::new()
                .daemon(&sim)
                .envs(&env_refs(&db.worker_env()))
                .env("DB_SPOOL_DIR", &spool.path().display().to_string())
                .env("REDIS_URL", redis_url)
                .env("REDIS_KEY_PREFIX", &prefix)
                .env("WORKER_NODE_ID", &id)
                .start();
            if i == 0 {
                cluster_status(&worker);
            }
            nodes.push(Some(worker));
            ids.push(id);
            spools.push(spool);
        }
        Cluster {
            nodes,
            ids,
            sim,
            _spools: spools,
            _keys: keys,
            db,
        }
    }

    /// Node `i`, which must not have been killed.
    fn node(&self, i: usize) -> &Worker {
        self.nodes[i]
            .as_ref()
            .unwrap_or_else(|| panic!("node-{i} was killed"))
    }

    /// Indexes of the nodes still running.
    fn alive(&self) -> Vec<usize> {
        (0..NODES).filter(|i| self.nodes[*i].is_some()).collect()
    }

    /// Waits until the event log holds exactly seqs 1 to the highest seq any client read
    /// (nothing lost in the takeover, nothing stored twice — the primary key would refuse it).
    fn assert_event_log_complete(&self, highest_read: u64) {
        let mut stored = Vec::new();
        let what = format!("the event log holds seqs 1..={highest_read}");
        wait_until(deadline(15.0), &what, || {
            stored = self.db.event_rows().iter().map(|r| r.seq as u64).collect();
            stored.last().is_some_and(|s| *s >= highest_read)
        });
        let highest = stored.last().copied().unwrap_or(0);
        let want: Vec<u64> = (1..=highest).collect();
        assert!(
            stored == want,
            "the event log has a gap: {} rows up to seq {highest}",
            stored.len()
        );
    }

    /// SIGKILLs node `i` (dropping its `Proc` kills it) and returns the instant it was killed.
    fn kill(&mut self, i: usize) -> Instant {
        let worker = self.nodes[i].take();
        drop(worker);
        Instant::now()
    }

    /// The `data.cluster` of every running node, by index.
    fn roles(&self) -> Vec<(usize, Value)> {
        self.alive()
            .into_iter()
            .map(|i| (i, cluster_status(self.node(i))))
            .collect()
    }

    /// The one node reporting `role: "leader"` among the running ones, if exactly one does.
    fn sole_leader(&self) -> Option<usize> {
        sole_leader_of(&self.roles())
    }

    /// Waits until exactly one running node leads, every other reports `follower` naming it as
    /// `leader`, and every node names itself in `node`; returns the leader's index.
    fn wait_converged(&self) -> usize {
        let mut found = None;
        wait_until(
            deadline(SETTLE_S),
            "one leader, the others following it",
            || {
                let roles = self.roles();
                let Some(leader) = sole_leader_of(&roles) else {
                    return false;
                };
                found = Some(leader);
                roles.iter().all(|(i, c)| {
                    c["node"] == self.ids[*i].as_str()
                        && c["leader"] == self.ids[leader].as_str()
                        && (c["role"] == "leader") == (*i == leader)
                })
            },
        );
        found.unwrap_or_else(|| unreachable!("wait_until returned"))
    }

    /// Waits until the leader's BTC daemon link is up (followers do not connect to daemons).
    fn wait_daemon_connected(&self, leader: usize) {
        let what = format!("node-{leader} (leader) connected to the daemon");
        wait_until(deadline(SETTLE_S), &what, || {
            self.node(leader).status()["daemons"]["BTC"]["connected"] == true
        });
    }

    /// Waits until `/ready` answers 200 on every running node.
    fn wait_all_ready(&self) {
        for i in self.alive() {
            let what = format!("/ready 200 on node-{i}");
            wait_until(deadline(SETTLE_S), &what, || {
                self.node(i).get("/ready").status == 200
            });
        }
    }

    /// Settles the cluster (one leader, its daemon connected, every node ready) and checks the
    /// leader gauge; returns the leader's index.
    fn settle(&self) -> usize {
        let leader = self.wait_converged();
        self.wait_daemon_connected(leader);
        self.wait_all_ready();
        self.assert_leader_gauge(leader);
        leader
    }

    /// `cryptoworker_cluster_leader` is 1 on `leader` and 0 on every other running node.
    fn assert_leader_gauge(&self, leader: usize) {
        for i in self.alive() {
            let v = self.gauge(i, "cryptoworker_cluster_leader");
            let want = if i == leader { 1.0 } else { 0.0 };
            assert_eq!(
                v, want,
                "cryptoworker_cluster_leader on node-{i} (leader node-{leader})"
            );
        }
    }

    /// A cluster gauge of node `i` (labelled with its `node`).
    fn gauge(&self, i: usize, name: &str) -> f64 {
        let samples = self.node(i).metrics();
        metric(&samples, name, &[("node", self.ids[i].as_str())])
            .unwrap_or_else(|| panic!("no {name}{{node=\"{}\"}} in /metrics", self.ids[i]))
    }

    /// Waits until every running node reports `cryptoworker_cluster_redis_connected` = `up`.
    fn wait_redis_link(&self, up: bool) {
        let want = if up { 1.0 } else { 0.0 };
        for i in self.alive() {
            let what = format!("cryptoworker_cluster_redis_connected {want} on node-{i}");
            wait_until(deadline(SETTLE_S), &what, || {
                self.gauge(i, "cryptoworker_cluster_redis_connected") == want
            });
        }
    }

    /// Waits until no running node reports events seen in the stream and not delivered.
    fn wait_stream_lag_zero(&self) {
        for i in self.alive() {
            let what = format!("cryptoworker_cluster_stream_lag 0 on node-{i}");
            wait_until(deadline(SETTLE_S), &what, || {
                self.gauge(i, "cryptoworker_cluster_stream_lag") == 0.0
            });
        }
    }

    /// Opens [`CLIENTS_PER_NODE`] `"*"` clients on every running node, each read by its own
    /// thread up to the marker; the clients of node `resume.0` resume on `resume.1` when cut.
    fn spread_readers(&self, resume: Option<(usize, SocketAddr)>) -> Vec<JoinHandle<Log>> {
        let mut readers = Vec::new();
        for i in self.alive() {
            let fallback = resume.and_then(|(dead, to)| (dead == i).then_some(to));
            for k in 0..CLIENTS_PER_NODE {
                let (client, start, epoch) = subscribe_star(self.node(i).addr);
                let name = format!("client {k} of node-{i}");
                readers.push(spawn_reader(name, client, start, epoch, fallback));
            }
        }
        readers
    }
}

/// The one index whose `data.cluster` says `role: "leader"`, if exactly one does.
fn sole_leader_of(roles: &[(usize, Value)]) -> Option<usize> {
    let mut leaders = roles.iter().filter(|(_, c)| c["role"] == "leader");
    match (leaders.next(), leaders.next()) {
        (Some((i, _)), None) => Some(*i),
        _ => None,
    }
}

/// `(key, value)` pairs as the borrowed form [`WorkerBuilder::envs`] takes.
fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The `data.cluster` of a node's `get_status`; panics with [`NOT_WIRED`] when absent.
fn cluster_status(w: &Worker) -> Value {
    let st = w.status();
    let c = &st["cluster"];
    assert!(c.is_object(), "{NOT_WIRED}; get_status on {}: {st}", w.addr);
    c.clone()
}

/// The `data` of `get_status` on the worker at `addr`.
fn status_at(addr: SocketAddr) -> Value {
    let mut c = WsClient::connect(addr, "/").unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let reply = c.request(json!({"type": "get_status"}), deadline(5.0));
    reply["data"].clone()
}

/// A `"*"` client of the worker at `addr`, the `seq` and `epoch` of its `subscribed` reply.
fn subscribe_star(addr: SocketAddr) -> (WsClient, u64, String) {
    let mut c = WsClient::connect(addr, "/").unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let reply = c.subscribe(json!({"events": ["*"]}), deadline(5.0));
    let seq = reply["seq"].as_u64();
    let epoch = reply["epoch"].as_str().map(str::to_string);
    match (seq, epoch) {
        (Some(seq), Some(epoch)) => (c, seq, epoch),
        _ => panic!("subscribed reply of {addr} without seq and epoch: {reply}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Load
// ---------------------------------------------------------------------------------------------

/// Emits `probe(i)` for every `i` of `range`, one every [`EMIT_INTERVAL`].
fn emit_paced(sim: SocketAddr, range: Range<u64>) {
    for i in range {
        sim_emit(sim, probe(i, 0), None);
        std::thread::sleep(EMIT_INTERVAL);
    }
}

/// Emits the marker, the last event every client reads.
fn emit_marker(sim: SocketAddr) {
    sim_emit(sim, probe(MARKER, 0), None);
}

/// A steady load on another thread: `probe(0)`, `probe(1)`, ... every [`EMIT_INTERVAL`] until
/// stopped.
struct Load {
    stop: Arc<AtomicBool>,
    emitted: Arc<AtomicU64>,
    thread: JoinHandle<()>,
}

impl Load {
    fn start(sim: SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let emitted = Arc::new(AtomicU64::new(0));
        let (s, e) = (stop.clone(), emitted.clone());
        let thread = std::thread::spawn(move || {
            let mut i = 0;
            while !s.load(Ordering::Relaxed) {
                emit_paced(sim, i..i + 1);
                i += 1;
                e.store(i, Ordering::Relaxed);
            }
        });
        Load {
            stop,
            emitted,
            thread,
        }
    }

    /// Events emitted so far.
    fn emitted(&self) -> u64 {
        self.emitted.load(Ordering::Relaxed)
    }

    /// Waits until `n` events have been emitted.
    fn wait_emitted(&self, n: u64) {
        let what = format!("{n} events emitted");
        wait_until(deadline(60.0), &what, || self.emitted() >= n);
    }

    /// Stops the load; returns how many events it emitted.
    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Err(e) = self.thread.join() {
            std::panic::resume_unwind(e);
        }
        self.emitted.load(Ordering::Relaxed)
    }
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

/// What one client read.
struct Log {
    name: String,
    /// The `seq` of its `subscribed` reply: the first event it reads is `start + 1`.
    start: u64,
    /// `(seq, data)` of every event, in the order read.
    events: Vec<(u64, Value)>,
    /// The last seq read before the connection was cut, when it resumed elsewhere.
    resumed_after: Option<u64>,
}

impl Log {
    /// The last seq read (the `subscribed` one before any event).
    fn last(&self) -> u64 {
        self.events.last().map_or(self.start, |(s, _)| *s)
    }

    /// Records a message; true when it is the marker event.
    fn take(&mut self, text: &str) -> bool {
        let v: Value = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {text}", self.name));
        if v["type"] != "event" {
            return false;
        }
        let seq = v["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("{}: event without seq: {text}", self.name));
        let data = v["data"].clone();
        let marker = data["event"] == "probe" && index_of(&data) == Some(MARKER);
        self.events.push((seq, data));
        marker
    }

    /// The probe indexes read, in order.
    fn probes(&self) -> Vec<u64> {
        self.events
            .iter()
            .filter(|(_, d)| d["event"] == "probe")
            .filter_map(|(_, d)| index_of(d))
            .collect()
    }
}

/// A thread reading `client` up to the marker. When the connection is cut and `fallback` is
/// set, it reconnects there once with `since` = the last seq read and `epoch`, and goes on.
fn spawn_reader(
    name: String,
    client: WsClient,
    start: u64,
    epoch: String,
    fallback: Option<SocketAddr>,
) -> JoinHandle<Log> {
    std::thread::spawn(move || {
        let mut log = Log {
            name,
            start,
            events: Vec::new(),
            resumed_after: None,
        };
        let (mut client, mut fallback) = (client, fallback);
        let until = deadline(READ_WAIT_S);
        loop {
            match client.recv_text(until) {
                Ok(text) if log.take(&text) => return log,
                Ok(_) => {}
                Err(RecvError::Timeout) => panic!(
                    "{}: no marker within {READ_WAIT_S} s (last seq {})",
                    log.name,
                    log.last()
                ),
                Err(cut) => {
                    let to = fallback.take().unwrap_or_else(|| {
                        panic!(
                            "{}: connection lost ({cut:?}) after seq {}",
                            log.name,
                            log.last()
                        )
                    });
                    client = resume_on(to, &log, &epoch);
                    log.resumed_after = Some(log.last());
                }
            }
        }
    })
}

/// Reconnects a client to `addr` with `since` = its last seq and `epoch`, as a client of a dead
/// node does; the reply must say `resumed: true`. The dead leader may have delivered a seq a few
/// milliseconds before the survivor read it from the stream, so it asks once the survivor's
/// `last_seq` has reached it (a real client's reconnect backoff is longer than that).
fn resume_on(addr: SocketAddr, log: &Log, epoch: &str) -> WsClient {
    let last = log.last();
    let what = format!("{}: last_seq >= {last} on {addr} before resuming", log.name);
    wait_until(deadline(10.0), &what, || {
        status_at(addr)["last_seq"]
            .as_u64()
            .is_some_and(|s| s >= last)
    });
    let mut c = WsClient::connect(addr, "/").unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let fields = json!({"events": ["*"], "since": last, "epoch": epoch});
    let reply = c.subscribe(fields, deadline(10.0));
    assert_eq!(
        (&reply["resumed"], &reply["epoch"]),
        (&json!(true), &json!(epoch)),
        "{}: resume on {addr} after seq {last}: {reply}",
        log.name
    );
    c
}

/// Joins every reader (re-raising a reader's panic).
fn join_all(readers: Vec<JoinHandle<Log>>) -> Vec<Log> {
    readers
        .into_iter()
        .map(|r| r.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

/// Every client read `start + 1, start + 2, ...` with no gap and no duplicate, and every seq
/// read by several clients carries the same event; returns the events by seq.
fn assert_one_sequence(logs: &[Log]) -> BTreeMap<u64, Value> {
    let mut by_seq: BTreeMap<u64, Value> = BTreeMap::new();
    for log in logs {
        for (expected, (seq, data)) in (log.start + 1..).zip(&log.events) {
            assert_eq!(
                *seq, expected,
                "{}: gap or duplicate: seq {seq} where {expected} was due (resumed after {:?})",
                log.name, log.resumed_after
            );
            let first = by_seq.entry(*seq).or_insert_with(|| data.clone());
            assert_eq!(
                first, data,
                "{}: seq {seq} is another event elsewhere",
                log.name
            );
        }
    }
    by_seq
}

/// Every client read each of `probe(0..n)` exactly once, in order, then the marker.
fn assert_all_delivered(logs: &[Log], n: u64) {
    let want: Vec<u64> = (0..n).chain([MARKER]).collect();
    for log in logs {
        let got = log.probes();
        let missing: Vec<u64> = want.iter().filter(|i| !got.contains(i)).copied().collect();
        assert_eq!(
            got.len(),
            want.len(),
            "{}: {} probes for {} emitted; missing {missing:?}",
            log.name,
            got.len(),
            want.len()
        );
        assert_eq!(got, want, "{}: probes out of order", log.name);
    }
}

/// No client read an injected event twice (under two seqs, e.g. replayed by a new leader's
/// catch-up); returns how many of `probe(0..emitted)` no client read (emitted while no node led).
fn assert_no_event_twice(logs: &[Log], emitted: u64) -> usize {
    let mut seen_anywhere = std::collections::BTreeSet::new();
    for log in logs {
        let probes = log.probes();
        let mut once = std::collections::BTreeSet::new();
        for i in &probes {
            assert!(once.insert(*i), "{}: probe {i} read twice", log.name);
        }
        seen_anywhere.extend(probes);
    }
    (0..emitted).filter(|i| !seen_anywhere.contains(i)).count()
}

/// One line per client: how much it read.
fn summary(logs: &[Log]) -> String {
    let lines: Vec<String> = logs
        .iter()
        .map(|l| {
            let resumed = l
                .resumed_after
                .map_or(String::new(), |s| format!(", resumed after {s}"));
            format!(
                "{}: seq {}..={} ({} events{resumed})",
                l.name,
                l.start + 1,
                l.last(),
                l.events.len()
            )
        })
        .collect();
    lines.join("\n")
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn clients_of_three_nodes_see_one_contiguous_sequence() {
    const EVENTS: u64 = 200;
    let c = Cluster::start(SHARED_REDIS, "three");
    let leader = c.settle();
    let readers = c.spread_readers(None);
    emit_paced(c.sim.addr, 0..EVENTS);
    emit_marker(c.sim.addr);
    let logs = join_all(readers);
    let by_seq = assert_one_sequence(&logs);
    assert_all_delivered(&logs, EVENTS);
    eprintln!(
        "leader node-{leader}; {} distinct seqs\n{}",
        by_seq.len(),
        summary(&logs)
    );
}

#[test]
fn sigkill_of_the_leader_fails_over_within_5s_and_clients_resume() {
    let mut c = Cluster::start(SHARED_REDIS, "sigkill");
    let leader = c.settle();
    let survivor = (leader + 1) % NODES;
    let readers = c.spread_readers(Some((leader, c.node(survivor).addr)));
    let load = Load::start(c.sim.addr);
    load.wait_emitted(100);

    let killed = c.kill(leader);
    let mut new_leader = None;
    wait_until(deadline(15.0), "a new leader among the survivors", || {
        new_leader = c.sole_leader();
        new_leader.is_some()
    });
    let took = killed.elapsed();
    let new_leader = new_leader.unwrap_or_else(|| unreachable!("wait_until returned"));
    eprintln!("failover: node-{new_leader} leads {took:?} after the SIGKILL of node-{leader}");
    assert!(took < FAILOVER_LIMIT, "failover took {took:?}");

    c.wait_daemon_connected(new_leader);
    let before = load.emitted();
    load.wait_emitted(before + 100);
    let emitted = load.stop();
    emit_marker(c.sim.addr);
    let logs = join_all(readers);
    let by_seq = assert_one_sequence(&logs);
    let unseen = assert_no_event_twice(&logs, emitted);
    let highest_read = by_seq.keys().next_back().copied().unwrap_or(0);
    c.assert_event_log_complete(highest_read);
    let dead_node = format!("node-{leader}");
    for log in logs.iter().filter(|l| l.name.ends_with(&dead_node)) {
        assert!(log.resumed_after.is_some(), "{} was never cut", log.name);
    }
    c.assert_leader_gauge(new_leader);
    eprintln!(
        "{emitted} events emitted, {unseen} of them while no node led (never sequenced)\n{}",
        summary(&logs)
    );
}

#[test]
fn redis_killed_and_restarted_empty_under_load_leaves_no_gap() {
    let mut redis = PrivateRedis::start();
    let c = Cluster::start(&redis.url(), "redis-outage");
    let leader = c.settle();
    let readers = c.spread_readers(None);
    emit_paced(c.sim.addr, 0..100);

    redis.kill();
    c.wait_redis_link(false);
    // Two seconds of load during the outage: the leader sequences and stores them.
    emit_paced(c.sim.addr, 100..300);
    redis.restart();
    c.wait_redis_link(true);
    c.wait_all_ready();
    emit_paced(c.sim.addr, 300..400);
    emit_marker(c.sim.addr);

    let logs = join_all(readers);
    assert_one_sequence(&logs);
    assert_all_delivered(&logs, 400);
    c.wait_stream_lag_zero();
    assert_eq!(
        c.sole_leader(),
        Some(leader),
        "a Redis outage changes no role"
    );
    eprintln!("leader node-{leader}\n{}", summary(&logs));
}
