//! A simulated Bitcart coin daemon (the protocol of the repository's docs/daemon.md), used by
//! `cryptoworker demo`, the integration tests and the benchmarks. It runs as its own process
//! (`cryptoworker simulate`) or embedded in another program ([`SimHandle::start`]).
//!
//! Shape: plain blocking std sockets, one accept thread, one thread per TCP connection (HTTP/1.1
//! keep-alive; after a `/ws` upgrade the same thread runs the WebSocket session), and one
//! generator thread producing payment flows and blocks (or, with `bench`, an open-loop stream
//! of `new_transaction` pushes). One port serves `POST /` (JSON-RPC), `GET /ws` (events) and
//! `GET /spec`, all behind HTTP Basic auth; every answer is HTTP 200 JSON, errors included.
//!
//! Invariants:
//! - wallet events go out only for wallets some RPC named since start (or `preload_wallets`);
//! - each loaded wallet keeps its last `polling_cap` pushed updates (global ones included),
//!   sockets or not, and the `get_updates` RPC returns and clears them;
//! - one update per frame in `{"updates":[..],"wallet":..,"currency":..}`; nothing on connect,
//!   no heartbeats, pings answered, `{"xpub":key}` narrows a socket, 1001 on stop;
//! - every queue and store is bounded; bad input gets an error answer, never a panic;
//! - every thread notices [`SimHandle::stop`] within ~50 ms and is joined.
//!
//! Admin methods for tests in another process share the JSON-RPC endpoint: `sim_emit`,
//! `sim_emit_raw`, `sim_set_fault`, `sim_rpc_log`, `sim_set_request`, `sim_state`, `sim_mine`,
//! `sim_pay` (start one payment flow now).
//! They take `params` verbatim (no keyword/`xpub` extraction) and never load wallets.

mod chain;
mod faults;
mod generator;
mod head;
mod http;
mod hub;
mod methods;
mod polling;
mod rpc;
mod shared;
mod spec;
mod util;
mod views;
mod ws;

#[cfg(test)]
mod tests;

pub use faults::{FaultError, Faults};
pub use generator::decode_bench_tx;
pub use polling::MAX_POLLING_CAP;

use cryptoworker_base::coins::Family;
use shared::Shared;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How to run one simulated daemon.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Upper-case symbol, also the envelope's `currency`.
    pub coin: String,
    /// Protocol family: event shapes, RPC method names and error codes.
    pub family: Family,
    /// Bind address.
    pub host: String,
    /// 0 = ephemeral (see [`SimHandle::addr`]).
    pub port: u16,
    /// HTTP Basic login required on every route.
    pub login: String,
    /// HTTP Basic password required on every route.
    pub password: String,
    /// Events per second from payment flows (0 = only blocks); with `bench`, pushes per second.
    pub rate: f64,
    /// Time between blocks (zero = only `sim_mine` / [`SimHandle::mine`]).
    pub block_interval: Duration,
    /// Wallet keys the generator pays into (plus any wallet loaded by RPC).
    pub wallets: Vec<String>,
    /// Mark `wallets` loaded at start, so events flow without any RPC.
    pub preload_wallets: bool,
    /// Updates each loaded wallet keeps for `get_updates` (0 = no queues, at most 100,000).
    pub polling_cap: usize,
    /// Open-loop benchmark stream instead of payment flows.
    pub bench: bool,
    /// Bench events to send (0 = forever).
    pub count: u64,
    /// Wait before the first bench event.
    pub start_delay: Duration,
    /// Faults active from the start.
    pub faults: Faults,
    /// Seeds ids and amounts (same seed, same sequence).
    pub seed: u64,
}

impl SimConfig {
    /// Defaults for `coin`: its family from the coin table (btc for unknown coins), localhost on
    /// an ephemeral port, `electrum`/`electrumz`, 2 events/s, a block every 10 s, 100 updates per
    /// `get_updates` queue, a time seed.
    pub fn new(coin: &str) -> SimConfig {
        let coin = coin.trim().to_ascii_uppercase();
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0x5EED, |d| d.as_nanos() as u64);
        SimConfig {
            family: cryptoworker_base::coins::default_family(&coin).unwrap_or(Family::Btc),
            coin,
            host: "127.0.0.1".into(),
            port: 0,
            login: "electrum".into(),
            password: "electrumz".into(),
            rate: 2.0,
            block_interval: Duration::from_secs(10),
            wallets: Vec::new(),
            preload_wallets: false,
            polling_cap: polling::DEFAULT_POLLING_CAP,
            bench: false,
            count: 0,
            start_delay: Duration::ZERO,
            faults: Faults::default(),
            seed,
        }
    }

    fn validate(&self) -> io::Result<()> {
        let bad = |m: &str| Err(io::Error::new(io::ErrorKind::InvalidInput, m.to_string()));
        if self.coin.is_empty() {
            return bad("coin must not be empty");
        }
        if !self.rate.is_finite() || self.rate < 0.0 {
            return bad("rate must be a finite number >= 0");
        }
        if self.bench && self.rate <= 0.0 {
            return bad("bench mode needs a rate > 0");
        }
        if self.polling_cap > polling::MAX_POLLING_CAP {
            let max = polling::MAX_POLLING_CAP;
            return bad(&format!("polling_cap must be at most {max}"));
        }
        Ok(())
    }
}

/// One JSON-RPC call the daemon received (admin `sim_*` calls excluded).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RpcCall {
    /// The JSON-RPC method name.
    pub method: String,
    /// The wallet key the call named, if any.
    pub wallet: Option<String>,
}

/// A running simulated daemon. Dropping it stops it like [`SimHandle::stop`].
pub struct SimHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name.into()).spawn(f)
}

impl SimHandle {
    /// Binds, spawns the threads and returns at once.
    pub fn start(cfg: SimConfig) -> io::Result<SimHandle> {
        cfg.validate()?;
        let listener = TcpListener::bind((cfg.host.as_str(), cfg.port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(cfg));
        let mut handle = SimHandle {
            addr,
            shared: shared.clone(),
            threads: Vec::new(),
        };
        let s = shared.clone();
        handle.threads.push(spawn("sim-accept", move || {
            http::accept_loop(&s, listener)
        })?);
        let s = shared.clone();
        handle
            .threads
            .push(spawn("sim-generator", move || generator::run(&s))?);
        let c = &shared.cfg;
        log::info!(
            "[SIMULATE] {} ({:?} family) on {addr}: rate {}/s, block every {:?}, wallets {:?}{}",
            c.coin,
            c.family,
            c.rate,
            c.block_interval,
            c.wallets,
            if c.bench { ", bench mode" } else { "" }
        );
        Ok(handle)
    }

    /// The bound address (the actual port when configured with 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every WebSocket with 1001 "Server shutdown" and joins every thread.
    pub fn stop(self) {
        drop(self);
    }

    /// The calls received so far (oldest first, at most the last 10,000).
    pub fn rpc_log(&self) -> Vec<RpcCall> {
        self.shared.rpc_log()
    }

    /// Replaces the fault switches (`reset: true` forgets loaded wallets now).
    pub fn set_faults(&self, f: Faults) {
        self.shared.set_faults(&f);
    }

    /// Current block height.
    pub fn height(&self) -> u64 {
        self.shared.chain().height
    }

    /// Mines one block now (events included); returns the new height.
    pub fn mine(&self) -> u64 {
        self.shared.mine()
    }

    /// Starts one payment flow now (what the generator does at `rate`); events follow the
    /// family's rules and go out only for loaded wallets.
    pub fn pay(&self) {
        self.shared.pay_step();
    }

    /// Pushes one raw update to every socket (narrowed sockets: only for their wallet or global).
    pub fn emit(&self, update: serde_json::Value, wallet: Option<&str>) {
        self.shared.emit(&update, wallet);
    }

    /// The `sim_state` document: height, loaded wallets, `get_updates` queue lengths, faults and
    /// counters.
    pub fn state(&self) -> serde_json::Value {
        self.shared.state_json()
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.shared.request_stop();
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                log::error!("[SIMULATE] a simulator thread panicked");
            }
        }
        self.shared.join_all();
        log::info!(
            "[SIMULATE] {} daemon on {} stopped",
            self.shared.cfg.coin,
            self.addr
        );
    }
}
