//! Server messages other than events (docs/protocol.md): each a JSON text with `"type"` first and
//! `"timestamp"` last (Unix seconds with exactly three decimals), echoing the request `id` when
//! one was given.
//!
//! Sans-io: these functions only build strings; the connection frames and queues them.

use super::filter::Filter;
use super::request::{ErrorCode, RequestError};
use crate::event::{format_timestamp, now_unix};
use serde_json::{Value, json};

/// Builds `{"type":..,"id":..,<fields>,"timestamp":..}` in that order.
struct Reply {
    text: String,
}

impl Reply {
    fn new(kind: &str, id: Option<&Value>) -> Reply {
        let mut r = Reply {
            text: format!("{{\"type\":{}", Value::from(kind)),
        };
        if let Some(id) = id {
            r = r.field("id", id);
        }
        r
    }

    fn field(mut self, key: &str, value: &Value) -> Reply {
        self.text.push_str(",\"");
        self.text.push_str(key);
        self.text.push_str("\":");
        self.text.push_str(&value.to_string());
        self
    }

    fn finish_at(mut self, now: f64) -> String {
        self.text.push_str(",\"timestamp\":");
        self.text.push_str(&format_timestamp(now));
        self.text.push('}');
        self.text
    }

    fn finish(self) -> String {
        self.finish_at(now_unix())
    }
}

/// `subscribed`: the effective filter, the epoch, the last assigned `seq`, and `resumed` only
/// when the request had `since`.
pub fn subscribed(
    id: Option<&Value>,
    filter: &Filter,
    epoch: &str,
    seq: u64,
    resumed: Option<bool>,
) -> String {
    let mut r = Reply::new("subscribed", id)
        .field("events", &json!(filter.events()))
        .field("coins", &json!(filter.coins()))
        .field("wallets", &json!(filter.wallets()))
        .field("addresses", &json!(filter.addresses()))
        .field("epoch", &json!(epoch))
        .field("seq", &json!(seq));
    if let Some(resumed) = resumed {
        r = r.field("resumed", &json!(resumed));
    }
    r.finish()
}

/// `unsubscribed` with the event names still subscribed.
pub fn unsubscribed(id: Option<&Value>, events: &[String]) -> String {
    Reply::new("unsubscribed", id)
        .field("events", &json!(events))
        .finish()
}

/// `pong`.
pub fn pong(id: Option<&Value>) -> String {
    Reply::new("pong", id).finish()
}

/// `authenticated`.
pub fn authenticated(id: Option<&Value>) -> String {
    Reply::new("authenticated", id).finish()
}

/// `status` with its `data` object.
pub fn status(id: Option<&Value>, data: Value) -> String {
    Reply::new("status", id).field("data", &data).finish()
}

/// `error` for a refused request (its id echoed when known).
pub fn error(err: &RequestError) -> String {
    error_code(err.id.as_ref(), err.code, &err.message)
}

/// `error` from its parts (e.g. `unauthorized`, `rate_limited`).
pub fn error_code(id: Option<&Value>, code: ErrorCode, message: &str) -> String {
    Reply::new("error", id)
        .field("error", &json!({"code": code.as_str(), "message": message}))
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::request::SubscribeRequest;

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    fn timestamp_ok(text: &str) {
        let v = parse(text);
        let t = v["timestamp"].as_f64().unwrap();
        assert!(t > 1.6e9, "{text}");
        let raw = text
            .rsplit("\"timestamp\":")
            .next()
            .unwrap()
            .trim_end_matches('}');
        let decimals = raw.split('.').nth(1).map_or(0, str::len);
        assert!(decimals <= 3, "{raw}");
        assert!(text.starts_with("{\"type\":"), "{text}");
    }

    #[test]
    fn subscribed_echoes_the_filter() {
        let req = SubscribeRequest {
            events: vec!["new_block".into()],
            coins: Some(vec!["btc".into()]),
            ..Default::default()
        };
        let f = Filter::from_request(&req, &["BTC".to_string()]).unwrap();
        let text = subscribed(Some(&json!(5)), &f, "ep", 12, Some(true));
        timestamp_ok(&text);
        let v = parse(&text);
        assert_eq!(v["type"], "subscribed");
        assert_eq!(v["id"], 5);
        assert_eq!(v["events"], json!(["new_block"]));
        assert_eq!(v["coins"], json!(["BTC"]));
        assert_eq!(v["wallets"], json!(["*"]));
        assert_eq!(v["addresses"], json!(["*"]));
        assert_eq!(v["epoch"], "ep");
        assert_eq!(v["seq"], 12);
        assert_eq!(v["resumed"], true);
        let v = parse(&subscribed(None, &f, "ep", 0, None));
        assert!(v.get("resumed").is_none() && v.get("id").is_none());
    }

    #[test]
    fn simple_replies() {
        let id = json!("abc");
        for (text, kind) in [
            (pong(Some(&id)), "pong"),
            (authenticated(Some(&id)), "authenticated"),
            (
                unsubscribed(Some(&id), &["new_block".into()]),
                "unsubscribed",
            ),
            (status(Some(&id), json!({"running": true})), "status"),
        ] {
            timestamp_ok(&text);
            let v = parse(&text);
            assert_eq!(v["type"], kind);
            assert_eq!(v["id"], "abc");
        }
        assert_eq!(parse(&unsubscribed(None, &[]))["events"], json!([]));
        assert_eq!(parse(&status(None, json!({"x": 1})))["data"]["x"], 1);
        assert!(parse(&pong(None)).get("id").is_none());
    }

    #[test]
    fn errors() {
        let e = RequestError::new(ErrorCode::InvalidField, "field \"since\" \"bad\"")
            .with_id(Some(json!(9)));
        let text = error(&e);
        timestamp_ok(&text);
        let v = parse(&text);
        assert_eq!(v["type"], "error");
        assert_eq!(v["id"], 9);
        assert_eq!(v["error"]["code"], "invalid_field");
        assert_eq!(v["error"]["message"], "field \"since\" \"bad\"");
        let v = parse(&error_code(None, ErrorCode::RateLimited, "slow down"));
        assert_eq!(v["error"]["code"], "rate_limited");
        assert!(v.get("id").is_none());
    }

    #[test]
    fn timestamp_has_three_decimals() {
        assert!(
            Reply::new("pong", None)
                .finish_at(1640995200.1)
                .ends_with(":1640995200.100}")
        );
    }
}
