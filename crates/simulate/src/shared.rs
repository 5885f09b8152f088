//! State shared by the simulator's threads: the chain, the socket hub, the fault switches,
//! the RPC log and counters, and the stop flag with the connection threads to join.
//!
//! Invariants: chain pushes are recorded in the `get_updates` queues and broadcast while the
//! chain lock is held, so every socket and queue sees one global order (lock order: chain, then
//! hub); every push but `sim_emit_raw` text is recorded, sockets or not; the RPC log is bounded
//! ([`MAX_LOG`], oldest dropped); no lock is held across socket I/O.

use super::chain::{Chain, Emit};
use super::faults::{FaultCell, Faults};
use super::hub::{Frame, Hub};
use super::util::unix_secs;
use super::{RpcCall, SimConfig};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// RPC calls remembered for `sim_rpc_log`.
const MAX_LOG: usize = 10_000;
/// Longest single sleep of a thread that must notice `stop`.
const TICK: Duration = Duration::from_millis(20);

/// Counters reported by `sim_state`.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub rpc_calls: AtomicU64,
    pub frames_sent: AtomicU64,
    pub bench_events: AtomicU64,
    pub connections: AtomicU64,
}

/// Everything the threads share.
pub(crate) struct Shared {
    pub cfg: SimConfig,
    pub chain: Mutex<Chain>,
    pub hub: Hub,
    pub faults: FaultCell,
    pub stats: Stats,
    /// Open TCP connections (bounded by the accept loop).
    pub active: AtomicUsize,
    stopping: AtomicBool,
    rpc_log: Mutex<VecDeque<RpcCall>>,
    conns: Mutex<Vec<JoinHandle<()>>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn new(cfg: SimConfig) -> Shared {
        let mut chain = Chain::new(
            &cfg.coin,
            cfg.family,
            &cfg.wallets,
            cfg.preload_wallets,
            cfg.seed,
        );
        chain.polling.set_cap(cfg.polling_cap);
        let shared = Shared {
            chain: Mutex::new(chain),
            hub: Hub::default(),
            faults: FaultCell::new(&cfg.faults),
            stats: Stats::default(),
            active: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            rpc_log: Mutex::new(VecDeque::new()),
            conns: Mutex::new(Vec::new()),
            cfg,
        };
        if shared.cfg.faults.reset {
            shared.chain().reset();
        }
        shared
    }

    pub(crate) fn chain(&self) -> MutexGuard<'_, Chain> {
        lock(&self.chain)
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    pub(crate) fn request_stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Sleeps `d` in short ticks; returns false (early) once stopping.
    pub(crate) fn sleep(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        loop {
            if self.is_stopping() {
                return false;
            }
            let now = Instant::now();
            if now >= end {
                return true;
            }
            std::thread::sleep((end - now).min(TICK));
        }
    }

    /// Remembers a connection thread for `join_all`, forgetting finished ones.
    pub(crate) fn track(&self, handle: JoinHandle<()>) {
        let mut conns = lock(&self.conns);
        conns.retain(|h| !h.is_finished());
        conns.push(handle);
    }

    /// Joins every connection thread (call after `request_stop`).
    pub(crate) fn join_all(&self) {
        let handles: Vec<JoinHandle<()>> = lock(&self.conns).drain(..).collect();
        for h in handles {
            if h.join().is_err() {
                log::error!("[SIMULATE] a connection thread panicked");
            }
        }
    }

    /// Logs one non-admin RPC call.
    pub(crate) fn record_call(&self, method: &str, wallet: Option<&str>) {
        self.stats.rpc_calls.fetch_add(1, Ordering::Relaxed);
        let mut log = lock(&self.rpc_log);
        if log.len() >= MAX_LOG {
            log.pop_front();
        }
        log.push_back(RpcCall {
            method: method.to_string(),
            wallet: wallet.map(str::to_string),
        });
    }

    pub(crate) fn rpc_log(&self) -> Vec<RpcCall> {
        lock(&self.rpc_log).iter().cloned().collect()
    }

    /// Replaces the fault switches; `reset` forgets every loaded wallet now.
    pub(crate) fn set_faults(&self, f: &Faults) {
        self.faults.store(f);
        if f.reset {
            self.chain().reset();
            log::info!("[SIMULATE] reset: loaded wallets forgotten");
        }
    }

    /// Records `emits` in the `get_updates` queues and broadcasts them (chain lock held).
    fn publish(&self, chain: &mut Chain, emits: &[Emit]) {
        let frames: Vec<Frame> = emits.iter().map(|e| Frame::emit(e, &chain.coin)).collect();
        chain.polling.record_frames(&frames);
        self.hub.broadcast(&frames);
    }

    /// Mines one block now and pushes its events; returns the new height.
    pub(crate) fn mine(&self) -> u64 {
        let mut chain = self.chain();
        let emits = chain.mine();
        self.publish(&mut chain, &emits);
        chain.height
    }

    /// Starts one payment flow and pushes its immediate events.
    pub(crate) fn pay_step(&self) {
        let mut chain = self.chain();
        let emits = chain.pay_step(unix_secs());
        self.publish(&mut chain, &emits);
    }

    /// Pushes one update as given, whatever the wallet's load state (`sim_emit`); like any
    /// push it is queued for `get_updates` (every loaded wallet if global, else that wallet if
    /// loaded).
    pub(crate) fn emit(&self, update: &Value, wallet: Option<&str>) {
        let mut chain = self.chain();
        let frame = Frame::update(update, wallet, &chain.coin);
        chain.polling.record(wallet, &frame.text);
        self.hub.broadcast(&[frame]);
    }

    /// Pushes a raw text frame to every socket (`sim_emit_raw`); not an update, so not queued.
    pub(crate) fn emit_raw(&self, text: String) {
        let _order = self.chain();
        self.hub.broadcast(&[Frame {
            wallet: None,
            text: text.into(),
        }]);
    }

    /// The `sim_state` answer.
    pub(crate) fn state_json(&self) -> Value {
        let chain = self.chain();
        let (requests, txs) = chain.counts();
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        json!({
            "coin": chain.coin,
            "height": chain.height,
            "loaded_wallets": chain.loaded(),
            "polling": chain.polling.to_json(),
            "wallets": chain.candidates(),
            "requests": requests,
            "transactions": txs,
            "faults": self.faults.load().to_json(),
            "counters": {
                "ws_clients": self.hub.clients(),
                "connections": n(&self.stats.connections),
                "rpc_calls": n(&self.stats.rpc_calls),
                "frames_queued": n(&self.hub.queued_total),
                "frames_dropped": n(&self.hub.dropped),
                "frames_sent": n(&self.stats.frames_sent),
                "bench_events": n(&self.stats.bench_events),
            },
        })
    }
}
