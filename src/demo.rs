//! `cryptoworker demo`: the worker plus two in-process simulated daemons (BTC and ETH) on
//! ephemeral ports, no external services. Prints where to connect, runs until interrupted.

use crate::config::{CoinConfig, Config};
use crate::simulate::{SimConfig, SimHandle};
use crate::worker::WorkerHandle;
use std::process::ExitCode;
use std::time::Duration;

const HELP: &str = "Usage: cryptoworker demo [--port N] [--rate EVENTS_PER_S]

Runs the worker against two built-in simulated daemons (BTC and ETH) on ephemeral ports:
no database, no external services. Clients connect to ws://127.0.0.1:8082/ (or --port /
WORKER_PORT); the dashboard is at http://127.0.0.1:8082/. Stop with Ctrl-C.
";

/// Runs the demo.
pub fn run(args: &[String]) -> ExitCode {
    if crate::cli::wants_help(args) {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    }
    let (port, rate) = match parse(args) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("cryptoworker demo: {e}");
            return ExitCode::from(2);
        }
    };
    crate::logging::init(crate::logging::level_from_env());
    let sims = match start_daemons(rate) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cryptoworker demo: cannot start the simulated daemons: {e}");
            return ExitCode::from(1);
        }
    };
    let config = demo_config(&sims, port);
    let handle = match WorkerHandle::start(config) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("cryptoworker demo: cannot start the worker on port {port}: {e}");
            return ExitCode::from(1);
        }
    };
    let addr = handle.local_addr();
    println!("cryptoworker demo is running.");
    println!(
        "  simulated daemons: BTC on {}, ETH on {}",
        sims[0].addr(),
        sims[1].addr()
    );
    println!("  clients:   ws://{addr}/   (try: cargo run --release -- client)");
    println!("  dashboard: http://{addr}/");
    println!("  health:    http://{addr}/health   metrics: http://{addr}/metrics");
    println!("Press Ctrl-C to stop.");
    let code = crate::worker::run_until_signalled(&handle);
    for s in sims {
        s.stop();
    }
    code
}

fn parse(args: &[String]) -> Result<(u16, f64), String> {
    let mut port: u16 = std::env::var("WORKER_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8082);
    let mut rate = 2.0;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--port" => {
                port = value
                    .parse()
                    .map_err(|_| format!("--port: {value:?} is not a port"))?
            }
            "--rate" => {
                rate = value
                    .parse()
                    .map_err(|_| format!("--rate: {value:?} is not a number"))?;
                if !(rate > 0.0 && rate <= 100_000.0) {
                    return Err("--rate must be between 0 and 100000".into());
                }
            }
            other => {
                return Err(format!(
                    "unknown flag {other:?} (see cryptoworker demo --help)"
                ));
            }
        }
    }
    Ok((port, rate))
}

/// Wallet keys the demo watches.
pub const DEMO_WALLETS: [&str; 2] = ["zpub6demoBTCwallet", "0xDemoEthWallet"];

fn start_daemons(rate: f64) -> std::io::Result<Vec<SimHandle>> {
    let mut sims = Vec::new();
    for (coin, wallet) in [("BTC", DEMO_WALLETS[0]), ("ETH", DEMO_WALLETS[1])] {
        let mut cfg = SimConfig::new(coin);
        cfg.port = 0;
        cfg.rate = rate;
        cfg.block_interval = Duration::from_secs(10);
        cfg.wallets = vec![wallet.to_string()];
        sims.push(SimHandle::start(cfg)?);
    }
    Ok(sims)
}

fn demo_config(sims: &[SimHandle], port: u16) -> Config {
    let coins = sims
        .iter()
        .zip([("BTC", DEMO_WALLETS[0]), ("ETH", DEMO_WALLETS[1])])
        .map(|(s, (coin, wallet))| CoinConfig {
            coin: coin.into(),
            family: crate::config::default_family(coin).unwrap_or(crate::config::Family::Btc),
            host: "127.0.0.1".into(),
            port: s.addr().port(),
            login: "electrum".into(),
            password: "electrumz".into(),
            network: "mainnet".into(),
            wallets: vec![wallet.to_string()],
        })
        .collect();
    Config {
        coins,
        worker_port: port,
        log_level: crate::logging::level_from_env(),
        ..Config::default()
    }
}
