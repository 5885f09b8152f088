//! The catch-up's log lines: one summary per catch-up, not one line per call.

use crate::daemon::recovery::Summary;
use std::time::Duration;

/// The link went down before the catch-up finished.
pub(super) fn interrupted(coin: &str, s: &Summary, left: usize) {
    log::warn!(
        "[WORKER] Catch-up of {coin} interrupted by the disconnect ({left} calls left; all are \
         made again at the next connect): {}",
        summary_text(s)
    );
}

/// One line for a finished catch-up: at info level for a (re)connect's and for any that moved,
/// recovered or checked a lot; at debug level for the small quiet ones a new wallet or request
/// starts (an application creating invoices would otherwise log one line each); a failure is a
/// warning either way.
pub(super) fn finished(coin: &str, s: &Summary, took: Duration, after_connect: bool) {
    let notable = after_connect
        || s.requests_moved + s.requests_gone + s.events_recovered > 0
        || s.requests_reconciled + s.wallets_loaded >= 100;
    let what = if after_connect {
        "Caught up"
    } else {
        "Checked new wallets/requests of"
    };
    let line = format!(
        "[WORKER] {what} {coin} in {:.1} s: {}",
        took.as_secs_f64(),
        summary_text(s)
    );
    if s.failed > 0 {
        log::warn!("{line}");
    } else if notable {
        log::info!("{line}");
    } else {
        log::debug!("{line}");
    }
}

fn summary_text(s: &Summary) -> String {
    let mut text = format!(
        "{} wallets loaded, {} drained ({} events recovered), {} payment requests reconciled \
         ({} moved, {} gone)",
        s.wallets_loaded,
        s.wallets_drained,
        s.events_recovered,
        s.requests_reconciled + s.requests_gone,
        s.requests_moved,
        s.requests_gone
    );
    if s.failed > 0 {
        text.push_str(&format!(
            ", {} failed after retries (first: {})",
            s.failed,
            s.first_error.as_deref().unwrap_or("?")
        ));
    }
    text
}
