//! Parsing of one client text message into a typed [`Request`] (docs/protocol.md, "Requests").
//!
//! Sans-io: takes the message text, returns an [`Envelope`] or a [`RequestError`] ready to be
//! sent back with `reply::error`. Nothing here closes a connection.
//!
//! Invariants:
//! - the `id` (string or number) is echoed in every error raised after it could be read;
//! - every list is at most [`MAX_LIST_ENTRIES`] entries of at most [`MAX_ENTRY_BYTES`] bytes, and
//!   every string quoted back in an error message is truncated, so a hostile message never makes
//!   us hold or echo more than a bounded amount beyond the message itself (whose size the
//!   connection limits);
//! - unknown extra fields are ignored (forward compatibility); `null` counts as "absent" for the
//!   optional fields and for `id`.

use serde_json::{Map, Value};
use std::fmt;

/// Most entries accepted in one list field (`events`, `coins`, `wallets`, `addresses`).
pub const MAX_LIST_ENTRIES: usize = 10_000;
/// Longest accepted list entry, `epoch` or string `id`, in bytes.
pub const MAX_ENTRY_BYTES: usize = 512;
/// How much of a client-supplied string is quoted back in an error message.
const QUOTE_LIMIT: usize = 64;

/// The error codes of docs/protocol.md, "Errors".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The text is not JSON.
    InvalidJson,
    /// JSON, but not an object with a string `type`.
    InvalidMessage,
    /// A `type` the worker does not serve.
    UnknownType,
    /// A field has the wrong type, size or value.
    InvalidField,
    /// An event name the worker does not know.
    UnknownEvent,
    /// A coin this worker is not configured for.
    UnknownCoin,
    /// Authentication is required first.
    Unauthorized,
    /// The connection sends faster than its rate limit.
    RateLimited,
}

impl ErrorCode {
    /// The wire name, e.g. `"invalid_json"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidMessage => "invalid_message",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::UnknownEvent => "unknown_event",
            ErrorCode::UnknownCoin => "unknown_coin",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::RateLimited => "rate_limited",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request the worker refuses, with what to tell the client.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestError {
    /// The request's `id`, when it could be read.
    pub id: Option<Value>,
    /// Machine-readable code.
    pub code: ErrorCode,
    /// Human sentence naming the field or value at fault.
    pub message: String,
}

impl RequestError {
    /// An error without an id (set it later with [`RequestError::with_id`]).
    pub fn new(code: ErrorCode, message: impl Into<String>) -> RequestError {
        RequestError {
            id: None,
            code,
            message: message.into(),
        }
    }

    /// The same error echoing `id` (used by callers that validate after parsing, e.g. filters).
    pub fn with_id(mut self, id: Option<Value>) -> RequestError {
        self.id = id;
        self
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for RequestError {}

/// The fields of a `subscribe` request, type-checked but not yet validated against the worker's
/// known events and coins (that is `Filter::from_request`'s job).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubscribeRequest {
    /// Event names (non-empty); `"*"` means every event.
    pub events: Vec<String>,
    /// Coin filter; `None` = every coin.
    pub coins: Option<Vec<String>>,
    /// Wallet filter; `None` = every wallet.
    pub wallets: Option<Vec<String>>,
    /// Address filter; `None` = every address.
    pub addresses: Option<Vec<String>>,
    /// Resume after this sequence number.
    pub since: Option<u64>,
    /// Epoch `since` belongs to; `None` = the current one.
    pub epoch: Option<String>,
}

/// One client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Replace the connection's filter (and maybe resume).
    Subscribe(SubscribeRequest),
    /// Remove these event names (`None`: everything).
    Unsubscribe(Option<Vec<String>>),
    /// Ask for the worker status.
    GetStatus,
    /// Application-level ping.
    Ping,
    /// Authenticate with this token.
    Auth(String),
}

/// A parsed request and the `id` to echo.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The request's `id` (string or number), if given.
    pub id: Option<Value>,
    /// What was asked.
    pub request: Request,
}

/// Parses one client text message.
pub fn parse(text: &str) -> Result<Envelope, RequestError> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        RequestError::new(
            ErrorCode::InvalidJson,
            format!("the message is not valid JSON ({e})"),
        )
    })?;
    let Value::Object(obj) = value else {
        return Err(RequestError::new(
            ErrorCode::InvalidMessage,
            "the message must be a JSON object with a string \"type\"",
        ));
    };
    let id = read_id(&obj)?;
    let request = read_request(&obj).map_err(|e| e.with_id(id.clone()))?;
    Ok(Envelope { id, request })
}

/// Reads `id`: a string or a number; `null` or absent is no id.
/// The `id` of a message that is not otherwise handled (e.g. refused by the rate limiter), so
/// the error can still echo it; `None` when the message has no readable id.
pub fn peek_id(text: &str) -> Option<Value> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(obj)) => read_id(&obj).ok().flatten(),
        _ => None,
    }
}

fn read_id(obj: &Map<String, Value>) -> Result<Option<Value>, RequestError> {
    match obj.get("id") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(Some(Value::Number(n.clone()))),
        Some(Value::String(s)) if s.len() <= MAX_ENTRY_BYTES => Ok(Some(Value::String(s.clone()))),
        Some(Value::String(s)) => Err(invalid(format!(
            "field \"id\" is {} bytes long; at most {MAX_ENTRY_BYTES} are allowed",
            s.len()
        ))),
        Some(other) => Err(invalid(format!(
            "field \"id\" must be a string or a number, not {}",
            kind(other)
        ))),
    }
}

fn read_request(obj: &Map<String, Value>) -> Result<Request, RequestError> {
    let Some(Value::String(ty)) = obj.get("type") else {
        return Err(RequestError::new(
            ErrorCode::InvalidMessage,
            "the message must have a string field \"type\"",
        ));
    };
    match ty.as_str() {
        "subscribe" => read_subscribe(obj).map(Request::Subscribe),
        "unsubscribe" => Ok(Request::Unsubscribe(optional_list(obj, "events")?)),
        "get_status" => Ok(Request::GetStatus),
        "ping" => Ok(Request::Ping),
        "auth" => match obj.get("token") {
            Some(Value::String(t)) => Ok(Request::Auth(t.clone())),
            None | Some(Value::Null) => Err(invalid("field \"token\" is required for \"auth\"")),
            Some(other) => Err(invalid(format!(
                "field \"token\" must be a string, not {}",
                kind(other)
            ))),
        },
        other => Err(RequestError::new(
            ErrorCode::UnknownType,
            format!(
                "unknown request type \"{}\"; expected subscribe, unsubscribe, get_status, ping or auth",
                quote(other)
            ),
        )),
    }
}

fn read_subscribe(obj: &Map<String, Value>) -> Result<SubscribeRequest, RequestError> {
    let events = match optional_list(obj, "events")? {
        None => return Err(invalid("field \"events\" is required for \"subscribe\"")),
        Some(list) if list.is_empty() => {
            return Err(invalid(
                "field \"events\" must not be empty (use [\"*\"] for every event)",
            ));
        }
        Some(list) => list,
    };
    let since = match obj.get("since") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| {
            invalid(format!(
                "field \"since\" must be a non-negative integer, not {}",
                short(v)
            ))
        })?),
    };
    let epoch = match obj.get("epoch") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(bounded("epoch", s)?.to_string()),
        Some(other) => {
            return Err(invalid(format!(
                "field \"epoch\" must be a string, not {}",
                kind(other)
            )));
        }
    };
    Ok(SubscribeRequest {
        events,
        coins: non_empty_list(obj, "coins")?,
        wallets: non_empty_list(obj, "wallets")?,
        addresses: non_empty_list(obj, "addresses")?,
        since,
        epoch,
    })
}

/// An optional filter list: given, it must have at least one entry (omit it to match all).
fn non_empty_list(
    obj: &Map<String, Value>,
    field: &str,
) -> Result<Option<Vec<String>>, RequestError> {
    match optional_list(obj, field)? {
        Some(list) if list.is_empty() => Err(invalid(format!(
            "field \"{field}\" must not be empty; omit it to match every value"
        ))),
        other => Ok(other),
    }
}

/// A list of bounded strings, `None` when absent or `null`.
fn optional_list(
    obj: &Map<String, Value>,
    field: &str,
) -> Result<Option<Vec<String>>, RequestError> {
    let items = match obj.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(invalid(format!(
                "field \"{field}\" must be a list of strings, not {}",
                kind(other)
            )));
        }
    };
    if items.len() > MAX_LIST_ENTRIES {
        return Err(invalid(format!(
            "field \"{field}\" has {} entries; at most {MAX_LIST_ENTRIES} are allowed",
            items.len()
        )));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Value::String(s) = item else {
            return Err(invalid(format!(
                "field \"{field}\" must be a list of strings, but entry {i} is {}",
                kind(item)
            )));
        };
        out.push(bounded(field, s)?.to_string());
    }
    Ok(Some(out))
}

/// Checks one string against [`MAX_ENTRY_BYTES`].
fn bounded<'a>(field: &str, s: &'a str) -> Result<&'a str, RequestError> {
    if s.len() > MAX_ENTRY_BYTES {
        return Err(invalid(format!(
            "field \"{field}\" has an entry of {} bytes; at most {MAX_ENTRY_BYTES} are allowed",
            s.len()
        )));
    }
    Ok(s)
}

fn invalid(message: impl Into<String>) -> RequestError {
    RequestError::new(ErrorCode::InvalidField, message)
}

/// "a number", "an object"... for error sentences.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A short rendering of a value for error sentences (numbers and short strings verbatim).
fn short(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("the string \"{}\"", quote(s)),
        other => kind(other).to_string(),
    }
}

/// At most [`QUOTE_LIMIT`] bytes of `s` (on a char boundary), with "..." when cut.
pub(crate) fn quote(s: &str) -> String {
    if s.len() <= QUOTE_LIMIT {
        return s.to_string();
    }
    let mut end = QUOTE_LIMIT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(text: &str) -> RequestError {
        parse(text).unwrap_err()
    }

    #[test]
    fn parses_a_full_subscribe() {
        let env = parse(
            r#"{"type":"subscribe","id":7,"events":["new_block","*"],"coins":["btc"],
                "wallets":["zpub1"],"addresses":["a1","a2"],"since":42,"epoch":"e1"}"#,
        )
        .unwrap();
        assert_eq!(env.id, Some(json!(7)));
        let Request::Subscribe(s) = env.request else {
            panic!("not a subscribe")
        };
        assert_eq!(s.events, ["new_block", "*"]);
        assert_eq!(s.coins.unwrap(), ["btc"]);
        assert_eq!(s.wallets.unwrap(), ["zpub1"]);
        assert_eq!(s.addresses.unwrap(), ["a1", "a2"]);
        assert_eq!(s.since, Some(42));
        assert_eq!(s.epoch.as_deref(), Some("e1"));
    }

    #[test]
    fn simple_requests_and_null_optionals() {
        let p = |t: &str| parse(t).unwrap().request;
        assert_eq!(p(r#"{"type":"ping"}"#), Request::Ping);
        assert_eq!(p(r#"{"type":"get_status","extra":1}"#), Request::GetStatus);
        assert_eq!(p(r#"{"type":"unsubscribe"}"#), Request::Unsubscribe(None));
        assert_eq!(
            p(r#"{"type":"unsubscribe","events":["new_block"]}"#),
            Request::Unsubscribe(Some(vec!["new_block".into()]))
        );
        assert_eq!(
            p(r#"{"type":"auth","token":"k"}"#),
            Request::Auth("k".into())
        );
        let Request::Subscribe(s) =
            p(r#"{"type":"subscribe","events":["*"],"coins":null,"since":null,"epoch":null}"#)
        else {
            panic!("not a subscribe")
        };
        assert_eq!((s.coins, s.since, s.epoch), (None, None, None));
        let env = parse(r#"{"type":"ping","id":"abc"}"#).unwrap();
        assert_eq!(env.id, Some(json!("abc")));
        assert_eq!(parse(r#"{"type":"ping","id":null}"#).unwrap().id, None);
    }

    #[test]
    fn shape_errors() {
        assert_eq!(err("{nope").code, ErrorCode::InvalidJson);
        assert_eq!(err("").code, ErrorCode::InvalidJson);
        assert_eq!(err("[1,2]").code, ErrorCode::InvalidMessage);
        assert_eq!(err(r#""ping""#).code, ErrorCode::InvalidMessage);
        let e = err(r#"{"id":3}"#);
        assert_eq!((e.code, e.id), (ErrorCode::InvalidMessage, Some(json!(3))));
        assert_eq!(err(r#"{"type":5}"#).code, ErrorCode::InvalidMessage);
        let e = err(r#"{"type":"dance","id":"x"}"#);
        assert_eq!(e.code, ErrorCode::UnknownType);
        assert_eq!(e.id, Some(json!("x")));
        assert!(e.message.contains("dance"), "{}", e.message);
    }

    #[test]
    fn field_errors_name_the_field_and_echo_the_id() {
        // (type, fields after "id":1, field to be named)
        let cases = [
            ("subscribe", "", "events"),
            ("subscribe", r#","events":[]"#, "events"),
            ("subscribe", r#","events":"new_block""#, "events"),
            ("subscribe", r#","events":["a",2]"#, "events"),
            ("subscribe", r#","events":["*"],"since":-1"#, "since"),
            ("subscribe", r#","events":["*"],"since":1.5"#, "since"),
            ("subscribe", r#","events":["*"],"since":"3""#, "since"),
            ("subscribe", r#","events":["*"],"epoch":3"#, "epoch"),
            ("subscribe", r#","events":["*"],"coins":[]"#, "coins"),
            ("subscribe", r#","events":["*"],"wallets":{}"#, "wallets"),
            (
                "subscribe",
                r#","events":["*"],"addresses":[null]"#,
                "addresses",
            ),
            ("unsubscribe", r#","events":7"#, "events"),
            ("auth", "", "token"),
            ("auth", r#","token":5"#, "token"),
        ];
        for (ty, rest, field) in cases {
            let text = format!(r#"{{"type":"{ty}","id":1{rest}}}"#);
            let e = err(&text);
            assert_eq!(
                (e.code, e.id.clone()),
                (ErrorCode::InvalidField, Some(json!(1)))
            );
            let named = e.message.contains(&format!("\"{field}\""));
            assert!(named, "{text}: {}", e.message);
        }
        for text in [
            r#"{"type":"ping","id":true}"#,
            r#"{"type":"ping","id":[1]}"#,
        ] {
            let e = err(text);
            assert_eq!((e.code, e.id.clone()), (ErrorCode::InvalidField, None));
            assert!(e.message.contains("\"id\""), "{}", e.message);
        }
    }

    #[test]
    fn sizes_are_bounded() {
        let many: Vec<String> = (0..=MAX_LIST_ENTRIES).map(|i| format!("a{i}")).collect();
        let text = json!({"type":"subscribe","events":["*"],"addresses":many}).to_string();
        let e = err(&text);
        assert_eq!(e.code, ErrorCode::InvalidField);
        assert!(e.message.contains("10000"), "{}", e.message);

        let exactly: Vec<String> = many[..MAX_LIST_ENTRIES].to_vec();
        let text = json!({"type":"subscribe","events":["*"],"addresses":exactly}).to_string();
        assert!(parse(&text).is_ok());

        let long = "x".repeat(MAX_ENTRY_BYTES + 1);
        for field in ["events", "coins", "wallets", "addresses"] {
            let text = json!({"type":"subscribe","events":["*"],field:[long]}).to_string();
            assert_eq!(err(&text).code, ErrorCode::InvalidField, "{field}");
        }
        let text = json!({"type":"subscribe","events":["*"],"epoch":long}).to_string();
        assert_eq!(err(&text).code, ErrorCode::InvalidField);
        let text = json!({"type":"ping","id":long}).to_string();
        assert_eq!(err(&text).code, ErrorCode::InvalidField);
        let ok = "x".repeat(MAX_ENTRY_BYTES);
        let text = json!({"type":"subscribe","events":[ok]}).to_string();
        assert!(parse(&text).is_ok());
    }

    #[test]
    fn quoted_values_are_truncated() {
        let name = "é".repeat(200);
        let e = err(&json!({"type": name}).to_string());
        assert!(e.message.len() < 200, "{}", e.message);
        assert!(e.message.contains("..."));
    }

    #[test]
    fn error_codes_have_wire_names() {
        use ErrorCode::*;
        let all = [
            (InvalidJson, "invalid_json"),
            (InvalidMessage, "invalid_message"),
            (UnknownType, "unknown_type"),
            (InvalidField, "invalid_field"),
            (UnknownEvent, "unknown_event"),
            (UnknownCoin, "unknown_coin"),
            (Unauthorized, "unauthorized"),
            (RateLimited, "rate_limited"),
        ];
        for (code, name) in all {
            assert_eq!(code.as_str(), name);
        }
    }
}
