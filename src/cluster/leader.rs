//! Leader election: a thread that owns one PostgreSQL connection and competes for a session
//! advisory lock with `pg_try_advisory_lock` every [`RETRY`]. The holder is the leader; losing the
//! session (crash, `pg_terminate_backend`, network) loses the lock and so the leadership.
//!
//! On winning, the elector bumps the fencing term in `cluster_term` in its own session (so a stale
//! leader's writers store nothing from then on, docs/cluster.md, "Fencing"), claims the leader key
//! in Redis unconditionally (so a stale leader's appends are refused from then on, see
//! [`super::stream`]), waits [`GRACE`] (time for a stale leader's own elector to notice its
//! loss), reads the epoch and the last stored seq, then reports [`Role::Leader`] with the term. While leading it checks its session every [`RETRY`] and renews the leader key
//! (TTL [`LEASE`]); while following it reads the leader key for display.
//!
//! A node that lost the leadership pauses [`STEP_DOWN_PAUSE`] before competing again.
//!
//! Invariants: [`Role::Leader`] is reported only while this thread's session holds the lock (as
//! of its last check); every role change is reported once, in order; the Redis lease is
//! best-effort and never decides the role.

use super::redis::{Connection, RedisError, RedisUrl};
use super::resp::Reply;
use super::{ClusterConfig, ClusterMessage, Outbox};
use crate::db::DbError;
use crate::util::backoff::Backoff;
use postgres::{Client, NoTls};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Interval of lock attempts (follower) and session checks (leader).
pub const RETRY: Duration = Duration::from_millis(500);
/// Wait between winning the lock and acting as leader.
pub const GRACE: Duration = Duration::from_secs(1);
/// TTL of the leader key; renewed every [`RETRY`].
pub const LEASE: Duration = Duration::from_secs(5);
/// Pause of a node that just lost the leadership before it competes again, so that a follower
/// (trying every [`RETRY`]) takes over instead of the node whose session was just cut.
pub const STEP_DOWN_PAUSE: Duration = Duration::from_secs(2);

/// The node's role, as the elector sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// This node holds the lock. `epoch` is the database's current epoch (`None` when it has none
    /// yet), `last_stored` the highest seq of that epoch in the event log (0 when none).
    Leader {
        epoch: Option<String>,
        last_stored: u64,
        /// The fencing term this leadership bumped `cluster_term` to (docs/cluster.md,
        /// "Fencing"): the node's writers write only while the database still holds it.
        term: u64,
    },
    /// Another node (or nobody) holds the lock.
    Follower,
}

/// Renews the leader key only while it names this node (or is absent).
const RENEW_SCRIPT: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"#;

/// The elector thread's state.
pub struct Elector {
    pg: postgres::Config,
    lock_key: i64,
    node: String,
    redis: RedisUrl,
    leader_key: String,
    redis_conn: Option<Connection>,
    shown_leader: Option<Option<String>>,
    /// Set by [`super::ClusterHandle::step_down`]: give the lock up now.
    step_down: Arc<AtomicBool>,
}

impl Elector {
    /// Parses the database URL; fails only on a bad URL.
    pub fn new(
        cfg: &ClusterConfig,
        database_url: &str,
        lock_key: i64,
        step_down: Arc<AtomicBool>,
    ) -> Result<Elector, DbError> {
        let mut pg: postgres::Config = database_url.parse().map_err(|e| {
            DbError::Config(format!(
                "DATABASE_URL is not a valid connection string: {e}"
            ))
        })?;
        pg.application_name(&format!("cryptoworker-elector {}", cfg.node_id));
        pg.connect_timeout(Duration::from_secs(3));
        pg.tcp_user_timeout(Duration::from_secs(3));
        pg.keepalives(true);
        pg.keepalives_idle(Duration::from_secs(5));
        Ok(Elector {
            pg,
            lock_key,
            node: cfg.node_id.clone(),
            redis: cfg.redis.clone(),
            leader_key: cfg.leader_key(),
            redis_conn: None,
            shown_leader: None,
            step_down,
        })
    }

    /// The thread body: runs until `out` says stop. Dropping the client ends the session, which
    /// releases the lock.
    pub(crate) fn run(mut self, out: &Outbox) {
        let mut backoff = Backoff::new(RETRY, Duration::from_secs(5));
        let mut failing = false;
        if !out.send(ClusterMessage::Role(Role::Follower)) {
            return;
        }
        while !out.stopping() {
            let mut client = match self.pg.connect(NoTls) {
                Ok(c) => c,
                Err(e) => {
                    if !failing {
                        log::warn!("[CLUSTER] Elector cannot reach PostgreSQL ({e}); retrying");
                        failing = true;
                    }
                    out.nap(backoff.next_delay());
                    continue;
                }
            };
            if failing {
                log::info!("[CLUSTER] Elector reached PostgreSQL again");
                failing = false;
            }
            backoff.reset();
            if self.follow(&mut client, out) && self.lead(&mut client, out) {
                log::warn!("[CLUSTER] Node {} lost the leadership", self.node);
                if !out.send(ClusterMessage::Role(Role::Follower)) {
                    return;
                }
                drop(client);
                out.nap(STEP_DOWN_PAUSE);
            }
        }
        self.release();
    }

    /// Tries the lock every [`RETRY`]; `true` once it is held, `false` on session loss or stop.
    fn follow(&mut self, client: &mut Client, out: &Outbox) -> bool {
        self.step_down.store(false, Ordering::Relaxed);
        while !out.stopping() {
            match client.query_one("SELECT pg_try_advisory_lock($1)", &[&self.lock_key]) {
                Ok(row) if row.get::<_, bool>(0) => return true,
                Ok(_) => {
                    self.show_leader(out);
                    out.nap(RETRY);
                }
                Err(e) => {
                    log::warn!("[CLUSTER] Elector lost its PostgreSQL session ({e})");
                    return false;
                }
            }
        }
        false
    }

    /// Leads while the session lives; `true` when the leadership was lost (not on stop).
    fn lead(&mut self, client: &mut Client, out: &Outbox) -> bool {
        let term = match crate::db::bump_term(client) {
            Ok(term) => term,
            Err(e) => {
                // Without a term the writers could not be fenced: give the lock back, try later.
                log::warn!("[CLUSTER] Elector cannot bump the fencing term ({e}); not leading");
                out.nap(RETRY);
                return false;
            }
        };
        self.claim();
        if !out.nap(GRACE) {
            return false;
        }
        let (epoch, last_stored) = match read_position(client) {
            Ok(position) => position,
            Err(e) => {
                // Leading from a wrong "last stored" would reuse seqs: give the lock back.
                log::warn!(
                    "[CLUSTER] Elector cannot read where the event log ends ({e}); not leading"
                );
                out.nap(RETRY);
                return false;
            }
        };
        log::info!(
            "[CLUSTER] Node {} leads (term {term}, epoch {}, last stored seq {last_stored})",
            self.node,
            epoch.as_deref().unwrap_or("none yet")
        );
        let role = Role::Leader {
            epoch,
            last_stored,
            term,
        };
        if !out.send(ClusterMessage::Role(role)) {
            return false;
        }
        self.show(out, Some(self.node.clone()));
        while out.nap(RETRY) {
            if self.step_down.swap(false, Ordering::Relaxed) {
                log::warn!(
                    "[CLUSTER] Node {} gives up the leadership (fenced)",
                    self.node
                );
                return true;
            }
            if let Err(e) = client.is_valid(Duration::from_secs(2)) {
                log::warn!("[CLUSTER] Leader lost its PostgreSQL session ({e})");
                return true;
            }
            self.renew();
        }
        false
    }

    /// Sets the leader key to this node, whoever it named.
    fn claim(&mut self) {
        let (key, node, ttl) = (
            self.leader_key.clone(),
            self.node.clone(),
            LEASE.as_millis().to_string(),
        );
        if let Err(e) = self.redis_command(&["SET", &key, &node, "PX", &ttl]) {
            log::warn!("[CLUSTER] Could not claim the leader key in Redis ({e})");
        }
    }

    /// Renews the lease; when the key names another node (a stale leader re-created it after
    /// Redis lost it), claims it back: this session holds the lock.
    fn renew(&mut self) {
        let (key, node, ttl) = (
            self.leader_key.clone(),
            self.node.clone(),
            LEASE.as_millis().to_string(),
        );
        match self.redis_command(&["EVAL", RENEW_SCRIPT, "1", &key, &node, &ttl]) {
            Ok(Reply::Int(1)) | Err(_) => {}
            Ok(_) => self.claim(),
        }
    }

    /// Reports the leader key's value when it changed (follower view).
    fn show_leader(&mut self, out: &Outbox) {
        let key = self.leader_key.clone();
        if let Ok(reply) = self.redis_command(&["GET", key.as_str()]) {
            self.show(out, reply.text().map(str::to_string));
        }
    }

    fn show(&mut self, out: &Outbox, leader: Option<String>) {
        if self.shown_leader.as_ref() != Some(&leader) {
            self.shown_leader = Some(leader.clone());
            out.send(ClusterMessage::LeaderName(leader));
        }
    }

    /// Deletes the leader key if it still names this node (clean shutdown of a leader).
    fn release(&mut self) {
        let script =
            "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end return 1";
        let key = self.leader_key.clone();
        let node = self.node.clone();
        let _ = self.redis_command(&["EVAL", script, "1", key.as_str(), node.as_str()]);
    }

    fn redis_command(&mut self, args: &[&str]) -> Result<Reply, RedisError> {
        if self.redis_conn.is_none() {
            self.redis_conn = Some(Connection::open(&self.redis)?);
        }
        let conn = self.redis_conn.as_mut().expect("just opened");
        let result = conn.command(args);
        if matches!(result, Err(RedisError::Io(_) | RedisError::Protocol(_))) {
            self.redis_conn = None;
        }
        result
    }
}

/// The database's current epoch and the last seq stored in it; `(None, 0)` when no epoch was
/// stored yet. Any failed query is an error: the caller must not lead on a guess.
fn read_position(client: &mut Client) -> Result<(Option<String>, u64), postgres::Error> {
    let epoch = client
        .query_opt("SELECT epoch FROM worker_state WHERE id = 1", &[])?
        .map(|r| r.get::<_, String>(0));
    let Some(epoch) = epoch else {
        return Ok((None, 0));
    };
    let last = client
        .query_one(
            "SELECT coalesce(max(seq), 0) FROM events WHERE epoch = $1",
            &[&epoch],
        )?
        .get::<_, i64>(0);
    Ok((Some(epoch), last.max(0) as u64))
}
