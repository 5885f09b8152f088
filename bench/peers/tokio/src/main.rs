//! tokio peer relay for the cryptoworker fan-out benchmark: tokio current-thread runtime +
//! tokio-tungstenite.
//!
//! The job, the same for every peer: connect to a Bitcart-style daemon's `/ws` (HTTP Basic
//! auth), turn each update into the client envelope (serialised once per event), and queue the
//! shared bytes to every client whose `subscribe` filter matches. Tuned as a careful user would:
//! one thread, no locks (`Rc<RefCell<Hub>>` on a `LocalSet`), a 4 KiB read buffer per
//! connection, one task per client that feeds every frame ready in its bounded queue and then
//! flushes once (one `write` for a batch), and a slow-consumer policy (full queue: close 4008).

mod hub;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use hub::{Filter, Hub, timestamp};
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Frames queued per client before it counts as a slow consumer (~1 MiB of 300-byte events).
const QUEUE: usize = 4096;

struct Args {
    port: u16,
    host: String,
    daemon: String,
    auth: String,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        port: 0,
        host: "127.0.0.1".into(),
        daemon: String::new(),
        auth: "electrum:electrumz".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--port" => a.port = v.parse().map_err(|_| format!("--port: bad number {v}"))?,
            "--host" => a.host = v,
            "--daemon" => a.daemon = v,
            "--auth" => a.auth = v,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if a.port == 0 || a.daemon.is_empty() {
        return Err(
            "usage: tokio-relay --port Q --daemon ws://HOST:PORT/ws [--auth user:pass] [--host H]"
                .into(),
        );
    }
    Ok(a)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let result = rt.map_err(|e| e.to_string()).and_then(|rt| {
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, serve(args)).map_err(|e| e.to_string())
    });
    if let Err(e) = result {
        eprintln!("tokio-relay: {e}");
        std::process::exit(1);
    }
}

async fn serve(args: Args) -> std::io::Result<()> {
    let hub = Rc::new(RefCell::new(Hub::default()));
    let addr = format!("{}:{}", args.host, args.port)
        .parse()
        .map_err(std::io::Error::other)?;
    let sock = TcpSocket::new_v4()?;
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    let listener = sock.listen(4096)?;
    tokio::task::spawn_local(daemon_loop(args.daemon, args.auth, hub.clone()));
    let mut next_id = 0u64;
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(_) => {
                // Out of descriptors or similar: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        next_id += 1;
        tokio::task::spawn_local(client(stream, next_id, hub.clone()));
    }
}

async fn daemon_loop(url: String, auth: String, hub: Rc<RefCell<Hub>>) {
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(auth)
    );
    loop {
        if let Ok(mut req) = url.as_str().into_client_request()
            && let Ok(value) = basic.parse()
        {
            req.headers_mut().insert("Authorization", value);
            if let Ok((mut ws, _)) = tokio_tungstenite::connect_async(req).await {
                while let Some(Ok(msg)) = ws.next().await {
                    if let Message::Text(t) = msg {
                        hub.borrow_mut().relay_push(&t);
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn client(stream: TcpStream, id: u64, hub: Rc<RefCell<Hub>>) {
    let _ = stream.set_nodelay(true);
    let cfg = WebSocketConfig::default()
        .read_buffer_size(4096)
        .max_message_size(Some(65536));
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(stream, Some(cfg)).await else {
        return;
    };
    let (tx, mut rx) = mpsc::channel::<Message>(QUEUE);
    // Only the hub holds the strong sender, so the queue closes when the hub drops this client.
    let weak = tx.downgrade();
    let mut first_tx = Some(tx);
    let mut subscribed = false;
    loop {
        tokio::select! {
            queued = rx.recv(), if subscribed => {
                let Some(first) = queued else {
                    // The hub dropped us: our queue overflowed.
                    let close = CloseFrame { code: CloseCode::from(4008), reason: "slow consumer".into() };
                    let _ = ws.close(Some(close)).await;
                    break;
                };
                if ws.feed(first).await.is_err() {
                    break;
                }
                let mut ok = true;
                while let Ok(m) = rx.try_recv() {
                    ok = ws.feed(m).await.is_ok();
                    if !ok {
                        break;
                    }
                }
                if !ok || ws.flush().await.is_err() {
                    break;
                }
            }
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Text(t))) => {
                    let (reply, now_subscribed) = request(&t, id, &mut first_tx, &weak, &hub);
                    subscribed |= now_subscribed;
                    if ws.send(Message::Text(reply)).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    hub.borrow_mut().remove(id);
}

fn error(code: &str, message: &str) -> Utf8Bytes {
    json!({"type": "error", "error": {"code": code, "message": message}, "timestamp": timestamp()})
        .to_string()
        .into()
}

/// Answers one client request; a valid subscribe hands the client's queue sender to the hub
/// (the first one, or one upgraded from `weak` on a re-subscribe) and returns `true`.
fn request(
    text: &str,
    id: u64,
    first: &mut Option<mpsc::Sender<Message>>,
    weak: &mpsc::WeakSender<Message>,
    hub: &Rc<RefCell<Hub>>,
) -> (Utf8Bytes, bool) {
    let Ok(msg) = serde_json::from_str::<Value>(text) else {
        return (error("invalid_json", "message is not JSON"), false);
    };
    let reply = match msg.get("type").and_then(Value::as_str) {
        None => error("invalid_message", "expected an object with a type"),
        Some("ping") => json!({"type": "pong", "timestamp": timestamp()})
            .to_string()
            .into(),
        Some("subscribe") => {
            let list = |v: &Value| -> Option<Vec<String>> {
                v.as_array()?
                    .iter()
                    .map(|s| s.as_str().map(String::from))
                    .collect()
            };
            let Some(events) = list(&msg["events"]) else {
                return (
                    error("invalid_field", "events must be a list of strings"),
                    false,
                );
            };
            let coins = match &msg["coins"] {
                Value::Null => None,
                v => match list(v) {
                    Some(c) => Some(c),
                    None => {
                        return (
                            error("invalid_field", "coins must be a list of strings"),
                            false,
                        );
                    }
                },
            };
            let Some(tx) = first.take().or_else(|| weak.upgrade()) else {
                return (
                    error("slow_consumer", "this connection's queue was closed"),
                    false,
                );
            };
            let filter = Filter::new(events, coins);
            let mut hub = hub.borrow_mut();
            let reply = json!({
                "type": "subscribed", "events": filter.events,
                "coins": filter.coins.clone().unwrap_or_else(|| vec!["*".into()]),
                "wallets": ["*"], "addresses": ["*"], "seq": hub.seq, "timestamp": timestamp(),
            });
            hub.subscribe(id, filter, tx);
            return (reply.to_string().into(), true);
        }
        Some(other) => error("unknown_type", &format!("unknown type {other:?}")),
    };
    (reply, false)
}
