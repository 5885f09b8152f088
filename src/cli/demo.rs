//! `cryptoworker demo`: the worker plus two in-process simulated daemons (BTC and ETH) on
//! ephemeral ports, no external services. Prints where to connect, runs until interrupted.

use super::CommandError;
use super::args::{self, OptSpec};
use crate::config::{CoinConfig, Config};
use crate::worker::WorkerHandle;
use cryptoworker_simulate::{SimConfig, SimHandle};
use std::time::Duration;

const ABOUT: &str = "Usage: cryptoworker demo [OPTIONS]

Runs the worker against two built-in simulated daemons (BTC and ETH) on ephemeral ports:
no database, no external services. Clients connect to ws://127.0.0.1:8082/ (or --port /
WORKER_PORT); the dashboard is at http://127.0.0.1:8082/. Stop with Ctrl-C.
LOG_LEVEL sets the log level.

";

pub(super) const OPTIONS: &[OptSpec] = &[
    args::value(
        "port",
        "N",
        Some("$WORKER_PORT, else 8082"),
        "port of the worker's client listener",
    ),
    args::value(
        "rate",
        "EVENTS_PER_S",
        Some("2"),
        "events per second from each simulated daemon (0 < rate <= 100000)",
    ),
];

/// The text of `cryptoworker demo --help`.
pub(super) fn help() -> String {
    format!("{ABOUT}{}", args::options_help(OPTIONS))
}

/// Runs the demo until SIGINT or SIGTERM.
pub fn run(argv: &[String]) -> Result<(), CommandError> {
    let grammar = args::Grammar::table("demo", OPTIONS);
    let Some(parsed) = args::parse_or_help(&grammar, argv, help)? else {
        return Ok(());
    };
    let (port, rate) = options(&parsed)?;
    crate::logging::init(crate::logging::level_from_env());
    let sims = start_daemons(rate)
        .map_err(|e| CommandError::failed(format!("cannot start the simulated daemons: {e}")))?;
    let config = demo_config(&sims, port);
    let handle = WorkerHandle::start(config).map_err(|e| {
        CommandError::failed(format!("cannot start the worker on port {port}: {e}"))
    })?;
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
    let outcome = crate::worker::run_until_signalled(&handle);
    for s in sims {
        s.stop();
    }
    outcome.map_err(|e| CommandError::failed(format!("the reactor failed: {e}")))
}

/// The worker port and the event rate from the options (the port defaults to `WORKER_PORT`).
fn options(parsed: &args::Parsed) -> Result<(u16, f64), args::ArgError> {
    let env_port = std::env::var("WORKER_PORT")
        .ok()
        .and_then(|p| p.parse().ok());
    let port = parsed.number("port")?.or(env_port).unwrap_or(8082);
    let rate = parsed.number("rate")?.unwrap_or(2.0);
    if !(rate > 0.0 && rate <= 100_000.0) {
        return Err(parsed.invalid("rate", "must be between 0 and 100000"));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(list: &[&str]) -> args::Parsed {
        let grammar = args::Grammar::table("demo", OPTIONS);
        let argv: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        args::parse(&grammar, &argv).unwrap()
    }

    #[test]
    fn both_value_syntaxes_are_accepted() {
        assert_eq!(
            options(&parsed(&["--port=9", "--rate=5"])).unwrap(),
            (9, 5.0)
        );
        assert_eq!(
            options(&parsed(&["--port", "9", "--rate", "5"])).unwrap(),
            (9, 5.0)
        );
    }

    #[test]
    fn bad_values_name_the_option() {
        for (list, flag) in [
            (&["--port=x"][..], "--port"),
            (&["--rate=0"], "--rate"),
            (&["--rate", "NaN"], "--rate"),
            (&["--rate=100001"], "--rate"),
        ] {
            let e = options(&parsed(list)).unwrap_err();
            assert_eq!(
                (e.flag.as_str(), e.command.as_str()),
                (flag, "demo"),
                "{list:?}"
            );
        }
    }
}
