//! `cryptoworker simulate`: options to [`SimConfig`], run until SIGINT/SIGTERM, stop
//! gracefully. A bad option value is a usage error naming the option; a start failure (port in
//! use) is a command failure.

use super::CommandError;
use super::args::{self, ArgError, OptSpec, Parsed};
use crate::config::Family;
use crate::config::{default_family, default_port};
use cryptoworker_simulate::{MAX_POLLING_CAP, SimConfig, SimHandle};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const ABOUT: &str = "\
cryptoworker simulate: a simulated Bitcart coin daemon (POST / JSON-RPC, GET /ws events, GET /spec)

Usage: cryptoworker simulate [OPTIONS]

";

const AFTER: &str = "
get_updates (needs a wallet, like get_request) returns the wallet's queue and clears it.
Admin JSON-RPC methods (same endpoint and auth): sim_emit(update, wallet|null),
sim_emit_raw(text), sim_set_fault({..}), sim_rpc_log(), sim_set_request(wallet, id, {status,
sent_amount, tx_hashes}|null), sim_state(), sim_mine(), sim_pay().
Runs until SIGINT or SIGTERM, then closes WebSockets with 1001 and exits 0.
";

pub(super) const OPTIONS: &[OptSpec] = &[
    args::value(
        "coin",
        "SYMBOL",
        Some("BTC"),
        "coin symbol, also the events' currency",
    ),
    args::value(
        "family",
        "btc|eth|xmr",
        Some("from the coin; required for other coins"),
        "protocol family",
    ),
    args::value("host", "ADDR", Some("127.0.0.1"), "bind address"),
    args::value(
        "port",
        "N",
        Some("the coin's Bitcart port, BTC 5000"),
        "port, 0 = ephemeral",
    ),
    args::value("login", "L", Some("electrum"), "HTTP Basic user"),
    args::value("password", "P", Some("electrumz"), "HTTP Basic password"),
    args::value(
        "rate",
        "R",
        Some("2"),
        "events per second from payment flows, 0 = blocks only;\nwith --bench: pushes per second",
    ),
    args::value(
        "block-interval",
        "S",
        Some("10"),
        "seconds between blocks, 0 = only via sim_mine",
    ),
    args::value(
        "wallets",
        "K1,K2",
        None,
        "wallet keys (xpub or xpub_contract) the generator pays into;\n\
         wallets loaded by any RPC are added",
    ),
    args::switch(
        "preload-wallets",
        "treat --wallets as loaded at start (no RPC needed for events)",
    ),
    args::value(
        "polling-cap",
        "N",
        Some("100"),
        "pushed updates each loaded wallet keeps for get_updates (global\n\
         ones copied to all), 0 = no queues, at most 100000",
    ),
    args::switch(
        "bench",
        "open-loop stream of new_transaction pushes for the first wallet,\n\
         push i due at start + i/rate, tx = 0x{scheduled_us:016x}{i:048x}",
    ),
    args::value("count", "N", Some("0"), "bench pushes to send, 0 = forever"),
    args::value(
        "start-delay-ms",
        "N",
        Some("0"),
        "wait before the first bench push",
    ),
    args::value(
        "fault",
        "NAME[=VALUE]",
        None,
        "refuse_auth | stall | reset | drop_after=N | rpc_delay_ms=N\n\
         (repeatable; also settable at run time with sim_set_fault)",
    ),
    args::value(
        "seed",
        "N",
        Some("from the clock"),
        "seed for ids and amounts",
    ),
];

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Request {
    Help,
    Run(Box<SimConfig>),
}

fn grammar() -> args::Grammar<'static> {
    args::Grammar::table("simulate", OPTIONS)
}

/// Parses the arguments after `simulate`.
pub(crate) fn parse_args(argv: &[String]) -> Result<Request, ArgError> {
    let parsed = args::parse(&grammar(), argv)?;
    if parsed.help {
        return Ok(Request::Help);
    }
    let coin = parsed
        .last("coin")
        .unwrap_or("BTC")
        .trim()
        .to_ascii_uppercase();
    if coin.is_empty() || !coin.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(parsed.invalid("coin", "must be a symbol such as BTC"));
    }
    let mut cfg = SimConfig::new(&coin);
    let family = parsed.last("family").map(str::to_ascii_lowercase);
    cfg.family = match family.as_deref() {
        Some(name) => Family::from_name(name)
            .ok_or_else(|| parsed.invalid("family", format!("'{name}' is not btc, eth or xmr")))?,
        None => default_family(&coin).ok_or_else(|| {
            parsed.invalid(
                "family",
                format!("required for {coin}, which is not a known coin"),
            )
        })?,
    };
    cfg.port = match parsed.number("port")? {
        Some(p) => p,
        None => default_port(&coin).ok_or_else(|| {
            parsed.invalid(
                "port",
                format!("required for {coin}, which has no default port"),
            )
        })?,
    };
    apply_strings(&mut cfg, &parsed)?;
    apply_numbers(&mut cfg, &parsed)?;
    Ok(Request::Run(Box::new(cfg)))
}

/// The text options: host, credentials, wallets, switches and faults.
fn apply_strings(cfg: &mut SimConfig, parsed: &Parsed) -> Result<(), ArgError> {
    if let Some(host) = parsed.last("host") {
        if host.trim().is_empty() {
            return Err(parsed.invalid("host", "must not be empty"));
        }
        cfg.host = host.trim().to_string();
    }
    if let Some(login) = parsed.last("login") {
        cfg.login = login.to_string();
    }
    if let Some(password) = parsed.last("password") {
        cfg.password = password.to_string();
    }
    if let Some(wallets) = parsed.last("wallets") {
        cfg.wallets = wallets
            .split(',')
            .map(str::trim)
            .filter(|w| !w.is_empty())
            .map(String::from)
            .collect();
    }
    cfg.preload_wallets = parsed.has("preload-wallets");
    cfg.bench = parsed.has("bench");
    for fault in parsed.all("fault") {
        cfg.faults
            .apply_flag(fault)
            .map_err(|e| parsed.invalid("fault", e.0))?;
    }
    Ok(())
}

/// The numeric options, with their ranges.
fn apply_numbers(cfg: &mut SimConfig, parsed: &Parsed) -> Result<(), ArgError> {
    if let Some(rate) = parsed.number::<f64>("rate")? {
        if !rate.is_finite() || rate < 0.0 {
            return Err(parsed.invalid("rate", "must be a number >= 0"));
        }
        cfg.rate = rate;
    }
    if let Some(s) = parsed.number::<f64>("block-interval")? {
        if !s.is_finite() || s < 0.0 {
            return Err(parsed.invalid("block-interval", "must be a number of seconds >= 0"));
        }
        cfg.block_interval = Duration::from_secs_f64(s);
    }
    if let Some(cap) = parsed.number("polling-cap")? {
        if cap > MAX_POLLING_CAP {
            let why = format!("must be at most {MAX_POLLING_CAP}");
            return Err(parsed.invalid("polling-cap", why));
        }
        cfg.polling_cap = cap;
    }
    cfg.count = parsed.number("count")?.unwrap_or(cfg.count);
    if let Some(ms) = parsed.number("start-delay-ms")? {
        cfg.start_delay = Duration::from_millis(ms);
    }
    cfg.seed = parsed.number("seed")?.unwrap_or(cfg.seed);
    if cfg.bench && cfg.rate <= 0.0 {
        return Err(parsed.invalid("rate", "must be > 0 with --bench"));
    }
    Ok(())
}

/// The text of `cryptoworker simulate --help`.
pub(super) fn help() -> String {
    format!("{ABOUT}{}{AFTER}", args::options_help(OPTIONS))
}

/// Runs `cryptoworker simulate` with the arguments after `simulate`, until SIGINT or SIGTERM.
pub fn run(argv: &[String]) -> Result<(), CommandError> {
    let cfg = match parse_args(argv)? {
        Request::Help => {
            print!("{}", help());
            return Ok(());
        }
        Request::Run(cfg) => *cfg,
    };
    crate::logging::init(crate::logging::level_from_env());
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone())
            .map_err(|e| CommandError::failed(format!("cannot install a signal handler: {e}")))?;
    }
    let coin = cfg.coin.clone();
    let handle = SimHandle::start(cfg)
        .map_err(|e| CommandError::failed(format!("cannot start the {coin} daemon: {e}")))?;
    println!("[SIMULATE] {coin} daemon listening on {}", handle.addr());
    let _ = std::io::stdout().flush();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("[SIMULATE] {coin} daemon shutting down");
    handle.stop();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Request, ArgError> {
        parse_args(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    fn cfg(args: &[&str]) -> SimConfig {
        match parse(args) {
            Ok(Request::Run(c)) => *c,
            other => panic!("expected a config, got {other:?}"),
        }
    }

    #[test]
    fn defaults_come_from_the_coin() {
        let c = cfg(&[]);
        assert_eq!(
            (c.coin.as_str(), c.family, c.port),
            ("BTC", Family::Btc, 5000)
        );
        assert_eq!(
            (c.login.as_str(), c.password.as_str()),
            ("electrum", "electrumz")
        );
        assert_eq!((c.rate, c.block_interval), (2.0, Duration::from_secs(10)));
        assert_eq!(c.polling_cap, 100);
        let c = cfg(&["--coin", "matic"]);
        assert_eq!(
            (c.coin.as_str(), c.family, c.port),
            ("MATIC", Family::Eth, 5008)
        );
    }

    #[test]
    fn every_flag_is_applied() {
        let c = cfg(&[
            "--coin=eth",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
            "--login",
            "u",
            "--password",
            "p",
            "--rate",
            "1.5",
            "--block-interval",
            "0.5",
            "--wallets",
            "a, b,,c",
            "--preload-wallets",
            "--polling-cap",
            "7",
            "--bench",
            "--count",
            "10",
            "--start-delay-ms",
            "250",
            "--fault",
            "stall",
            "--fault",
            "drop_after=3",
            "--seed",
            "9",
        ]);
        assert_eq!(
            (
                c.host.as_str(),
                c.port,
                c.login.as_str(),
                c.password.as_str()
            ),
            ("0.0.0.0", 0, "u", "p")
        );
        assert_eq!(
            (c.rate, c.block_interval),
            (1.5, Duration::from_millis(500))
        );
        assert_eq!(c.wallets, ["a", "b", "c"]);
        assert!(c.preload_wallets && c.bench);
        assert_eq!(c.polling_cap, 7);
        assert_eq!(cfg(&["--polling-cap=0"]).polling_cap, 0);
        assert_eq!(
            (c.count, c.start_delay, c.seed),
            (10, Duration::from_millis(250), 9)
        );
        assert!(c.faults.stall);
        assert_eq!(c.faults.drop_after, Some(3));
    }

    #[test]
    fn bad_values_name_the_flag() {
        let flag = |args: &[&str]| parse(args).err().map(|e| e.flag);
        assert_eq!(flag(&["--port", "70000"]), Some("--port".into()));
        assert_eq!(flag(&["--rate", "-1"]), Some("--rate".into()));
        assert_eq!(flag(&["--rate", "NaN"]), Some("--rate".into()));
        assert_eq!(
            flag(&["--block-interval", "x"]),
            Some("--block-interval".into())
        );
        assert_eq!(flag(&["--family", "sol"]), Some("--family".into()));
        assert_eq!(
            flag(&["--coin", "DOGE", "--port", "1"]),
            Some("--family".into())
        );
        assert_eq!(
            flag(&["--coin", "DOGE", "--family", "btc"]),
            Some("--port".into())
        );
        assert_eq!(flag(&["--fault", "explode"]), Some("--fault".into()));
        assert_eq!(flag(&["--bench", "--rate", "0"]), Some("--rate".into()));
        assert_eq!(flag(&["--count"]), Some("--count".into()));
        assert_eq!(flag(&["--polling-cap", "-1"]), Some("--polling-cap".into()));
        assert_eq!(
            flag(&["--polling-cap", "100001"]),
            Some("--polling-cap".into())
        );
        assert_eq!(flag(&["--nope"]), Some("--nope".into()));
        assert_eq!(flag(&["--coin", "B T"]), Some("--coin".into()));
    }

    #[test]
    fn help_and_usage_errors() {
        assert_eq!(parse(&["--coin", "x", "--help"]), Ok(Request::Help));
        assert!(run(&["--help".to_string()]).is_ok());
        let e = run(&["--port".to_string(), "x".to_string()]).unwrap_err();
        assert!(matches!(e, CommandError::Usage(_)), "{e}");
        let e = parse(&["--bench=1"]).unwrap_err();
        assert_eq!(e.problem, args::Problem::UnexpectedValue);
    }

    #[test]
    fn help_lists_every_option() {
        let text = args::options_help(OPTIONS);
        for spec in OPTIONS {
            assert!(text.contains(&format!("--{}", spec.name)), "{}", spec.name);
        }
    }
}
