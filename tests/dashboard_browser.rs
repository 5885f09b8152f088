//! The dashboard (`GET /`) in a real browser: Debian's headless `chromium`, driven through
//! `chromedriver` by selenium (`tests/browser/dashboard_test.py`), against a running worker fed
//! by a simulated BTC daemon with a steady stream. Checks that recent events appear, that the
//! charts move, that the daemon table shows BTC connected with a height, that the filter box
//! filters, and with `WORKER_API_KEYS` that the key prompt appears, refuses a wrong key and lets
//! the right one in. Fails, never skips, when chromium, chromedriver or selenium is missing
//! (`scripts/ensure-browser` installs them). With `CW_SAVE_SCREENSHOT=1` the screenshot of the
//! open worker goes to `docs/dashboard.png` (the README's); otherwise to the target tmp dir.

mod common;

use common::{Sim, Worker, WorkerBuilder};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A simulated BTC daemon with a steady stream: payment flows at 50/s and a block a second.
const STEADY: &[&str] = &[
    "--rate",
    "50",
    "--block-interval",
    "1",
    "--wallets",
    "zpubX",
    "--preload-wallets",
];

/// Runs the browser driver on `worker`'s dashboard (screenshot once the charts have
/// `min_points` samples); panics with its output when it fails.
fn drive(worker: &Worker, screenshot: &Path, key: Option<&str>, min_points: u32) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/browser/dashboard_test.py"
    );
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .arg(format!("http://{}/", worker.addr))
        .arg(screenshot)
        .args(["--min-points", &min_points.to_string()]);
    if let Some(k) = key {
        cmd.args(["--key", k]);
    }
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run python3 {script}: {e} (scripts/ensure-browser installs what it needs)")
    });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        out.status.success() && text.contains("\nOK"),
        "browser test failed ({}); scripts/ensure-browser installs chromium, chromedriver and \
         selenium:\n{text}",
        out.status
    );
    assert!(
        screenshot.exists(),
        "no screenshot at {}",
        screenshot.display()
    );
}

#[test]
fn dashboard_shows_the_live_stream_in_chromium() {
    let sim = Sim::start("BTC", STEADY);
    let worker = common::worker_for(&[&sim], &[]);
    // The README's screenshot gets a longer history on its charts.
    let (screenshot, min_points) =
        if std::env::var_os("CW_SAVE_SCREENSHOT").is_some_and(|v| v == "1") {
            let docs = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/dashboard.png");
            (PathBuf::from(docs), 45)
        } else {
            (
                PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png"),
                10,
            )
        };
    drive(&worker, &screenshot, None, min_points);
}

#[test]
fn dashboard_asks_for_a_key_and_refuses_a_wrong_one_in_chromium() {
    let sim = Sim::start("BTC", STEADY);
    let key = "dashboard-test-key";
    let worker = WorkerBuilder::new()
        .daemon(&sim)
        .env("WORKER_API_KEYS", key)
        .start();
    let screenshot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-keyed.png");
    drive(&worker, &screenshot, Some(key), 5);
}
