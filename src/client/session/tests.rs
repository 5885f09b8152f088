//! Table-driven tests of the session core: messages in, actions out. Resume, replay and the
//! startup/durability-gate regression are in `tests/resume.rs`.

mod resume;

use super::*;
use serde_json::json;

const KEYS: &[&str] = &["k1"];

fn limits() -> SessionLimits {
    SessionLimits {
        rate_limit: 1000.0,
        rate_burst: 1000.0,
        ping_interval: Duration::from_secs(30),
        auth_timeout: Duration::from_secs(10),
    }
}

fn keys(with: bool) -> Vec<String> {
    if with {
        KEYS.iter().map(|k| k.to_string()).collect()
    } else {
        Vec::new()
    }
}

/// A stream with nothing released yet, in epoch "E".
fn empty_ring() -> Ring {
    Ring::new(16)
}

fn ctx<'a>(keys: &'a [String], coins: &'a [String], ring: &'a Ring) -> Context<'a> {
    Context {
        api_keys: keys,
        known_coins: coins,
        stream: StreamView {
            epoch: "E",
            last_seq: ring.last_seq().unwrap_or(0),
            ring,
            event_log: false,
        },
        filter: None,
    }
}

fn coins() -> Vec<String> {
    vec!["BTC".to_string(), "ETH".to_string()]
}

fn text(v: serde_json::Value) -> Incoming {
    Incoming::Text(v.to_string())
}

/// A compact, comparable description of actions: `reply:pong`, `reply:error:unauthorized`,
/// `status`, `filter`, `clear`, `query:2..4`, `flush`, `ping`, `close:1008`, `drop`,
/// `count:AuthFailure`.
pub(super) fn describe(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .map(|a| match a {
            Action::Reply(t) => {
                let v: serde_json::Value = serde_json::from_str(t).unwrap();
                match v["error"]["code"].as_str() {
                    Some(code) => format!("reply:error:{code}"),
                    None => format!("reply:{}", v["type"].as_str().unwrap_or("?")),
                }
            }
            Action::ReplyStatus(_) => "status".into(),
            Action::SetFilter(_) => "filter".into(),
            Action::ClearFilter => "clear".into(),
            Action::QueryEventLog { after, up_to, .. } => format!("query:{after}..{up_to}"),
            Action::Flush => "flush".into(),
            Action::Ping => "ping".into(),
            Action::Close { code, .. } => format!("close:{code}"),
            Action::Drop { .. } => "drop".into(),
            Action::Count(t) => format!("count:{t:?}"),
        })
        .collect()
}

#[test]
fn authentication() {
    let ping = json!({"type": "ping", "id": 1});
    let auth = |t: &str| json!({"type": "auth", "token": t});
    let sub = json!({"type": "subscribe", "events": ["*"]});
    #[rustfmt::skip]
    type Case = (&'static str, bool, bool, Vec<serde_json::Value>, Vec<&'static str>);
    let table: Vec<Case> = vec![
        (
            "no keys: served at once",
            false,
            true,
            vec![ping.clone()],
            vec!["reply:pong"],
        ),
        (
            "no keys: auth is answered",
            false,
            true,
            vec![auth("x")],
            vec!["reply:authenticated"],
        ),
        (
            "key on the upgrade",
            true,
            true,
            vec![ping.clone()],
            vec!["reply:pong"],
        ),
        (
            "required: refused before auth",
            true,
            false,
            vec![ping.clone(), sub.clone()],
            vec!["reply:error:unauthorized", "reply:error:unauthorized"],
        ),
        (
            "required: right token, then served",
            true,
            false,
            vec![auth("k1"), ping.clone()],
            vec!["reply:authenticated", "reply:pong"],
        ),
        (
            "required: wrong token closes 1008",
            true,
            false,
            vec![auth("k2")],
            vec![
                "count:AuthFailure",
                "reply:error:unauthorized",
                "close:1008",
            ],
        ),
        (
            "authed: a wrong token still closes",
            true,
            true,
            vec![auth("nope")],
            vec![
                "count:AuthFailure",
                "reply:error:unauthorized",
                "close:1008",
            ],
        ),
    ];
    let ring = empty_ring();
    let coins = coins();
    for (what, with_keys, authed, messages, want) in table {
        let keys = keys(with_keys);
        let t0 = Instant::now();
        let mut s = Session::new(limits(), authed, Duration::ZERO, t0);
        let mut got = Vec::new();
        for m in messages {
            got.extend(describe(&s.on_message(
                text(m),
                t0,
                &ctx(&keys, &coins, &ring),
            )));
        }
        assert_eq!(got, want, "{what}");
    }
}

#[test]
fn authentication_deadline() {
    let t0 = Instant::now();
    let (auth_timeout, interval) = (limits().auth_timeout, limits().ping_interval);
    let mut s = Session::new(limits(), false, Duration::ZERO, t0);
    assert_eq!(s.next_wake(), t0 + auth_timeout);
    assert!(s.on_tick(t0 + auth_timeout / 2).is_empty());
    let got = describe(&s.on_tick(t0 + auth_timeout));
    assert_eq!(got, ["count:AuthFailure", "close:1008"]);
    // Authenticated in time: the deadline is gone, only idle pings remain.
    let mut s = Session::new(limits(), false, Duration::ZERO, t0);
    let (keys, coins, ring) = (keys(true), coins(), empty_ring());
    let auth = text(json!({"type": "auth", "token": "k1"}));
    s.on_message(auth, t0, &ctx(&keys, &coins, &ring));
    assert!(s.is_authed());
    assert!(s.on_tick(t0 + auth_timeout).is_empty());
    assert_eq!(s.next_wake(), t0 + interval);
}

#[test]
fn rate_limit_rejects_then_closes_4029() {
    let t0 = Instant::now();
    let tight = SessionLimits {
        rate_limit: 1.0,
        rate_burst: 2.0,
        ..limits()
    };
    let mut s = Session::new(tight, true, Duration::ZERO, t0);
    let (keys, coins, ring) = (keys(false), coins(), empty_ring());
    let ping = || text(json!({"type": "ping", "id": "p"}));
    let mut got = Vec::new();
    for _ in 0..5 {
        let actions = s.on_message(ping(), t0, &ctx(&keys, &coins, &ring));
        if let Some(Action::Reply(t)) = actions.iter().find(|a| matches!(a, Action::Reply(_))) {
            let v: serde_json::Value = serde_json::from_str(t).unwrap();
            assert_eq!(
                v["id"], "p",
                "the id is echoed, also when rate limited: {t}"
            );
        }
        got.push(describe(&actions).join(" "));
    }
    let want = [
        "reply:pong",
        "reply:pong",
        "count:RateLimited reply:error:rate_limited",
        "count:RateLimited reply:error:rate_limited",
        "count:RateLimitClose close:4029",
    ];
    assert_eq!(got, want);
    // A second later one token is back.
    let later = s.on_message(
        ping(),
        t0 + Duration::from_secs(1),
        &ctx(&keys, &coins, &ring),
    );
    assert_eq!(describe(&later), ["reply:pong"]);
}

#[test]
fn requests_and_errors() {
    #[rustfmt::skip]
    type Case = (&'static str, Incoming, Vec<&'static str>);
    let table: Vec<Case> = vec![
        ("ping", text(json!({"type": "ping"})), vec!["reply:pong"]),
        (
            "get_status",
            text(json!({"type": "get_status", "id": 3})),
            vec!["status"],
        ),
        (
            "unknown type",
            text(json!({"type": "dance"})),
            vec!["reply:error:unknown_type"],
        ),
        (
            "not JSON",
            Incoming::Text("{nope".into()),
            vec!["reply:error:invalid_json"],
        ),
        (
            "no type",
            text(json!({"id": 1})),
            vec!["reply:error:invalid_message"],
        ),
        (
            "binary",
            Incoming::Binary,
            vec!["reply:error:invalid_message"],
        ),
        ("a WebSocket pong", Incoming::Pong, vec![]),
        (
            "subscribe",
            text(json!({"type": "subscribe", "events": ["new_block"], "coins": ["btc"]})),
            vec!["reply:subscribed", "filter"],
        ),
        (
            "unknown coin",
            text(json!({"type": "subscribe", "events": ["*"], "coins": ["DOGE"]})),
            vec!["reply:error:unknown_coin"],
        ),
        (
            "unknown event",
            text(json!({"type": "subscribe", "events": ["new_cat"]})),
            vec!["reply:error:unknown_event"],
        ),
        (
            "empty events",
            text(json!({"type": "subscribe", "events": []})),
            vec!["reply:error:invalid_field"],
        ),
        (
            "unsubscribe, nothing subscribed",
            text(json!({"type": "unsubscribe"})),
            vec!["reply:unsubscribed"],
        ),
    ];
    let (keys, coins, ring) = (keys(false), coins(), empty_ring());
    for (what, msg, want) in table {
        let t0 = Instant::now();
        let mut s = Session::new(limits(), true, Duration::ZERO, t0);
        let got = s.on_message(msg, t0, &ctx(&keys, &coins, &ring));
        assert_eq!(describe(&got), want, "{what}");
    }
}

#[test]
fn subscribe_replies_with_the_effective_filter_and_installs_it() {
    let t0 = Instant::now();
    let (keys, coins, ring) = (keys(false), coins(), empty_ring());
    let mut s = Session::new(limits(), true, Duration::ZERO, t0);
    let req = json!({"type": "subscribe", "id": "s", "events": ["new_block", "new_payment"],
        "coins": ["eth"], "addresses": ["bc1qA"]});
    let got = s.on_message(text(req), t0, &ctx(&keys, &coins, &ring));
    let [Action::Reply(reply), Action::SetFilter(filter)] = got.as_slice() else {
        panic!("{got:?}");
    };
    let v: serde_json::Value = serde_json::from_str(reply).unwrap();
    assert_eq!(v["id"], "s");
    assert_eq!(v["events"], json!(["new_block", "new_payment"]));
    assert_eq!(v["coins"], json!(["ETH"]));
    assert_eq!(v["wallets"], json!(["*"]));
    assert_eq!(
        (v["epoch"].as_str(), v["seq"].as_u64()),
        (Some("E"), Some(0))
    );
    assert!(v.get("resumed").is_none(), "no since, no resumed: {v}");
    assert_eq!(filter.events(), ["new_block", "new_payment"]);
    assert!(s.takes_live());
}

#[test]
fn unsubscribe_narrows_or_clears_the_installed_filter() {
    let req = SubscribeRequest {
        events: vec!["new_block".into(), "new_payment".into()],
        ..Default::default()
    };
    let installed = Filter::from_request(&req, &coins()).unwrap();
    #[rustfmt::skip]
    type Case = (serde_json::Value, Vec<&'static str>, serde_json::Value);
    let table: Vec<Case> = vec![
        (
            json!({"type": "unsubscribe", "events": ["new_block"]}),
            vec!["filter", "reply:unsubscribed"],
            json!(["new_payment"]),
        ),
        (
            json!({"type": "unsubscribe"}),
            vec!["clear", "reply:unsubscribed"],
            json!([]),
        ),
        (
            json!({"type": "unsubscribe", "events": ["new_block", "new_payment"]}),
            vec!["clear", "reply:unsubscribed"],
            json!([]),
        ),
    ];
    let (keys, coins, ring) = (keys(false), coins(), empty_ring());
    for (msg, want, still) in table {
        let t0 = Instant::now();
        let mut s = Session::new(limits(), true, Duration::ZERO, t0);
        let mut c = ctx(&keys, &coins, &ring);
        c.filter = Some(&installed);
        let got = s.on_message(text(msg.clone()), t0, &c);
        assert_eq!(describe(&got), want, "{msg}");
        let Some(Action::Reply(t)) = got.last() else {
            panic!("{got:?}")
        };
        let v: serde_json::Value = serde_json::from_str(t).unwrap();
        assert_eq!(v["events"], still, "{msg}");
    }
}

#[test]
fn idle_pings_and_their_timeout() {
    let interval = limits().ping_interval;
    let offset = Duration::from_secs(2);
    let t0 = Instant::now();
    let s = |at: u64| t0 + Duration::from_secs(at);
    // (step, at second, what happens)
    #[rustfmt::skip]
    type Case = (&'static str, u64, Vec<&'static str>);
    let table: [Case; 7] = [
        ("tick", 10, vec![]),
        ("tick", 31, vec![]), // the per-connection offset delays the ping
        ("tick", 32, vec!["ping"]),
        ("tick", 40, vec![]),  // one ping outstanding, not another
        ("heard", 41, vec![]), // a pong (or any message) answers it
        ("tick", 73, vec!["ping"]),
        ("tick", 103, vec!["drop"]),
    ];
    let mut session = Session::new(limits(), true, offset, t0);
    assert_eq!(session.next_wake(), t0 + interval + offset);
    for (step, at, want) in table {
        let got = match step {
            "heard" => {
                session.heard(s(at));
                Vec::new()
            }
            _ => session.on_tick(s(at)),
        };
        assert_eq!(describe(&got), want, "{step} at {at}s");
    }
    assert_eq!(session.next_wake(), s(73) + interval, "waits for the pong");
}
