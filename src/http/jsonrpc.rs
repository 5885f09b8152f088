//! The JSON-RPC 2.0 envelope spoken by Bitcart daemons, and the per-daemon error table served
//! at `GET /spec`.
//!
//! Invariants: decoding never panics on any byte string; error codes are interpreted per daemon
//! through [`ErrorSpec`] (the same code means different things on BTC-like and ETH-like daemons),
//! and a spec that fails validation is rejected so the caller keeps [`ErrorSpec::fallback`].

use super::HttpError;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fmt;

/// A JSON-RPC error object: `{"code": ..., "message": ...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    /// The numeric code; its meaning depends on the daemon's family (see [`ErrorSpec`]).
    pub code: i64,
    /// The daemon's message, typically the last line of a Python exception.
    pub message: String,
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JSON-RPC error {}: {}", self.code, self.message)
    }
}

impl std::error::Error for RpcError {}

/// What a JSON-RPC call answered.
#[derive(Debug, Clone, PartialEq)]
pub enum RpcOutcome {
    /// The `result` member (possibly `null`).
    Result(Value),
    /// The `error` member.
    Error(RpcError),
}

/// The request body `{"id":id,"jsonrpc":"2.0","method":method,"params":params}`, written
/// straight into one buffer (no intermediate map: one is built per lookup).
pub fn rpc_body(id: u64, method: &str, params: Value) -> Vec<u8> {
    use std::io::Write;
    let mut out = Vec::with_capacity(96 + method.len());
    // Writing into a Vec cannot fail, nor can serialising a string or a `Value`.
    let _ = write!(out, "{{\"id\":{id},\"jsonrpc\":\"2.0\",\"method\":");
    let _ = serde_json::to_writer(&mut out, method);
    out.extend_from_slice(b",\"params\":");
    let _ = serde_json::to_writer(&mut out, &params);
    out.push(b'}');
    out
}

/// Decodes a daemon answer: its numeric `id` (`None` for `null`, a string, or absent) and the
/// outcome. A non-null `error` wins over `result`. `Malformed` for non-JSON, a non-object, a
/// malformed `error`, or neither `result` nor `error`.
pub fn decode_rpc_body(body: &[u8]) -> Result<(Option<u64>, RpcOutcome), HttpError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| HttpError::malformed(format!("JSON-RPC body is not JSON: {e}")))?;
    let Value::Object(mut obj) = value else {
        return Err(HttpError::malformed("JSON-RPC body is not an object"));
    };
    let id = obj.get("id").and_then(Value::as_u64);
    match obj.get("error") {
        Some(Value::Null) | None => {}
        Some(error) => return Ok((id, RpcOutcome::Error(parse_error(error)?))),
    }
    match obj.remove("result") {
        Some(result) => Ok((id, RpcOutcome::Result(result))),
        None => Err(HttpError::malformed(
            "JSON-RPC body has neither result nor error",
        )),
    }
}

/// Reads an `error` member; a missing or non-string `message` becomes its JSON text.
fn parse_error(error: &Value) -> Result<RpcError, HttpError> {
    let code = error
        .get("code")
        .and_then(Value::as_i64)
        .ok_or_else(|| HttpError::malformed("JSON-RPC error without an integer code"))?;
    let message = match error.get("message") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    Ok(RpcError { code, message })
}

/// A daemon's error table from `GET /spec`: code -> exception name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorSpec {
    /// The spec's `version` (empty for [`ErrorSpec::fallback`]).
    version: String,
    /// `exceptions[code].exc_name` for every code the daemon declares.
    names: HashMap<i64, String>,
}

/// The exception name Bitcart's SDK uses for an unknown payment request.
const REQUEST_NOT_FOUND: &str = "RequestNotFoundError";
/// The generic code ETH-like daemons use for messages missing from their `electrum_map`.
const INTERNAL_ERROR: i64 = -32603;

impl ErrorSpec {
    /// Parses and validates a `/spec` body like the Bitcart SDK: a JSON object with a string
    /// `version` and an `exceptions` object whose keys are integer codes and whose values are
    /// objects with a string `exc_name`. Anything else is `Malformed`.
    pub fn parse(body: &[u8]) -> Result<ErrorSpec, HttpError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| HttpError::malformed(format!("spec is not JSON: {e}")))?;
        let version = value
            .get("version")
            .and_then(Value::as_str)
            .ok_or_else(|| HttpError::malformed("spec has no string version"))?;
        let exceptions = value
            .get("exceptions")
            .and_then(Value::as_object)
            .ok_or_else(|| HttpError::malformed("spec has no exceptions object"))?;
        Ok(ErrorSpec {
            version: version.to_string(),
            names: parse_exceptions(exceptions)?,
        })
    }

    /// The SDK's fallback until a valid spec is fetched: only `-32600 UnauthorizedError`.
    pub fn fallback() -> ErrorSpec {
        ErrorSpec {
            version: String::new(),
            names: HashMap::from([(-32600, "UnauthorizedError".to_string())]),
        }
    }

    /// The exception name for `code`; `None` means the SDK's `UnknownError`.
    pub fn name(&self, code: i64) -> Option<&str> {
        self.names.get(&code).map(String::as_str)
    }

    /// Whether `e` says the payment request is unknown to the daemon: the spec names its code
    /// `RequestNotFoundError` (BTC family), or it is the generic `-32603` carrying
    /// "Request not found" (ETH family and XMR, whose spec has no entry for that message).
    pub fn is_request_not_found(&self, e: &RpcError) -> bool {
        self.name(e.code) == Some(REQUEST_NOT_FOUND)
            || (e.code == INTERNAL_ERROR
                && e.message.to_ascii_lowercase().contains("request not found"))
    }

    /// The spec's version string (empty for the fallback).
    pub fn version(&self) -> &str {
        &self.version
    }
}

/// Validates the `exceptions` map: integer keys, objects with a string `exc_name`.
fn parse_exceptions(exceptions: &Map<String, Value>) -> Result<HashMap<i64, String>, HttpError> {
    exceptions
        .iter()
        .map(|(code, entry)| {
            let code: i64 = code.trim().parse().map_err(|_| {
                HttpError::malformed(format!("spec code {code:?} is not an integer"))
            })?;
            let name = entry
                .get("exc_name")
                .and_then(Value::as_str)
                .ok_or_else(|| HttpError::malformed(format!("spec code {code} has no exc_name")))?;
            Ok((code, name.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rpc_body_is_the_expected_envelope() {
        let body = rpc_body(7, "get_request", json!(["ab12", {"xpub": "zpub"}]));
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            json!({"jsonrpc":"2.0","id":7,"method":"get_request","params":["ab12",{"xpub":"zpub"}]})
        );
        let quoted = rpc_body(1, "a\"b", json!([]));
        let v: Value = serde_json::from_slice(&quoted).unwrap();
        assert_eq!(v["method"], "a\"b", "the method is escaped");
    }

    #[test]
    fn decodes_results_and_errors() {
        let ok = decode_rpc_body(br#"{"jsonrpc":"2.0","result":{"h":1},"id":3}"#).unwrap();
        assert_eq!(ok, (Some(3), RpcOutcome::Result(json!({"h":1}))));
        let null_result = decode_rpc_body(br#"{"result":null,"error":null,"id":"x"}"#).unwrap();
        assert_eq!(null_result, (None, RpcOutcome::Result(Value::Null)));
        let err = decode_rpc_body(
            br#"{"jsonrpc":"2.0","error":{"code":-32600,"message":"Unauthorized"},"id":null}"#,
        )
        .unwrap();
        let expected = RpcError {
            code: -32600,
            message: "Unauthorized".to_string(),
        };
        assert_eq!(err, (None, RpcOutcome::Error(expected)));
    }

    #[test]
    fn malformed_bodies_are_refused() {
        for body in [
            &b"not json"[..],
            b"[1,2]",
            b"{\"id\":1}",
            b"{\"error\":{\"message\":\"no code\"}}",
            b"{\"error\":\"text\"}",
            b"",
        ] {
            assert!(
                matches!(decode_rpc_body(body), Err(HttpError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    const BTC_SPEC: &[u8] = br#"{"version":"4.5.0",
        "electrum_map":{"Request not found":-32003},
        "exceptions":{"-32003":{"exc_name":"RequestNotFoundError","docstring":"x"},
                      "-32600":{"exc_name":"UnauthorizedError","docstring":"y"}},
        "capabilities":{"lightning":false}}"#;
    const ETH_SPEC: &[u8] = br#"{"version":"4.5.0","electrum_map":{},
        "exceptions":{"-32003":{"exc_name":"PrivateKeyRequiredError","docstring":"x"}}}"#;

    #[test]
    fn spec_names_codes_per_family() {
        let btc = ErrorSpec::parse(BTC_SPEC).unwrap();
        let eth = ErrorSpec::parse(ETH_SPEC).unwrap();
        assert_eq!(btc.version(), "4.5.0");
        assert_eq!(btc.name(-32003), Some("RequestNotFoundError"));
        assert_eq!(eth.name(-32003), Some("PrivateKeyRequiredError"));
        assert_eq!(eth.name(-32099), None);
    }

    #[test]
    fn request_not_found_per_family() {
        let btc = ErrorSpec::parse(BTC_SPEC).unwrap();
        let eth = ErrorSpec::parse(ETH_SPEC).unwrap();
        let err = |code, m: &str| RpcError {
            code,
            message: m.to_string(),
        };
        assert!(btc.is_request_not_found(&err(-32003, "Exception: Request not found")));
        assert!(!eth.is_request_not_found(&err(-32003, "private key required")));
        assert!(eth.is_request_not_found(&err(-32603, "Exception: Request not found")));
        assert!(!eth.is_request_not_found(&err(-32603, "Exception: boom")));
        assert!(!eth.is_request_not_found(&err(-32000, "Request not found")));
    }

    #[test]
    fn invalid_specs_are_refused_and_fallback_knows_unauthorized() {
        for body in [
            &b"{}"[..],
            br#"{"version":4,"exceptions":{}}"#,
            br#"{"version":"1","exceptions":[]}"#,
            br#"{"version":"1","exceptions":{"abc":{"exc_name":"X"}}}"#,
            br#"{"version":"1","exceptions":{"-1":{"docstring":"X"}}}"#,
            b"garbage",
        ] {
            assert!(
                ErrorSpec::parse(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let fallback = ErrorSpec::fallback();
        assert_eq!(fallback.name(-32600), Some("UnauthorizedError"));
        assert_eq!(fallback.name(-32003), None);
        assert_eq!(fallback.version(), "");
    }
}
