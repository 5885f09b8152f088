//! `cryptoworker client`: connects to a worker, subscribes, and prints every message it receives
//! (one JSON document per line on stdout).

use super::CommandError;
use super::args::{self, OptSpec};
use serde_json::{Value, json};

const ABOUT: &str = "Usage: cryptoworker client [OPTIONS]

Connects to a worker, subscribes and prints events, one JSON message per line.
Without options it subscribes to every event of ws://$WORKER_HOST:$WORKER_PORT/.

";

pub(super) const OPTIONS: &[OptSpec] = &[
    args::value(
        "url",
        "URL",
        Some("ws://$WORKER_HOST:$WORKER_PORT/, i.e. ws://127.0.0.1:8082/"),
        "worker address",
    ),
    args::value(
        "events",
        "a,b",
        Some("*: every event"),
        "event names to subscribe to",
    ),
    args::value("coins", "a,b", None, "only these coins"),
    args::value("wallets", "a,b", None, "only these wallets"),
    args::value(
        "addresses",
        "a,b",
        None,
        "only events that carry one of these addresses",
    ),
    args::value("since", "N", None, "resume after sequence number N"),
    args::value(
        "epoch",
        "E",
        Some("the current one"),
        "the epoch N belongs to",
    ),
    args::value("token", "KEY", None, "API key (sent as an auth message)"),
    args::value(
        "count",
        "N",
        Some("run until interrupted"),
        "exit after N events",
    ),
];

/// The text of `cryptoworker client --help`.
pub(super) fn help() -> String {
    format!("{ABOUT}{}", args::options_help(OPTIONS))
}

/// Runs the client command until the worker closes, the connection is lost or `--count` events
/// arrived.
pub fn run(argv: &[String]) -> Result<(), CommandError> {
    let grammar = args::Grammar::table("client", OPTIONS);
    let Some(parsed) = args::parse_or_help(&grammar, argv, help)? else {
        return Ok(());
    };
    let options = options(&parsed)?;
    stream(&options)
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

/// The connection and the subscribe message from the options (the URL defaults to
/// `WORKER_HOST` and `WORKER_PORT`).
fn options(parsed: &args::Parsed) -> Result<Options, args::ArgError> {
    let url = match parsed.last("url") {
        Some(url) => url.to_string(),
        None => {
            let host = std::env::var("WORKER_HOST").unwrap_or_else(|_| "127.0.0.1".into());
            let port = std::env::var("WORKER_PORT").unwrap_or_else(|_| "8082".into());
            format!("ws://{host}:{port}/")
        }
    };
    let mut subscribe = serde_json::Map::new();
    subscribe.insert("type".into(), json!("subscribe"));
    subscribe.insert("events".into(), json!(["*"]));
    for name in ["events", "coins", "wallets", "addresses"] {
        if let Some(v) = parsed.last(name) {
            subscribe.insert(name.into(), list(v));
        }
    }
    if let Some(since) = parsed.number::<u64>("since")? {
        subscribe.insert("since".into(), json!(since));
    }
    if let Some(epoch) = parsed.last("epoch") {
        subscribe.insert("epoch".into(), json!(epoch));
    }
    Ok(Options {
        url,
        subscribe,
        token: parsed.last("token").map(String::from),
        count: parsed.number("count")?,
    })
}

fn stream(o: &Options) -> Result<(), CommandError> {
    let failed = CommandError::Failed;
    let (mut ws, _) = tungstenite::connect(o.url.as_str())
        .map_err(|e| failed(format!("cannot connect to {}: {e}", o.url)))?;
    eprintln!("connected to {}", o.url);
    let send = |ws: &mut tungstenite::WebSocket<_>, v: Value| {
        ws.send(tungstenite::Message::text(v.to_string()))
            .map_err(|e| failed(e.to_string()))
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
                    Some(f) => Err(failed(format!(
                        "worker closed the connection: {} {}",
                        u16::from(f.code),
                        f.reason
                    ))),
                    None => Err(failed("worker closed the connection".into())),
                };
            }
            Ok(_) => {}
            Err(e) => return Err(failed(format!("connection lost: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(list: &[&str]) -> Result<Options, args::ArgError> {
        let grammar = args::Grammar::table("client", OPTIONS);
        let argv: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        options(&args::parse(&grammar, &argv)?)
    }

    #[test]
    fn options_build_the_subscription() {
        let o = parse(&[
            "--url=ws://h:1/",
            "--events",
            "a, b",
            "--coins=btc",
            "--since",
            "7",
            "--epoch=e1",
            "--token",
            "k",
            "--count=3",
        ])
        .unwrap();
        assert_eq!(o.url, "ws://h:1/");
        let want = json!({"type": "subscribe", "events": ["a", "b"], "coins": ["btc"],
            "since": 7, "epoch": "e1"});
        assert_eq!(Value::Object(o.subscribe), want);
        assert_eq!((o.token.as_deref(), o.count), (Some("k"), Some(3)));
    }

    #[test]
    fn bad_numbers_and_unknown_options_are_refused() {
        assert_eq!(parse(&["--since=x"]).unwrap_err().flag, "--since");
        assert_eq!(parse(&["--count", "-1"]).unwrap_err().flag, "--count");
        assert_eq!(parse(&["--nope"]).unwrap_err().flag, "--nope");
    }
}
