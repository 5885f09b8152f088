//! The seam between where events come from and what the reactor does with them.
//!
//! The reactor sequences, stores and fans out its sources' events, and reports on the sources,
//! without knowing what a source is. Today every source is a coin daemon (`daemons`: an event
//! link and an RPC pool around the coin's sans-io core, `daemon::core`); a source fed from a
//! stream of events would implement the same trait. Its actions reach the shared publishing path
//! (`Reactor::publish`, then `commit::emit`) the same way.

use serde_json::Value;

/// What the reactor's shared code (status, readiness, publishing, shutdown) asks of a source.
pub(super) trait EventSource {
    /// The name the source reports under (its coin).
    fn name(&self) -> &str;
    /// Whether it is connected to where its events come from.
    fn connected(&self) -> bool;
    /// How many times that connection was lost.
    fn reconnects(&self) -> u64;
    /// Its entry in the `daemons` object of `get_status`.
    fn status(&self) -> Value;
    /// One of its events was sequenced at `timestamp` (a duplicate is not reported).
    fn published(&mut self, timestamp: f64);
    /// The worker is shutting down: close the connection, best effort, without blocking.
    fn close(&mut self);
}
