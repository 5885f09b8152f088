//! `Db::start`: validate, open the spool, make first contact with the database (lock, migrate,
//! read the resume point), then start the threads.
//!
//! Invariant: when `start` returns `Ok`, every thread is running and owns what it needs; when it
//! returns `Err`, no thread keeps running and the spool lock is released.

use super::conn::{self, Shared, store_epoch};
use super::dispatch::Dispatcher;
use super::error::{DbError, describe, is_fatal_connect};
use super::monitor::{Listener, Supervisor};
use super::reader::Reader;
use super::spool::{Spool, SpoolScan};
use super::writer::Writer;
use super::{
    DbHandle, DbMessage, DbStats, INTAKE_CAPACITY, MESSAGE_CAPACITY, READER_CAPACITY, Resume,
    migrate,
};
use crate::config::DbConfig;
use crate::event::new_epoch;
use crossbeam_channel::{Receiver, bounded};
use postgres::Client;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Largest writer pool accepted.
const MAX_POOL: usize = 64;
/// Largest batch accepted (rows per transaction).
const MAX_BATCH: usize = 50_000;

/// See [`super::Db::start`].
pub(super) fn start(
    cfg: &DbConfig,
    wake: Arc<dyn Fn() + Send + Sync>,
    connect_timeout: Duration,
    cluster: bool,
) -> Result<(DbHandle, Receiver<DbMessage>, Resume), DbError> {
    validate(cfg)?;
    let pg = conn::pg_config(&cfg.url)?;
    let (spool, scan) = Spool::open(&cfg.spool_dir)?;
    if scan.lines > 0 {
        log::info!("[DB] Spool holds {} events from a previous run", scan.lines);
    }
    let (client, resume) = first_contact(&pg, connect_timeout, &scan, cluster)?;
    let stats = Arc::new(DbStats::default());
    stats.enabled.store(true, Ordering::Relaxed);
    stats.connected.store(client.is_some(), Ordering::Release);
    let (msg_tx, msg_rx) = bounded(MESSAGE_CAPACITY);
    let mut shared = Shared::new(stats, resume.epoch.as_str().into(), msg_tx.clone(), wake);
    if cluster {
        shared.lead_term = Some(AtomicU64::new(0));
    }
    let shared = Arc::new(shared);
    shared.durable_seq.store(resume.last_seq, Ordering::Release);
    shared.ingesting.store(!cluster, Ordering::Release);
    if client.is_some() {
        shared.tell(DbMessage::Connected(true));
    }
    let handle =
        spawn_all(cfg, pg, client, spool, shared.clone(), msg_tx, cluster).inspect_err(|_| {
            shared.set_deadline(std::time::Instant::now());
            shared.stop.store(true, Ordering::Release);
            shared.closing.store(true, Ordering::Release);
        })?;
    log::info!(
        "[DB] Persistence started: epoch {}, last seq {}, {} writers, batches of {}",
        resume.epoch,
        resume.last_seq,
        cfg.pool_size,
        cfg.batch_size
    );
    Ok((handle, msg_rx, resume))
}

fn validate(cfg: &DbConfig) -> Result<(), DbError> {
    if cfg.pool_size == 0 || cfg.pool_size > MAX_POOL {
        return Err(DbError::Config(format!(
            "DB_POOL_SIZE must be between 1 and {MAX_POOL}, got {}",
            cfg.pool_size
        )));
    }
    if cfg.batch_size == 0 || cfg.batch_size > MAX_BATCH {
        return Err(DbError::Config(format!(
            "DB_BATCH_SIZE must be between 1 and {MAX_BATCH}, got {}",
            cfg.batch_size
        )));
    }
    Ok(())
}

/// Connects once; reachable: lock (not in cluster mode: the elector holds the lock there),
/// migrate, read the resume point.
fn first_contact(
    pg: &postgres::Config,
    connect_timeout: Duration,
    scan: &SpoolScan,
    cluster: bool,
) -> Result<(Option<Client>, Resume), DbError> {
    let mut first = pg.clone();
    first.connect_timeout(connect_timeout.max(Duration::from_millis(100)));
    match conn::connect(&first) {
        Ok(mut c) => {
            if !cluster {
                conn::lock_or_fail(&mut c)?;
            }
            migrate::run(&mut c)?;
            let resume = read_resume(&mut c, scan, cluster).map_err(|e| {
                DbError::Query(format!("reading the resume point: {}", describe(&e)))
            })?;
            Ok((Some(c), resume))
        }
        Err(e) if is_fatal_connect(&e) => Err(DbError::Connect(format!(
            "{} (check DATABASE_URL, or DB_HOST/DB_PORT/DB_USER/DB_PASS/POSTGRES_DB)",
            describe(&e)
        ))),
        Err(e) => {
            log::warn!(
                "[DB] PostgreSQL unreachable at start ({}): starting with a new epoch; events \
                 spool until it is reachable",
                describe(&e)
            );
            let resume = Resume {
                epoch: new_epoch(),
                last_seq: 0,
                tips: scan.tips.clone(),
                recent: Vec::new(),
            };
            Ok((None, resume))
        }
    }
}

/// The stored epoch (or a new one, stored), its last seq (database and spool) and the tips.
/// In cluster mode nodes may start together: a new epoch is stored only if none is, and every
/// node reads back the one that won.
fn read_resume(c: &mut Client, scan: &SpoolScan, cluster: bool) -> Result<Resume, postgres::Error> {
    let stored = read_epoch(c)?;
    let epoch = match stored {
        Some(e) => e,
        None if cluster => {
            c.execute(
                "INSERT INTO worker_state (id, epoch) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
                &[&new_epoch()],
            )?;
            read_epoch(c)?.unwrap_or_else(new_epoch)
        }
        None => {
            let e = new_epoch();
            store_epoch(c, &e)?;
            e
        }
    };
    let db_max: Option<i64> = c
        .query_one("SELECT max(seq) FROM events WHERE epoch = $1", &[&epoch])?
        .try_get(0)?;
    let spool_max = scan.max_seq.get(&epoch).copied().unwrap_or(0);
    let last_seq = (db_max.unwrap_or(0).max(0) as u64).max(spool_max);
    let mut tips = scan.tips.clone();
    for r in c.query("SELECT upper(coin), height FROM chain_tips", &[])? {
        let (coin, h): (String, i64) = (r.try_get(0)?, r.try_get(1)?);
        let tip = tips.entry(coin).or_default();
        *tip = (*tip).max(h.max(0) as u64);
    }
    Ok(Resume {
        epoch,
        last_seq,
        tips,
        recent: read_recent(c)?,
    })
}

fn read_epoch(c: &mut Client) -> Result<Option<String>, postgres::Error> {
    match c.query_opt("SELECT epoch FROM worker_state WHERE id = 1", &[])? {
        Some(r) => r.try_get(0),
        None => Ok(None),
    }
}

/// The identities (name, coin, wallet and the fields de-duplication compares) of the newest
/// [`super::RECENT_IDENTITIES`] events that can be duplicated, newest first.
fn read_recent(c: &mut Client) -> Result<Vec<crate::event::Event>, postgres::Error> {
    const FIELDS: [&str; 5] = ["tx_hash", "address", "status", "sent_amount", "height"];
    let rows = c.query(
        "SELECT coin, event, wallet, (payload->'tx_hash')::text, (payload->'address')::text,
                (payload->'status')::text, (payload->'sent_amount')::text,
                (payload->'height')::text
         FROM events
         WHERE event IN ('new_transaction', 'new_payment', 'verified_tx', 'new_block')
         ORDER BY epoch DESC, seq DESC LIMIT $1",
        &[&super::RECENT_IDENTITIES],
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let (coin, name, wallet): (String, String, Option<String>) =
            (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
        let mut ev = crate::event::Event::new(coin.into(), &name, wallet);
        for (i, field) in FIELDS.iter().enumerate() {
            let text: Option<String> = r.try_get(3 + i)?;
            if let Some(v) = text.and_then(|t| serde_json::from_str(&t).ok()) {
                ev = ev.with(field, v);
            }
        }
        out.push(ev);
    }
    Ok(out)
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, DbError> {
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(f)
        .map_err(|e| DbError::Thread(format!("cannot start {name}: {e}")))
}

fn spawn_all(
    cfg: &DbConfig,
    pg: postgres::Config,
    client: Option<Client>,
    spool: Spool,
    shared: Arc<Shared>,
    messages: crossbeam_channel::Sender<DbMessage>,
    cluster: bool,
) -> Result<DbHandle, DbError> {
    let (intake_tx, intake_rx) = bounded(INTAKE_CAPACITY);
    let (writer_tx, writer_rx) = bounded((cfg.pool_size * cfg.batch_size * 2).clamp(1024, 65_536));
    let (feedback_tx, feedback_rx) = bounded(4096);
    let (live_tx, live_rx) = bounded((cfg.batch_size * 4).clamp(1024, 65_536));
    let (reader_tx, reader_rx) = bounded(READER_CAPACITY);
    let mut others = Vec::new();
    let sup = Supervisor {
        pg: pg.clone(),
        shared: shared.clone(),
        client,
        cluster,
    };
    others.push(spawn("cw-db-supervisor".into(), move || sup.run())?);
    let lis = Listener {
        pg: pg.clone(),
        shared: shared.clone(),
    };
    others.push(spawn("cw-db-listener".into(), move || lis.run())?);
    let rd = Reader::new(pg.clone(), reader_rx, shared.clone());
    others.push(spawn("cw-db-reader".into(), move || rd.run())?);
    for id in 0..cfg.pool_size {
        let w = Writer {
            id,
            pg: pg.clone(),
            jobs: writer_rx.clone(),
            live: (id == 0).then(|| live_rx.clone()),
            feedback: feedback_tx.clone(),
            shared: shared.clone(),
            batch_size: cfg.batch_size,
        };
        others.push(spawn(format!("cw-db-writer-{id}"), move || w.run())?);
    }
    drop(feedback_tx);
    let d = Dispatcher::new(
        intake_rx,
        writer_tx,
        writer_rx,
        (live_tx, live_rx),
        feedback_rx,
        spool,
        shared.clone(),
    );
    let dispatcher = spawn("cw-db-dispatch".into(), move || d.run())?;
    Ok(DbHandle {
        intake: Some(intake_tx),
        reader: Some(reader_tx),
        messages,
        shared,
        dropping: AtomicBool::new(false),
        dispatcher: Some(dispatcher),
        others,
    })
}
