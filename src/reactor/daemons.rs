//! The reactor's daemon side: driving each coin's link, and turning its frames into published
//! events.

use super::{DAEMON_BASE, Reactor, TimerOwner};
use crate::daemon::decode::decode_frame;
use crate::daemon::link::LinkOutput;
use crate::event::{Event, now_unix};
use mio::{Interest, Token};
use serde_json::json;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Instant;

impl Reactor {
    pub(super) fn daemon_ready(&mut self, i: usize, now: Instant) {
        let mut out = Vec::new();
        if let Some(d) = self.daemons.get_mut(i) {
            d.link.on_ready(now, &mut out);
        }
        self.daemon_outputs(i, out, now);
    }

    pub(super) fn daemon_timer(&mut self, i: usize, now: Instant) {
        let mut out = Vec::new();
        let Some(d) = self.daemons.get_mut(i) else {
            return;
        };
        if now < d.link.deadline() {
            return;
        }
        d.link.on_timer(now, &mut out);
        self.daemon_outputs(i, out, now);
    }

    pub(super) fn daemon_resolved(&mut self, i: usize, result: io::Result<SocketAddr>, now: Instant) {
        let mut out = Vec::new();
        if let Some(d) = self.daemons.get_mut(i) {
            d.link.resolved(result, now, &mut out);
        }
        self.daemon_outputs(i, out, now);
    }

    fn daemon_outputs(&mut self, i: usize, outputs: Vec<LinkOutput>, now: Instant) {
        for output in outputs {
            match output {
                LinkOutput::Register => self.register_daemon(i),
                LinkOutput::Resolve(host, port) => self.resolve(i, host, port),
                LinkOutput::Connected => {
                    self.daemon_status(i, true, None, now);
                    self.log_connected_daemons();
                }
                LinkOutput::Disconnected(reason) => {
                    self.daemon_status(i, false, Some(reason), now);
                    self.log_connected_daemons();
                }
                LinkOutput::Frame(text) => self.daemon_frame(i, &text, now),
            }
        }
        if let Some(d) = self.daemons.get(i) {
            self.timers.schedule(d.link.deadline(), TimerOwner::Daemon(i));
        }
    }

    fn register_daemon(&mut self, i: usize) {
        let registry = self.poll.registry();
        if let Some(stream) = self.daemons.get_mut(i).and_then(|d| d.link.stream()) {
            let token = Token(DAEMON_BASE + i);
            let interest = Interest::READABLE | Interest::WRITABLE;
            if let Err(e) = registry.register(stream, token, interest) {
                log::error!("[WORKER] cannot register daemon socket: {e}");
            }
        }
    }

    /// Resolves a daemon host name on a short-lived thread (never on the reactor).
    fn resolve(&mut self, i: usize, host: String, port: u16) {
        let tx = self.resolved.0.clone();
        let waker = self.waker.clone();
        let spawned = std::thread::Builder::new().name("resolve".into()).spawn(move || {
            let result = (host.as_str(), port).to_socket_addrs().and_then(|mut addrs| {
                addrs.next().ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))
            });
            let _ = tx.send((i, result));
            let _ = waker.wake();
        });
        if let Err(e) = spawned {
            let _ = self.resolved.0.send((i, Err(e)));
        }
    }

    fn daemon_frame(&mut self, i: usize, text: &str, now: Instant) {
        let Some(d) = self.daemons.get(i) else {
            return;
        };
        let coin = d.link.coin.clone();
        let decoded = match decode_frame(text, &coin, d.link.config.family) {
            Ok(decoded) => decoded,
            Err(e) => {
                self.metrics.inc(&self.metrics.daemon_bad_frames);
                log::warn!("[WORKER] Ignored a bad frame from {coin}: {e}");
                return;
            }
        };
        for e in &decoded.skipped {
            self.metrics.inc(&self.metrics.daemon_bad_frames);
            log::warn!("[WORKER] Ignored a bad update from {coin}: {e}");
        }
        for ev in decoded.events {
            self.publish(i, ev, now);
        }
    }

    /// Sequences an event of daemon `i` and fans it out.
    pub(super) fn publish(&mut self, i: usize, ev: Event, now: Instant) {
        if ev.name == "new_block"
            && let Some(h) = ev.data.get("height").and_then(|h| h.as_u64())
            && let Some(d) = self.daemons.get_mut(i)
        {
            d.height = Some(d.height.map_or(h, |old| old.max(h)));
        }
        let Some(p) = self.pipeline.publish(&ev) else {
            self.metrics.inc(&self.metrics.duplicates_dropped);
            return;
        };
        if let Some(d) = self.daemons.get_mut(i) {
            d.events += 1;
            d.last_event_at = Some(p.timestamp);
        }
        self.fan_out(p, now);
    }

    fn daemon_status(&mut self, i: usize, connected: bool, reason: Option<String>, now: Instant) {
        let Some(d) = self.daemons.get(i) else {
            return;
        };
        let mut ev = Event::new(d.link.coin.clone(), "daemon_status", None)
            .with("connected", json!(connected))
            .with("url", json!(d.link.url()))
            .with("network", json!(d.link.config.network));
        if let Some(r) = reason {
            ev = ev.with("reason", json!(r));
        }
        ev = ev.with("at", json!(now_unix()));
        self.publish(i, ev, now);
    }

    fn log_connected_daemons(&self) {
        let up = self.daemons.iter().filter(|d| d.link.stats.connected).count();
        log::info!("[WORKER] Connected daemons: {up}/{}", self.daemons.len());
    }
}
