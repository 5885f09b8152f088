//! `cryptoworker simulate` command line: flags to [`SimConfig`], run until SIGINT/SIGTERM,
//! stop gracefully. Bad flag values exit 2 with a message naming the flag; a start failure
//! (port in use) exits 1.

use super::polling::MAX_POLLING_CAP;
use super::{SimConfig, SimHandle};
use crate::config::Family;
use crate::config::{default_family, default_port};
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const USAGE: &str = "\
cryptoworker simulate: a simulated Bitcart coin daemon (POST / JSON-RPC, GET /ws events, GET /spec)

USAGE: cryptoworker simulate [FLAGS]

  --coin SYMBOL            coin symbol, also the events' currency (default BTC)
  --family btc|eth|xmr     protocol family (default: from the coin; required for other coins)
  --host ADDR              bind address (default 127.0.0.1)
  --port N                 port, 0 = ephemeral (default: the coin's Bitcart port, BTC 5000)
  --login L --password P   HTTP Basic credentials (default electrum / electrumz)
  --rate R                 events per second from payment flows, 0 = blocks only (default 2);
                           with --bench: pushes per second
  --block-interval S       seconds between blocks, 0 = only via sim_mine (default 10)
  --wallets K1,K2          wallet keys (xpub or xpub_contract) the generator pays into;
                           wallets loaded by any RPC are added
  --preload-wallets        treat --wallets as loaded at start (no RPC needed for events)
  --polling-cap N          pushed updates each loaded wallet keeps for get_updates (global
                           ones copied to all), 0 = no queues, at most 100000 (default 100)
  --bench                  open-loop stream of new_transaction pushes for the first wallet,
                           push i due at start + i/rate, tx = 0x{scheduled_us:016x}{i:048x}
  --count N                bench pushes to send, 0 = forever (default 0)
  --start-delay-ms N       wait before the first bench push (default 0)
  --fault NAME[=VALUE]     refuse_auth | stall | reset | drop_after=N | rpc_delay_ms=N
                           (repeatable; also settable at run time with sim_set_fault)
  --seed N                 seed for ids and amounts (default: from the clock)
  --help                   this text

get_updates (needs a wallet, like get_request) returns the wallet's queue and clears it.
Admin JSON-RPC methods (same endpoint and auth): sim_emit(update, wallet|null),
sim_emit_raw(text), sim_set_fault({..}), sim_rpc_log(), sim_set_request(wallet, id, {status,
sent_amount, tx_hashes}|null), sim_state(), sim_mine(), sim_pay().
Runs until SIGINT or SIGTERM, then closes WebSockets with 1001 and exits 0.
";

/// A refused flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CliError {
    pub flag: String,
    pub message: String,
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid {}: {}", self.flag, self.message)
    }
}

fn err<T>(flag: &str, message: impl Into<String>) -> Result<T, CliError> {
    Err(CliError {
        flag: flag.to_string(),
        message: message.into(),
    })
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Parsed {
    Help,
    Run(Box<SimConfig>),
}

const VALUE_FLAGS: &[&str] = &[
    "--coin",
    "--family",
    "--host",
    "--port",
    "--login",
    "--password",
    "--rate",
    "--block-interval",
    "--wallets",
    "--polling-cap",
    "--count",
    "--start-delay-ms",
    "--fault",
    "--seed",
];
const BOOL_FLAGS: &[&str] = &["--preload-wallets", "--bench", "--help", "-h"];

/// Splits the arguments into (flag, value) pairs.
fn pairs(args: &[String]) -> Result<Vec<(String, Option<String>)>, CliError> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        if VALUE_FLAGS.contains(&flag.as_str()) {
            let value = match inline {
                Some(v) => v,
                None => match it.next() {
                    Some(v) => v.clone(),
                    None => return err(&flag, "needs a value"),
                },
            };
            out.push((flag, Some(value)));
        } else if BOOL_FLAGS.contains(&flag.as_str()) && inline.is_none() {
            out.push((flag, None));
        } else {
            return err(&flag, "unknown flag (see --help)");
        }
    }
    Ok(out)
}

fn number<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, CliError> {
    v.trim()
        .parse()
        .or_else(|_| err(flag, format!("'{v}' is not a valid number")))
}

fn seconds(flag: &str, v: &str) -> Result<Duration, CliError> {
    let s: f64 = number(flag, v)?;
    if !s.is_finite() || s < 0.0 {
        return err(flag, "must be a number of seconds >= 0");
    }
    Ok(Duration::from_secs_f64(s))
}

/// Parses the arguments after `simulate`.
pub(crate) fn parse_args(args: &[String]) -> Result<Parsed, CliError> {
    let pairs = pairs(args)?;
    if pairs.iter().any(|(f, _)| f == "--help" || f == "-h") {
        return Ok(Parsed::Help);
    }
    let get = |name: &str| {
        pairs
            .iter()
            .rev()
            .find(|(f, _)| f == name)
            .and_then(|(_, v)| v.clone())
    };
    let coin = get("--coin")
        .unwrap_or_else(|| "BTC".into())
        .trim()
        .to_ascii_uppercase();
    if coin.is_empty() || !coin.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return err("--coin", "must be a symbol such as BTC");
    }
    let mut cfg = SimConfig::new(&coin);
    cfg.family = match get("--family")
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("btc") => Family::Btc,
        Some("eth") => Family::Eth,
        Some("xmr") => Family::Xmr,
        Some(other) => return err("--family", format!("'{other}' is not btc, eth or xmr")),
        None => match default_family(&coin) {
            Some(f) => f,
            None => {
                return err(
                    "--family",
                    format!("required for {coin}, which is not a known coin"),
                );
            }
        },
    };
    cfg.port = match get("--port") {
        Some(p) => number("--port", &p)?,
        None => match default_port(&coin) {
            Some(p) => p,
            None => {
                return err(
                    "--port",
                    format!("required for {coin}, which has no default port"),
                );
            }
        },
    };
    apply_rest(&mut cfg, &pairs)?;
    Ok(Parsed::Run(Box::new(cfg)))
}

fn apply_rest(cfg: &mut SimConfig, pairs: &[(String, Option<String>)]) -> Result<(), CliError> {
    for (flag, value) in pairs {
        let v = value.as_deref().unwrap_or("");
        match flag.as_str() {
            "--host" if v.trim().is_empty() => return err(flag, "must not be empty"),
            "--host" => cfg.host = v.trim().to_string(),
            "--login" => cfg.login = v.to_string(),
            "--password" => cfg.password = v.to_string(),
            "--rate" => {
                cfg.rate = number(flag, v)?;
                if !cfg.rate.is_finite() || cfg.rate < 0.0 {
                    return err(flag, "must be a number >= 0");
                }
            }
            "--block-interval" => cfg.block_interval = seconds(flag, v)?,
            "--wallets" => {
                cfg.wallets = v
                    .split(',')
                    .map(str::trim)
                    .filter(|w| !w.is_empty())
                    .map(String::from)
                    .collect();
            }
            "--preload-wallets" => cfg.preload_wallets = true,
            "--polling-cap" => {
                cfg.polling_cap = number(flag, v)?;
                if cfg.polling_cap > MAX_POLLING_CAP {
                    return err(flag, format!("must be at most {MAX_POLLING_CAP}"));
                }
            }
            "--bench" => cfg.bench = true,
            "--count" => cfg.count = number(flag, v)?,
            "--start-delay-ms" => cfg.start_delay = Duration::from_millis(number(flag, v)?),
            "--seed" => cfg.seed = number(flag, v)?,
            "--fault" => cfg.faults.apply_flag(v).or_else(|e| err(flag, e.0))?,
            _ => {}
        }
    }
    if cfg.bench && cfg.rate <= 0.0 {
        return err("--rate", "must be > 0 with --bench");
    }
    Ok(())
}

fn init_logging() {
    let level = std::env::var("LOG_LEVEL")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(log::LevelFilter::Info);
    // Fails harmlessly when the binary already installed a logger.
    let _ = simplelog::TermLogger::init(
        level,
        simplelog::Config::default(),
        simplelog::TerminalMode::Stderr,
        simplelog::ColorChoice::Auto,
    );
}

/// Runs `cryptoworker simulate` with the arguments after `simulate`.
pub fn run_cli(args: &[String]) -> ExitCode {
    let cfg = match parse_args(args) {
        Ok(Parsed::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Run(cfg)) => *cfg,
        Err(e) => {
            eprintln!("cryptoworker simulate: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging();
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(signal, stop.clone()) {
            eprintln!("[SIMULATE] cannot install signal handler: {e}");
            return ExitCode::from(1);
        }
    }
    let coin = cfg.coin.clone();
    let handle = match SimHandle::start(cfg) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("[SIMULATE] cannot start the {coin} daemon: {e}");
            return ExitCode::from(1);
        }
    };
    println!("[SIMULATE] {coin} daemon listening on {}", handle.addr());
    let _ = std::io::stdout().flush();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("[SIMULATE] {coin} daemon shutting down");
    handle.stop();
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Parsed, CliError> {
        parse_args(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    fn cfg(args: &[&str]) -> SimConfig {
        match parse(args) {
            Ok(Parsed::Run(c)) => *c,
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
    fn help_and_cli_exit_codes() {
        assert_eq!(parse(&["--coin", "x", "--help"]), Ok(Parsed::Help));
        assert_eq!(run_cli(&["--help".to_string()]), ExitCode::SUCCESS);
        assert_eq!(
            run_cli(&["--port".to_string(), "x".to_string()]),
            ExitCode::from(2)
        );
    }
}
