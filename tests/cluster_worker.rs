//! Cluster mode end to end (docs/cluster.md): two `cryptoworker run` processes with the same
//! `REDIS_URL` and database, one simulated daemon. The clients of both nodes see one sequence;
//! `get_status` shows one leader and one follower; when the leader is killed (SIGKILL) the
//! follower leads within 5 s and its clients see the sequence go on with no gap and no duplicate.
//! While Redis is away the leader's clients keep getting events; once it is back (empty) the
//! follower's clients get what they missed, with no gap. A new leader's catch-up recovers what
//! the daemon queued during the failover, and nothing the old leader had sent.

mod common;

use common::cluster::{Keys, PrivateRedis, SHARED_REDIS, unique_prefix};
use common::events::{block, index_of, transaction, tx_hash};
use common::pg::{TempDir, TestDb};
use common::{QUIET, Sim, Worker, WorkerBuilder, WsClient, deadline, star_client, wait_until};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Instant;

/// The product's failover bound.
const FAILOVER_LIMIT_S: f64 = 5.0;

/// A cluster node on `sim` named `node`, on the machine's Redis.
fn node(sim: &Sim, db: &TestDb, prefix: &str, node: &str, spool: &TempDir) -> Worker {
    node_on(SHARED_REDIS, sim, db, prefix, node, spool)
}

/// A cluster node on `sim` named `node`, on the Redis at `redis`.
fn node_on(
    redis: &str,
    sim: &Sim,
    db: &TestDb,
    prefix: &str,
    node: &str,
    spool: &TempDir,
) -> Worker {
    let mut env = db.worker_env();
    env.push(("DB_SPOOL_DIR", spool.path().display().to_string()));
    env.push(("REDIS_URL", redis.into()));
    env.push(("REDIS_KEY_PREFIX", prefix.into()));
    env.push(("WORKER_NODE_ID", node.into()));
    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    WorkerBuilder::new().daemon(sim).envs(&refs).start()
}

/// The node's `data.cluster` role.
fn role(w: &Worker) -> String {
    w.status()["cluster"]["role"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Reads events until every index in `want` was seen, checking that `seq` grows by exactly one
/// from `after`; returns the events and the last seq.
fn read_indexes(c: &mut WsClient, after: u64, want: &BTreeSet<u64>) -> (Vec<Value>, u64) {
    let until = deadline(20.0);
    let (mut seen, mut out, mut last) = (BTreeSet::new(), Vec::new(), after);
    while !want.is_subset(&seen) {
        let e = c.recv_event(until);
        let seq = common::seq(&e);
        assert_eq!(seq, last + 1, "no gap, no duplicate: {e}");
        last = seq;
        if let Some(i) = index_of(&e["data"]) {
            assert!(seen.insert(i), "index {i} twice: {e}");
        }
        out.push(e);
    }
    (out, last)
}

/// A client of `w` resuming after `since` gets `since+1..=last` again, from the node's ring.
fn assert_resume_replays(w: &Worker, since: u64, last: u64) {
    let epoch = w.status()["epoch"].clone();
    let mut c = w.ws();
    let reply = c.subscribe(
        serde_json::json!({"events": ["*"], "since": since, "epoch": epoch}),
        deadline(5.0),
    );
    assert_eq!(reply["resumed"], true, "{reply}");
    let seqs: Vec<u64> = c
        .events_through(last, std::time::Duration::from_secs(5))
        .iter()
        .map(common::seq)
        .collect();
    assert_eq!(seqs, (since + 1..=last).collect::<Vec<_>>());
}

fn emit(sim: &Sim, range: std::ops::Range<u64>) -> BTreeSet<u64> {
    for i in range.clone() {
        if i % 2 == 0 {
            sim.emit(block(i), None);
        } else {
            sim.emit(transaction(i), Some("xpub-cluster"));
        }
    }
    range.collect()
}

#[test]
fn two_nodes_share_one_sequence_and_the_follower_takes_over_within_5s() {
    let sim = Sim::start("btc", QUIET);
    let db = TestDb::create();
    let prefix = unique_prefix("worker");
    let _keys = Keys::shared(&prefix);
    let (spool_a, spool_b) = (TempDir::new("cluster-a"), TempDir::new("cluster-b"));
    let mut a = node(&sim, &db, &prefix, "node-a", &spool_a);
    wait_until(deadline(15.0), "node-a leads", || role(&a) == "leader");
    a.wait_connected(&["btc"], deadline(15.0));
    let b = node(&sim, &db, &prefix, "node-b", &spool_b);
    wait_until(deadline(15.0), "node-b follows node-a", || {
        let st = b.status();
        st["cluster"]["role"] == "follower" && st["cluster"]["leader"] == "node-a"
    });
    assert_eq!(b.status()["cluster"]["node"], "node-b");
    assert!(
        b.status()["daemons"]
            .as_object()
            .is_some_and(|d| d.is_empty()),
        "a follower has no daemon link"
    );
    wait_until(deadline(10.0), "node-b ready (receiving)", || {
        b.get("/ready").status == 200
    });

    let (mut ca, from_a) = star_client(&a);
    let (mut cb, from_b) = star_client(&b);
    let want = emit(&sim, 0..20);
    let (events_a, last_a) = read_indexes(&mut ca, from_a, &want);
    let (events_b, last_b) = read_indexes(&mut cb, from_b, &want);
    let seqs_of = |v: &[Value], idx: u64| {
        v.iter()
            .find(|e| index_of(&e["data"]) == Some(idx))
            .map(common::seq)
    };
    for i in &want {
        assert_eq!(
            seqs_of(&events_a, *i),
            seqs_of(&events_b, *i),
            "event {i} has one seq on both nodes"
        );
    }
    assert_eq!(last_a, last_b, "both nodes at the same seq");
    assert_resume_replays(&b, from_b, last_b);
    assert_eq!(
        a.metric("cryptoworker_cluster_leader", &[("node", "node-a")]),
        1.0
    );
    assert_eq!(
        b.metric("cryptoworker_cluster_leader", &[("node", "node-b")]),
        0.0
    );
    assert_eq!(b.metric("cryptoworker_cluster_stream_lag", &[]), 0.0);
    assert_eq!(
        a.metric("cryptoworker_cluster_append_refused_total", &[]),
        0.0
    );

    let killed = Instant::now();
    drop(a); // SIGKILL
    wait_until(deadline(FAILOVER_LIMIT_S), "node-b leads", || {
        role(&b) == "leader"
    });
    let failover = killed.elapsed();
    println!("failover: node-b leads {failover:?} after SIGKILL of node-a");
    let mut b = b;
    b.wait_connected(&["btc"], deadline(10.0));
    println!(
        "failover: node-b connected to the daemon {:?} after SIGKILL",
        killed.elapsed()
    );
    let more = emit(&sim, 20..40);
    let (after, _) = read_indexes(&mut cb, last_b, &more);
    assert!(after.iter().all(|e| e["seq"].as_u64() > Some(last_b)));
    let epochs: BTreeSet<String> = db.event_rows().iter().map(|r| r.epoch.clone()).collect();
    assert_eq!(epochs.len(), 1, "one epoch across the failover: {epochs:?}");
}

#[test]
fn a_redis_outage_keeps_the_leaders_clients_served_and_the_follower_catches_up() {
    let RedisPair {
        sim,
        db: _db,
        mut redis,
        a,
        b,
        mut ca,
        mut cb,
        last_a,
        last_b,
        _spools,
    } = pair_on_private_redis("outage");

    redis.kill();
    wait_until(deadline(10.0), "node-b sees Redis gone", || {
        b.metric("cryptoworker_cluster_redis_connected", &[]) == 0.0
    });
    assert_eq!(
        b.get("/ready").status,
        503,
        "a follower without the stream is not ready"
    );
    let during = emit(&sim, 5..15);
    let (_, last_a) = read_indexes(&mut ca, last_a, &during);

    redis.restart();
    let (_, last_b) = read_indexes(&mut cb, last_b, &during);
    assert_eq!(last_a, last_b, "the follower caught up with no gap");
    let after = emit(&sim, 15..20);
    read_indexes(&mut ca, last_a, &after);
    read_indexes(&mut cb, last_b, &after);
    assert_eq!(role(&a), "leader", "no role change during the outage");
    assert_eq!(role(&b), "follower");
}

/// Ends `node`'s elector session in PostgreSQL (its lock goes with it), as a lost connection would.
fn cut_elector_session(db: &TestDb, node: &str) {
    let terminated: bool = db
        .client()
        .query_one(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name = 'cryptoworker-elector ' || $1
               AND datname = current_database()",
            &[&node],
        )
        .unwrap_or_else(|e| panic!("terminate {node}'s elector session: {e}"))
        .get(0);
    assert!(terminated, "{node}'s elector session was found");
}

/// Two nodes on a private Redis (key prefix `cw:`), as [`leader_then_follower`] builds them, with
/// a `"*"` client on each that has read events 0..5 (`last_a`, `last_b`: their last seqs).
struct RedisPair {
    sim: Sim,
    db: TestDb,
    redis: PrivateRedis,
    a: Worker,
    b: Worker,
    ca: WsClient,
    cb: WsClient,
    last_a: u64,
    last_b: u64,
    _spools: (TempDir, TempDir),
}

fn pair_on_private_redis(tag: &str) -> RedisPair {
    let redis = PrivateRedis::start();
    let (sim, db, a, b, spools) = start_nodes(&redis.url(), "cw:", tag);
    let (mut ca, from_a) = star_client(&a);
    let (mut cb, from_b) = star_client(&b);
    let (_, last_a) = read_indexes(&mut ca, from_a, &emit(&sim, 0..5));
    let (_, last_b) = read_indexes(&mut cb, from_b, &(0..5).collect());
    RedisPair {
        sim,
        db,
        redis,
        a,
        b,
        ca,
        cb,
        last_a,
        last_b,
        _spools: spools,
    }
}

/// Two nodes on one simulator, database and key prefix: `a` leads with its daemon connected,
/// `b` follows and receives the stream. Bind every field (`_keys`, `_spools` too): an unbound
/// field would be dropped at once, deleting the keys or spool directories under running nodes.
struct Pair {
    sim: Sim,
    db: TestDb,
    a: Worker,
    b: Worker,
    _keys: Keys,
    _spools: (TempDir, TempDir),
}

fn leader_then_follower(tag: &str) -> Pair {
    let prefix = unique_prefix(tag);
    let keys = Keys::shared(&prefix);
    let (sim, db, a, b, spools) = start_nodes(SHARED_REDIS, &prefix, tag);
    Pair {
        sim,
        db,
        a,
        b,
        _keys: keys,
        _spools: spools,
    }
}

/// A simulator, a fresh database and two nodes on `redis` under `prefix`: `node-a` leads with its
/// daemon connected, `node-b` receives the stream.
fn start_nodes(
    redis: &str,
    prefix: &str,
    tag: &str,
) -> (Sim, TestDb, Worker, Worker, (TempDir, TempDir)) {
    let sim = Sim::start("btc", QUIET);
    let db = TestDb::create();
    let spools = (
        TempDir::new(&format!("{tag}-a")),
        TempDir::new(&format!("{tag}-b")),
    );
    let mut a = node_on(redis, &sim, &db, prefix, "node-a", &spools.0);
    wait_until(deadline(15.0), "node-a leads", || role(&a) == "leader");
    a.wait_connected(&["btc"], deadline(15.0));
    let b = node_on(redis, &sim, &db, prefix, "node-b", &spools.1);
    wait_until(deadline(15.0), "node-b receiving", || {
        b.get("/ready").status == 200
    });
    (sim, db, a, b, spools)
}

#[test]
fn a_leader_stopped_with_sigterm_hands_over_with_no_gap() {
    let Pair {
        sim,
        db: _db,
        mut a,
        mut b,
        _keys,
        _spools,
    } = leader_then_follower("sigterm");
    let (mut ca, from_a) = star_client(&a);
    let (mut cb, from_b) = star_client(&b);
    read_indexes(&mut ca, from_a, &emit(&sim, 0..10));
    a.sigterm();
    assert!(a.wait_exit(deadline(15.0)).is_some_and(|s| s.success()));
    wait_until(deadline(FAILOVER_LIMIT_S), "node-b leads", || {
        role(&b) == "leader"
    });
    b.wait_connected(&["btc"], deadline(10.0));
    let want: BTreeSet<u64> = (0..20).collect();
    emit(&sim, 10..20);
    read_indexes(&mut cb, from_b, &want);
}

/// Reads events (seq growing by one from `after`) until a `new_transaction` of `last_tx`;
/// returns the `new_transaction` hashes in order and the last seq.
fn transactions_through(c: &mut WsClient, after: u64, last_tx: &str) -> (Vec<String>, u64) {
    let until = deadline(20.0);
    let (mut prev, mut hashes) = (after, Vec::new());
    while hashes.last().map(String::as_str) != Some(last_tx) {
        let e = c.recv_event(until);
        assert_eq!(common::seq(&e), prev + 1, "no gap, no duplicate: {e}");
        prev = common::seq(&e);
        if e["data"]["event"] == "new_transaction" {
            hashes.push(e["data"]["tx_hash"].as_str().unwrap_or_default().into());
        }
    }
    (hashes, prev)
}

#[test]
fn the_new_leader_recovers_what_the_daemon_queued_during_the_failover_and_nothing_twice() {
    const WALLET: &str = "zpubCLUSTERwallet";
    let sim = Sim::start(
        "btc",
        &["--rate", "0", "--block-interval", "0", "--wallets", WALLET],
    );
    let db = TestDb::create();
    cryptoworker::db::Db::migrate(&db.url).expect("migrations");
    db.client()
        .execute(
            "INSERT INTO watched_wallets (coin, xpub) VALUES ('BTC', $1)",
            &[&WALLET],
        )
        .expect("insert watched_wallets");
    let prefix = unique_prefix("recover");
    let _keys = Keys::shared(&prefix);
    let (spool_a, spool_b) = (TempDir::new("recover-a"), TempDir::new("recover-b"));
    let a = node(&sim, &db, &prefix, "node-a", &spool_a);
    wait_until(deadline(15.0), "node-a drained the wallet", || {
        common::daemon::rpc_logged(&sim, "get_updates", WALLET)
    });
    let b = node(&sim, &db, &prefix, "node-b", &spool_b);
    wait_until(deadline(15.0), "node-b receiving", || {
        b.get("/ready").status == 200
    });
    let (mut cb, from_b) = star_client(&b);
    let tx = |n: u64| serde_json::json!({"event": "new_transaction", "tx": format!("{n:064x}")});
    let hash = |n: u64| format!("{n:064x}");
    sim.emit(tx(1), Some(WALLET));
    let (before, last) = transactions_through(&mut cb, from_b, &hash(1));
    assert_eq!(before, [hash(1)]);

    drop(a); // SIGKILL; pushed now, only the wallet's get_updates queue keeps them
    for n in 2..=4 {
        sim.emit(tx(n), Some(WALLET));
    }
    wait_until(deadline(FAILOVER_LIMIT_S), "node-b leads", || {
        role(&b) == "leader"
    });
    wait_until(deadline(10.0), "node-b drained the wallet again", || {
        sim.rpc_log()
            .iter()
            .filter(|c| c["method"] == "get_updates" && c["wallet"] == WALLET)
            .count()
            >= 2
    });
    sim.emit(tx(5), Some(WALLET));
    let (after, _) = transactions_through(&mut cb, last, &hash(5));
    assert_eq!(
        after,
        [hash(2), hash(3), hash(4), hash(5)],
        "the queued ones once, in order, not the one delivered before the failover"
    );
    assert_eq!(db.count("events WHERE event = 'new_transaction'"), 5);
}

#[test]
fn a_leader_that_loses_its_database_session_follows_and_its_clients_go_on() {
    let Pair {
        sim,
        db,
        a,
        mut b,
        _keys,
        _spools,
    } = leader_then_follower("session");
    let (mut ca, from_a) = star_client(&a);
    let (mut cb, from_b) = star_client(&b);
    let (_, last_a) = read_indexes(&mut ca, from_a, &emit(&sim, 0..5));
    let (_, last_b) = read_indexes(&mut cb, from_b, &(0..5).collect());

    let cut = Instant::now();
    cut_elector_session(&db, "node-a");
    wait_until(deadline(FAILOVER_LIMIT_S), "node-b leads", || {
        role(&b) == "leader"
    });
    println!(
        "failover: node-b leads {:?} after the session cut",
        cut.elapsed()
    );
    wait_until(deadline(5.0), "node-a follows without daemon links", || {
        let st = a.status();
        st["cluster"]["role"] == "follower" && st["daemons"] == serde_json::json!({})
    });
    b.wait_connected(&["btc"], deadline(10.0));
    let more = emit(&sim, 5..15);
    let (_, end_a) = read_indexes(&mut ca, last_a, &more);
    let (_, end_b) = read_indexes(&mut cb, last_b, &more);
    assert_eq!(end_a, end_b, "one sequence on both nodes after the switch");
    wait_until(deadline(5.0), "node-a names node-b the leader", || {
        a.status()["cluster"]["leader"] == "node-b"
    });
}

/// What an old leader leaves when it dies between its stream append and its database commit:
/// seqs in the stream that the event log lacks. The new leader stores them (in order, before
/// anything it sequences) and does not publish them again: its clients get each once, and it
/// never appends them twice (Redis would refuse that seq and the node would step down).
#[test]
fn a_new_leader_stores_what_the_old_one_appended_but_did_not_store_and_sends_it_once() {
    let sim = Sim::start("btc", QUIET);
    let db = TestDb::create();
    let prefix = unique_prefix("takeover");
    let _keys = Keys::shared(&prefix);
    let spools = (TempDir::new("takeover-a"), TempDir::new("takeover-b"));
    let mut a = node(&sim, &db, &prefix, "node-a", &spools.0);
    wait_until(deadline(15.0), "node-a leads", || role(&a) == "leader");
    a.wait_caught_up(&["btc"], deadline(15.0));
    let (mut ca, from) = star_client(&a);
    let (events, last) = read_indexes(&mut ca, from, &emit(&sim, 0..4));
    wait_until(deadline(10.0), "node-a stored what it sent", || {
        db.event_rows().last().map(|r| r.seq) == Some(last as i64)
    });
    let epoch = db.event_rows()[0].epoch.clone();
    drop(ca);
    drop(a); // SIGKILL

    let template = events
        .iter()
        .find(|e| e["data"]["event"] == "new_transaction")
        .map(|e| e["data"].clone())
        .expect("a new_transaction among the first events");
    let orphans: Vec<(u64, Value)> = (1..=3)
        .map(|k| {
            let mut data = template.clone();
            data["tx_hash"] = tx_hash(100 + k).into();
            (last + k, data)
        })
        .collect();
    let mut redis = common::cluster::connect(SHARED_REDIS);
    let stream = format!("{prefix}events");
    for (seq, data) in &orphans {
        let id = format!("{seq}-0");
        let text = data.to_string();
        let args = [
            "XADD",
            &stream,
            &id,
            "e",
            &epoch,
            "t",
            "1765000000.000",
            "d",
            &text,
        ];
        redis.command(&args).expect("XADD");
    }

    let mut b = node(&sim, &db, &prefix, "node-b", &spools.1);
    wait_until(deadline(15.0), "node-b leads", || role(&b) == "leader");
    b.wait_caught_up(&["btc"], deadline(15.0));
    wait_until(deadline(10.0), "node-b stored the orphaned seqs", || {
        db.event_rows()
            .iter()
            .filter(|r| r.seq > last as i64)
            .count()
            >= orphans.len()
    });
    let rows = db.event_rows();
    for (seq, data) in &orphans {
        let row = rows.iter().find(|r| r.seq == *seq as i64).expect("stored");
        assert_eq!((&row.epoch, &row.payload), (&epoch, data), "seq {seq}");
    }

    let mut cb = b.ws();
    let resume = json!({"events": ["*"], "since": last, "epoch": epoch});
    assert_eq!(cb.subscribe(resume, deadline(5.0))["resumed"], true);
    let want: BTreeSet<u64> = (101..=103).chain(emit(&sim, 4..6)).collect();
    let (got, end) = read_indexes(&mut cb, last, &want);
    for (seq, data) in &orphans {
        let e = got.iter().find(|e| &e["data"] == data).expect("delivered");
        assert_eq!(common::seq(e), *seq, "under the seq the old leader gave it");
    }
    assert_eq!(role(&b), "leader", "no append was refused (no step-down)");
    assert_eq!(b.metric("cryptoworker_db_fenced_total", &[]), 0.0);
    let ids: Vec<u64> = cryptoworker::cluster::stream::range(&mut redis, &stream, last, 1000)
        .expect("XRANGE")
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(
        ids,
        (last + 1..=end).collect::<Vec<_>>(),
        "each seq once in the stream"
    );
}

/// A leader replaced while Redis is away holds entries it could not append; once it follows, it
/// must drop them (the new leader owns the stream, and the event log has them). Before, it
/// appended them as soon as Redis came back empty (claiming the absent leader key), and the new
/// leader's next append was refused as deposed or fenced.
#[test]
fn a_leader_replaced_during_a_redis_outage_appends_nothing_when_redis_returns() {
    let RedisPair {
        sim,
        db,
        mut redis,
        a,
        mut b,
        mut ca,
        mut cb,
        last_a,
        last_b,
        _spools,
    } = pair_on_private_redis("stale");
    let url = redis.url();

    redis.kill();
    wait_until(deadline(10.0), "node-a sees Redis gone", || {
        a.metric("cryptoworker_cluster_redis_connected", &[]) == 0.0
    });
    let during = emit(&sim, 5..10);
    let (_, last_a) = read_indexes(&mut ca, last_a, &during);
    cut_elector_session(&db, "node-a");
    wait_until(deadline(15.0), "node-b leads", || role(&b) == "leader");
    wait_until(deadline(5.0), "node-a follows", || role(&a) == "follower");
    let forgot = a
        .proc
        .output
        .wait_for("entries not appended are dropped", deadline(10.0));
    assert!(
        forgot.is_some(),
        "node-a dropped what it held when it stopped leading"
    );

    redis.restart();
    b.wait_connected(&["btc"], deadline(10.0));
    let after = emit(&sim, 10..15);
    let both: BTreeSet<u64> = during.union(&after).copied().collect();
    let (_, end_b) = read_indexes(&mut cb, last_b, &both);
    let (_, end_a) = read_indexes(&mut ca, last_a, &after);
    assert_eq!(end_a, end_b, "one sequence on both nodes");
    assert_eq!(role(&b), "leader", "node-b was never deposed or fenced");
    assert_eq!(b.status()["cluster"]["leader"], "node-b");
    let mut conn = common::cluster::connect(&url);
    let first = cryptoworker::cluster::stream::first_seq(&mut conn, "cw:events").expect("XRANGE");
    assert!(
        first.is_some_and(|seq| seq > last_a),
        "the stream holds only node-b's entries (first {first:?}, node-a led up to {last_a})"
    );
}
