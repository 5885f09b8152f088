//! Child processes of the `cryptoworker` binary ([`Proc`]), each wrapped in a guard that kills
//! it on drop; the worker ([`super::worker`]), simulated daemons ([`super::sim`]) and
//! `cryptoworker check` are all started through it.
//!
//! Invariants:
//! - children start with an empty environment plus `PATH` and what the test sets, so the
//!   caller's `DATABASE_URL`, `WORKER_*` or `{COIN}_*` variables never leak in;
//! - stdout and stderr are drained by threads into a bounded line buffer ([`Output`]), so a
//!   chatty child never blocks on a full pipe, and a failing test prints the last lines of each
//!   child it owned;
//! - every wait has a deadline.

use super::POLL_STEP;
use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Lines of a child's output kept for waits and failure reports.
const KEEP_LINES: usize = 4000;
/// Lines printed when a test fails.
pub const REPORT_LINES: usize = 80;
/// Time allowed for a child to start listening.
pub const START_TIMEOUT_S: f64 = 15.0;
/// Variable of the test run that sets the children's `LOG_LEVEL` (default `info`), e.g.
/// `CW_TEST_LOG_LEVEL=debug cargo test --test pipeline` to see why a test failed.
pub const LOG_LEVEL_VAR: &str = "CW_TEST_LOG_LEVEL";

/// The children's `LOG_LEVEL`.
pub fn log_level() -> String {
    std::env::var(LOG_LEVEL_VAR).unwrap_or_else(|_| "info".to_string())
}

/// The path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_cryptoworker")
}

/// A bounded record of a child's output lines (stdout and stderr interleaved).
#[derive(Default)]
pub struct Output {
    lines: Mutex<VecDeque<String>>,
    grew: Condvar,
}

impl Output {
    fn push(&self, line: String) {
        let mut lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        if lines.len() == KEEP_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
        self.grew.notify_all();
    }

    /// The first kept line containing `needle`, waiting for it until `deadline`.
    pub fn wait_for(&self, needle: &str, deadline: Instant) -> Option<String> {
        let mut lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(l) = lines.iter().find(|l| l.contains(needle)) {
                return Some(l.clone());
            }
            let left = super::remaining(deadline);
            if left.is_zero() {
                return None;
            }
            lines = self
                .grew
                .wait_timeout(lines, left.min(Duration::from_millis(100)))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Whether any kept line contains `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        let lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        lines.iter().any(|l| l.contains(needle))
    }

    /// Every kept line containing `needle`.
    pub fn matching(&self, needle: &str) -> Vec<String> {
        let lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        lines
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    /// Every kept line, joined.
    pub fn all(&self) -> String {
        self.tail(KEEP_LINES)
    }

    /// The last `n` lines, joined.
    pub fn tail(&self, n: usize) -> String {
        let lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        let skip = lines.len().saturating_sub(n);
        lines
            .iter()
            .skip(skip)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn drain(pipe: impl Read + Send + 'static, out: Arc<Output>) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            match line {
                Ok(l) => out.push(l),
                Err(_) => break,
            }
        }
    });
}

/// A running child process, killed on drop.
pub struct Proc {
    name: String,
    child: Child,
    exit: Option<ExitStatus>,
    /// Everything it printed (bounded).
    pub output: Arc<Output>,
}

impl Proc {
    /// Spawns `bin() args...` with exactly `env` (plus `PATH`), capturing its output.
    pub fn spawn(name: &str, args: &[String], env: &BTreeMap<String, String>) -> Proc {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {name} ({}): {e}", bin()));
        let output = Arc::new(Output::default());
        if let Some(p) = child.stdout.take() {
            drain(p, output.clone());
        }
        if let Some(p) = child.stderr.take() {
            drain(p, output.clone());
        }
        Proc {
            name: name.to_string(),
            child,
            exit: None,
            output,
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM (through `kill -TERM`, no libc needed).
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// The exit status if the child has exited (does not wait).
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// Waits for the child to exit until `deadline`.
    pub fn wait_exit(&mut self, deadline: Instant) -> Option<ExitStatus> {
        loop {
            if let Some(s) = self.try_exit() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(POLL_STEP);
        }
    }

    /// Panics (with the output tail) when the child has exited.
    pub fn assert_running(&mut self, when: &str) {
        if let Some(s) = self.try_exit() {
            panic!(
                "{} exited ({s}) {when}; its output:\n{}",
                self.name,
                self.output.tail(REPORT_LINES)
            );
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "----- last output of {} (pid {}) -----\n{}\n-----",
                self.name,
                self.pid(),
                self.output.tail(REPORT_LINES)
            );
        }
    }
}
