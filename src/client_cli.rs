//! `cryptoworker client`: connects to a worker, subscribes, and prints every message it receives
//! (one JSON document per line on stdout).

use serde_json::{Value, json};
use std::process::ExitCode;

const HELP: &str = "Usage: cryptoworker client [FLAGS]

Connects to a worker, subscribes and prints events, one JSON message per line.

Flags:
  --url URL            worker address (default ws://$WORKER_HOST:$WORKER_PORT/, i.e. ws://127.0.0.1:8082/)
  --events a,b         event names to subscribe to (default *: every event)
  --coins a,b          only these coins
  --wallets a,b        only these wallets
  --addresses a,b      only events that carry one of these addresses
  --since N            resume after sequence number N
  --epoch E            the epoch N belongs to (default: the current one)
  --token KEY          API key (sent as an auth message)
  --count N            exit after N events (default: run until interrupted)
";

/// Runs the client command.
pub fn run(args: &[String]) -> ExitCode {
    if crate::cli::wants_help(args) {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    }
    match parse(args).and_then(|opts| stream(&opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cryptoworker client: {e}");
            ExitCode::from(1)
        }
    }
}

#[derive(Debug, Default)]
struct Options {
    url: String,
    subscribe: serde_json::Map<String, Value>,
    token: Option<String>,
    count: Option<u64>,
}

fn list(v: &str) -> Value {
    json!(
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
    )
}

fn parse(args: &[String]) -> Result<Options, String> {
    let host = std::env::var("WORKER_HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let port = std::env::var("WORKER_PORT").unwrap_or_else(|_| "8082".into());
    let mut o = Options {
        url: format!("ws://{host}:{port}/"),
        ..Options::default()
    };
    o.subscribe.insert("type".into(), json!("subscribe"));
    o.subscribe.insert("events".into(), json!(["*"]));
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or(format!("{name} needs a value"))
        };
        match name {
            "--url" => o.url = value()?,
            "--events" | "--coins" | "--wallets" | "--addresses" => {
                o.subscribe.insert(name[2..].to_string(), list(&value()?));
            }
            "--since" => {
                let v = value()?;
                let n: u64 = v
                    .parse()
                    .map_err(|_| format!("--since: {v:?} is not a sequence number"))?;
                o.subscribe.insert("since".into(), json!(n));
            }
            "--epoch" => {
                o.subscribe.insert("epoch".into(), json!(value()?));
            }
            "--token" => o.token = Some(value()?),
            "--count" => {
                let v = value()?;
                o.count = Some(
                    v.parse()
                        .map_err(|_| format!("--count: {v:?} is not a number"))?,
                );
            }
            other => {
                return Err(format!(
                    "unknown flag {other:?} (see cryptoworker client --help)"
                ));
            }
        }
    }
    Ok(o)
}

fn stream(o: &Options) -> Result<(), String> {
    let (mut ws, _) = tungstenite::connect(o.url.as_str())
        .map_err(|e| format!("cannot connect to {}: {e}", o.url))?;
    eprintln!("connected to {}", o.url);
    let send = |ws: &mut tungstenite::WebSocket<_>, v: Value| {
        ws.send(tungstenite::Message::text(v.to_string()))
            .map_err(|e| e.to_string())
    };
    if let Some(t) = &o.token {
        send(&mut ws, json!({"type": "auth", "token": t}))?;
    }
    send(&mut ws, Value::Object(o.subscribe.clone()))?;
    let mut events = 0u64;
    loop {
        match ws.read() {
            Ok(tungstenite::Message::Text(t)) => {
                println!("{}", t.as_str());
                if t.as_str().starts_with("{\"type\":\"event\"") {
                    events += 1;
                    if o.count.is_some_and(|c| events >= c) {
                        let _ = ws.close(None);
                        return Ok(());
                    }
                }
            }
            Ok(tungstenite::Message::Close(f)) => {
                return match f {
                    Some(f) => Err(format!(
                        "worker closed the connection: {} {}",
                        u16::from(f.code),
                        f.reason
                    )),
                    None => Err("worker closed the connection".into()),
                };
            }
            Ok(_) => {}
            Err(e) => return Err(format!("connection lost: {e}")),
        }
    }
}
