//! The library API (README.md, "Library"): start a worker from a [`Config`], read its status,
//! register event handlers, stop it. The worker runs on its own reactor thread; handlers run on a
//! separate handler thread, never on the reactor, and a panicking handler is logged and counted.

use crate::config::Config;
use crate::event::Published;
use crate::metrics::Metrics;
use crate::reactor::{Control, Reactor, ReactorParts, WAKER};
use crossbeam_channel::{Receiver, Sender};
use serde_json::Value;
use std::io;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

/// Events waiting for handlers; beyond this, events are not given to handlers (counted).
const HANDLER_QUEUE: usize = 65_536;

/// A registered handler: called with the event's client `data` object.
pub type Handler = Arc<dyn Fn(&Value) + Send + Sync>;

type HandlerTable = Arc<RwLock<Vec<(String, Handler)>>>;

/// A running worker.
pub struct WorkerHandle {
    control: Sender<Control>,
    waker: Arc<mio::Waker>,
    thread: Mutex<Option<JoinHandle<io::Result<()>>>>,
    local_addr: SocketAddr,
    handlers: HandlerTable,
    /// Handlers registered; the reactor skips the handler queue while it is zero.
    handler_count: Arc<std::sync::atomic::AtomicUsize>,
    metrics: Arc<Metrics>,
}

impl WorkerHandle {
    /// Binds the client port and starts the reactor thread. Errors (port in use, bad listen
    /// address) are returned here, before anything runs.
    pub fn start(config: Config) -> io::Result<WorkerHandle> {
        let poll = mio::Poll::new()?;
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER)?);
        let (control_tx, control_rx) = crossbeam_channel::unbounded();
        let metrics = Arc::new(Metrics::default());
        let handlers: HandlerTable = Arc::default();
        let handler_count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (events_tx, events_rx) = crossbeam_channel::bounded(HANDLER_QUEUE);
        spawn_handler_thread(events_rx, handlers.clone(), metrics.clone())?;
        let (db, resume) = start_db(&config, &waker)?;
        let parts = ReactorParts {
            poll,
            waker: waker.clone(),
            control: control_rx,
            metrics: metrics.clone(),
            handlers: Some((events_tx, handler_count.clone())),
            epoch: resume.epoch.into(),
            last_seq: resume.last_seq,
            db,
            tips: resume.tips,
            recent: resume.recent,
        };
        let reactor = Reactor::new(Arc::new(config), parts)?;
        let local_addr = reactor.local_addr();
        let thread = std::thread::Builder::new()
            .name("reactor".into())
            .spawn(move || reactor.run())?;
        Ok(WorkerHandle {
            control: control_tx,
            waker,
            thread: Mutex::new(Some(thread)),
            local_addr,
            handlers,
            handler_count,
            metrics,
        })
    }

    /// The address clients connect to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The `get_status` data object, or `None` if the worker does not answer within 5 s.
    pub fn status(&self) -> Option<Value> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.send(Control::Status(tx));
        rx.recv_timeout(Duration::from_secs(5)).ok()
    }

    /// Registers `handler` for events named `event` (`"*"` for all). Handlers run on the
    /// handler thread, in event order.
    pub fn add_event_handler<F>(&self, event: &str, handler: F)
    where
        F: Fn(&Value) + Send + Sync + 'static,
    {
        if let Ok(mut table) = self.handlers.write() {
            table.push((event.to_string(), Arc::new(handler)));
            self.handler_count
                .store(table.len(), std::sync::atomic::Ordering::Release);
        }
    }

    /// The worker's counters.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Asks for a graceful shutdown and waits for it (clients get 1001).
    pub fn stop(&self) -> io::Result<()> {
        self.send(Control::Shutdown);
        self.wait()
    }

    /// Waits until the reactor thread ends (after a shutdown).
    pub fn wait(&self) -> io::Result<()> {
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        match thread {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("reactor thread panicked"))),
            None => Ok(()),
        }
    }

    /// A cloneable trigger for a graceful shutdown (for signal threads).
    pub fn shutdown_trigger(&self) -> impl Fn() + Send + Sync + 'static {
        let control = self.control.clone();
        let waker = self.waker.clone();
        move || {
            let _ = control.send(Control::Shutdown);
            let _ = waker.wake();
        }
    }

    fn send(&self, msg: Control) {
        if self.control.send(msg).is_ok() {
            let _ = self.waker.wake();
        }
    }
}

type DbParts = Option<(crate::db::DbHandle, Receiver<crate::db::DbMessage>)>;

/// Starts persistence when configured (before the reactor: this may block for a few seconds),
/// and says where numbering continues.
fn start_db(config: &Config, waker: &Arc<mio::Waker>) -> io::Result<(DbParts, crate::db::Resume)> {
    let Some(db_config) = &config.db else {
        log::info!("[WORKER] No database configured: events are kept in memory only");
        let resume = crate::db::Resume {
            epoch: crate::event::new_epoch(),
            last_seq: 0,
            tips: Default::default(),
            recent: Vec::new(),
        };
        return Ok((None, resume));
    };
    let w = waker.clone();
    let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
        let _ = w.wake();
    });
    log::info!("[WORKER] Database: {}", db_config.describe());
    let started = if config.cluster.is_some() {
        crate::db::Db::start_in_cluster(db_config, wake, Duration::from_secs(3))
    } else {
        crate::db::Db::start(db_config, wake, Duration::from_secs(3))
    };
    match started {
        Ok((handle, rx, resume)) => {
            log::info!(
                "[WORKER] Epoch {} continues after seq {}",
                resume.epoch,
                resume.last_seq
            );
            Ok((Some((handle, rx)), resume))
        }
        Err(e) => Err(io::Error::other(e.to_string())),
    }
}

fn spawn_handler_thread(
    events: Receiver<Arc<Published>>,
    handlers: HandlerTable,
    metrics: Arc<Metrics>,
) -> io::Result<()> {
    std::thread::Builder::new()
        .name("handlers".into())
        .spawn(move || {
            for p in events {
                let Ok(table) = handlers.read() else {
                    return;
                };
                let wanted: Vec<Handler> = table
                    .iter()
                    .filter(|(name, _)| name == "*" || **name == *p.meta.name)
                    .map(|(_, h)| h.clone())
                    .collect();
                drop(table);
                if wanted.is_empty() {
                    continue;
                }
                let Ok(data) = serde_json::from_str::<Value>(p.payload()) else {
                    continue;
                };
                for h in wanted {
                    if catch_unwind(AssertUnwindSafe(|| h(&data))).is_err() {
                        metrics.inc(&metrics.handler_failures);
                        log::error!(
                            "[WORKER] An event handler for {} failed; delivery continues",
                            p.meta.name
                        );
                    }
                }
            }
        })?;
    Ok(())
}

/// The process-wide worker of [`start_worker`] / [`stop_worker`] / [`get_worker`].
static GLOBAL: Mutex<Option<Arc<WorkerHandle>>> = Mutex::new(None);

/// Starts the process-wide worker for `coins` (other settings from the environment), like the
/// original design's `start_worker`. Errors if one is already running.
pub fn start_worker(coins: &[&str]) -> Result<Arc<WorkerHandle>, String> {
    let mut global = GLOBAL
        .lock()
        .map_err(|_| "worker registry poisoned".to_string())?;
    if global.is_some() {
        return Err("a worker is already running".into());
    }
    let args = vec!["--coins".to_string(), coins.join(",")];
    let config = Config::from_process(&args).map_err(|e| e.to_string())?;
    let handle = Arc::new(WorkerHandle::start(config).map_err(|e| e.to_string())?);
    *global = Some(handle.clone());
    Ok(handle)
}

/// Stops the process-wide worker, if any.
pub fn stop_worker() -> io::Result<()> {
    let handle = GLOBAL.lock().ok().and_then(|mut g| g.take());
    match handle {
        Some(h) => h.stop(),
        None => Ok(()),
    }
}

/// The process-wide worker, if one is running.
pub fn get_worker() -> Option<Arc<WorkerHandle>> {
    GLOBAL.lock().ok().and_then(|g| g.clone())
}

/// Blocks until SIGINT or SIGTERM, then stops the worker gracefully. `Err` if the reactor
/// failed.
pub fn run_until_signalled(handle: &WorkerHandle) -> io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let trigger = handle.shutdown_trigger();
    match signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) {
        Ok(mut signals) => {
            let spawned = std::thread::Builder::new()
                .name("signals".into())
                .spawn(move || {
                    if let Some(sig) = signals.forever().next() {
                        log::info!("[WORKER] Received signal {sig}; shutting down");
                        trigger();
                    }
                });
            if let Err(e) = spawned {
                log::error!("[WORKER] cannot start the signal thread: {e}");
            }
        }
        Err(e) => log::error!("[WORKER] cannot install signal handlers: {e}"),
    }
    handle.wait()
}
