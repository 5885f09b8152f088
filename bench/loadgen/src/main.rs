//! `loadgen`: the fan-out benchmark's load generator.
//!
//! One process holds up to ~9,000 subscribed WebSocket clients on one mio thread (the
//! orchestrator starts several for more), spreads them over loopback source addresses, and
//! measures steps on command: deliveries in time, a log-linear latency histogram (receive time
//! minus the schedule embedded by the source) and the fan-out span of each event. A thread reads
//! commands from stdin and wakes the loop; reports are JSON lines on stdout (see `--help`).

mod app;
mod config;
mod conn;
mod hist;
mod net;
mod step;
mod ws;

#[cfg(test)]
mod e2e_tests;

use std::io::BufRead;
use std::sync::mpsc;
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = match config::Config::parse(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(cfg) {
        eprintln!("loadgen: {e}");
        std::process::exit(1);
    }
}

fn run(cfg: config::Config) -> std::io::Result<()> {
    let mut app = app::App::new(cfg)?;
    let (tx, rx) = mpsc::channel();
    let waker = app.waker();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            let cmd = app::Cmd::parse(&line);
            if tx.send(cmd).is_err() || waker.wake().is_err() {
                return;
            }
        }
        let _ = tx.send(Ok(app::Cmd::Exit));
        let _ = waker.wake();
    });
    loop {
        let mut cmds = Vec::new();
        for cmd in rx.try_iter() {
            match cmd {
                Ok(c) => cmds.push(c),
                Err(e) => println!("{}", serde_json::json!({"type": "error", "error": e})),
            }
        }
        let (lines, exit) = app.turn(cmds, Duration::from_millis(20))?;
        for line in lines {
            println!("{line}");
        }
        if exit {
            return Ok(());
        }
    }
}
