//! Helpers of the cluster tests: unique Redis key prefixes on the machine's Redis (6379), a
//! private `redis-server` that a test may kill and restart, and [`Node`], one running
//! `ClusterHandle` whose messages a test waits for.
//!
//! Invariants: tests FAIL, never skip, when Redis or PostgreSQL is unreachable; every key a test
//! writes carries its own prefix and is deleted on drop; waits poll an observable condition with a
//! deadline, never a fixed sleep.
#![allow(dead_code)]

use crossbeam_channel::Receiver;
use cryptoworker::cluster::redis::Connection;
use cryptoworker::cluster::{ClusterConfig, ClusterHandle, ClusterMessage, RedisUrl, StartOptions};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The machine's Redis.
pub const SHARED_REDIS: &str = "redis://127.0.0.1:6379/0";

/// A key prefix no other test (or engineer) uses.
pub fn unique_prefix(name: &str) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("cwtest:{name}:{}:{t}:{n}:", std::process::id())
}

/// A connection to `url`, or a panic saying Redis is required.
pub fn connect(url: &str) -> Connection {
    let parsed = RedisUrl::parse(url).expect("test URL");
    Connection::open(&parsed)
        .unwrap_or_else(|e| panic!("Redis is required for this test ({url}): {e}"))
}

/// The cluster settings of one test node.
pub fn config(url: &str, prefix: &str, node: &str, maxlen: u64) -> ClusterConfig {
    ClusterConfig {
        redis: RedisUrl::parse(url).expect("test URL"),
        node_id: node.into(),
        key_prefix: prefix.into(),
        stream_maxlen: maxlen,
    }
}

/// Deletes every key under a prefix when dropped.
pub struct Keys {
    pub url: String,
    pub prefix: String,
}

impl Keys {
    /// The keys of `prefix` on the machine's shared Redis.
    pub fn shared(prefix: &str) -> Keys {
        Keys {
            url: SHARED_REDIS.into(),
            prefix: prefix.into(),
        }
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        let Ok(url) = RedisUrl::parse(&self.url) else {
            return;
        };
        let Ok(mut c) = Connection::open(&url) else {
            return;
        };
        for suffix in ["events", "leader"] {
            let _ = c.command(&["DEL", &format!("{}{suffix}", self.prefix)]);
        }
    }
}

/// Waits until `ok` holds, polling every 20 ms, or panics after `deadline`.
pub fn wait_until(what: &str, deadline: Duration, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !ok() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One running cluster node and every message it sent so far.
pub struct Node {
    pub handle: Option<ClusterHandle>,
    rx: Receiver<ClusterMessage>,
    pub seen: Vec<ClusterMessage>,
}

impl Node {
    pub fn start(cfg: &ClusterConfig, database_url: &str, lock_key: i64, read_after: u64) -> Node {
        let opts = StartOptions {
            database_url: database_url.into(),
            lock_key,
            read_after,
        };
        let (handle, rx) =
            ClusterHandle::start(cfg, opts, Arc::new(|| {})).expect("cluster threads start");
        Node {
            handle: Some(handle),
            rx,
            seen: Vec::new(),
        }
    }

    pub fn handle(&self) -> &ClusterHandle {
        self.handle.as_ref().expect("running")
    }

    /// Waits for the first message (after those already taken) that `pick` maps to a value.
    pub fn wait_for<T>(
        &mut self,
        what: &str,
        deadline: Duration,
        mut pick: impl FnMut(&ClusterMessage) -> Option<T>,
    ) -> T {
        let end = Instant::now() + deadline;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let msg = self.rx.recv_timeout(left).unwrap_or_else(|_| {
                panic!("timed out waiting for {what}; seen: {:?}", self.brief())
            });
            let hit = pick(&msg);
            self.seen.push(msg);
            if let Some(v) = hit {
                return v;
            }
        }
    }

    /// Takes every message waiting now.
    pub fn drain(&mut self) {
        while let Ok(m) = self.rx.try_recv() {
            self.seen.push(m);
        }
    }

    /// The seqs of every `Entries` message seen, in order.
    pub fn entry_seqs(&self) -> Vec<u64> {
        self.seen
            .iter()
            .filter_map(|m| match m {
                ClusterMessage::Entries(e) => Some(e.iter().map(|e| e.seq)),
                _ => None,
            })
            .flatten()
            .collect()
    }

    fn brief(&self) -> Vec<String> {
        self.seen
            .iter()
            .map(|m| match m {
                ClusterMessage::Entries(e) => {
                    format!("Entries({:?})", e.iter().map(|e| e.seq).collect::<Vec<_>>())
                }
                other => format!("{other:?}").chars().take(120).collect(),
            })
            .collect()
    }

    pub fn stop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.stop();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A private `redis-server` (no persistence) that a test may kill and restart on the same port.
pub struct PrivateRedis {
    pub port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    pub fn start() -> PrivateRedis {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let mut r = PrivateRedis { port, child: None };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts the server (again) and waits until it answers.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("redis-server is required for this test: {e}"));
        self.child = Some(child);
        let url = RedisUrl::parse(&self.url()).expect("url");
        wait_until("the private redis-server", Duration::from_secs(10), || {
            Connection::open(&url)
                .and_then(|mut c| c.command(&["PING"]))
                .is_ok()
        });
    }

    /// Kills the server (SIGKILL: it loses everything) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
