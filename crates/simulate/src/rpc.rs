//! JSON-RPC request parsing and response encoding, the extended JSON-RPC 2.0 of Bitcart's daemons
//! (docs/daemon.md, "JSON-RPC calls" and "How daemons answer"). Sans-io: bytes in, typed call or
//! error out.
//!
//! Rules: the body is one JSON object (`jsonrpc` is not checked, batches are refused);
//! `params` is a list whose trailing object holds keyword args, or an object of keyword args;
//! the keyword `xpub` (string, `null`, or `{"xpub","contract",...}`) picks the wallet, whose key
//! is `xpub` or `xpub_contract`. An empty `xpub` means no wallet, as in Python. Admin `sim_*`
//! methods get their `params` verbatim (a list stays a list, an object becomes the kwargs).

use super::spec::RpcError;
use serde_json::{Map, Value, json};

/// The wallet a call names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WalletRef {
    /// `xpub` or `xpub_contract`: the key events carry.
    pub key: String,
    pub xpub: String,
    pub contract: Option<String>,
}

/// A parsed call.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Call {
    /// Echoed in the answer (`null` when absent).
    pub id: Value,
    pub method: String,
    pub args: Vec<Value>,
    /// Keyword args without `xpub`.
    pub kwargs: Map<String, Value>,
    pub wallet: Option<WalletRef>,
}

impl Call {
    /// The argument at `index`, or the keyword `name`.
    pub(crate) fn arg(&self, index: usize, name: &str) -> Option<&Value> {
        self.args.get(index).or_else(|| self.kwargs.get(name))
    }

    /// A required string argument; a missing one is the Python `TypeError` (-32603).
    pub(crate) fn str_arg(&self, index: usize, name: &str) -> Result<&str, RpcError> {
        match self.arg(index, name) {
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(RpcError::fixed(
                -32603,
                &format!("{}: {name} must be a string", self.method),
            )),
            None => Err(RpcError::fixed(
                -32603,
                &format!(
                    "{}() missing 1 required positional argument: '{name}'",
                    self.method
                ),
            )),
        }
    }
}

/// Parses a request body. On failure, returns the id to echo (if one was readable) and the error.
pub(crate) fn parse_call(body: &[u8]) -> Result<Call, (Value, RpcError)> {
    let value: Value =
        serde_json::from_slice(body).map_err(|_| (Value::Null, RpcError::parse()))?;
    let Value::Object(mut obj) = value else {
        return Err((
            Value::Null,
            RpcError::fixed(-32600, "Invalid Request: expected an object"),
        ));
    };
    let id = obj.remove("id").unwrap_or(Value::Null);
    let method = match obj.remove("method") {
        Some(Value::String(m)) if !m.is_empty() => m,
        _ => return Err((id, RpcError::not_found())),
    };
    let params = obj.remove("params");
    if method.starts_with("sim_") {
        let (args, kwargs) = match params {
            Some(Value::Array(a)) => (a, Map::new()),
            Some(Value::Object(o)) => (Vec::new(), o),
            _ => (Vec::new(), Map::new()),
        };
        return Ok(Call {
            id,
            method,
            args,
            kwargs,
            wallet: None,
        });
    }
    let (args, mut kwargs) = split_params(params).map_err(|e| (id.clone(), e))?;
    let wallet = take_wallet(&mut kwargs).map_err(|e| (id.clone(), e))?;
    Ok(Call {
        id,
        method,
        args,
        kwargs,
        wallet,
    })
}

/// Splits `params` into positional args and keyword args.
pub(crate) fn split_params(
    params: Option<Value>,
) -> Result<(Vec<Value>, Map<String, Value>), RpcError> {
    match params {
        None | Some(Value::Null) => Ok((Vec::new(), Map::new())),
        Some(Value::Object(kwargs)) => Ok((Vec::new(), kwargs)),
        Some(Value::Array(mut args)) => {
            let kwargs = match args.last() {
                Some(Value::Object(_)) => match args.pop() {
                    Some(Value::Object(m)) => m,
                    _ => Map::new(),
                },
                _ => Map::new(),
            };
            Ok((args, kwargs))
        }
        Some(_) => Err(RpcError::fixed(
            -32603,
            "Invalid params: expected a list or an object",
        )),
    }
}

/// Removes `xpub` from the kwargs and resolves the wallet it names.
pub(crate) fn take_wallet(kwargs: &mut Map<String, Value>) -> Result<Option<WalletRef>, RpcError> {
    let (xpub, contract) = match kwargs.remove("xpub") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => (s, None),
        Some(Value::Object(mut o)) => {
            let xpub = match o.remove("xpub") {
                None | Some(Value::Null) => return Ok(None),
                Some(Value::String(s)) => s,
                Some(_) => return Err(loading_error("xpub must be a string")),
            };
            let contract = match o.remove("contract") {
                None | Some(Value::Null) => None,
                Some(Value::String(c)) if c.is_empty() => None,
                Some(Value::String(c)) => Some(c),
                Some(_) => return Err(loading_error("contract must be a string")),
            };
            (xpub, contract)
        }
        Some(_) => return Err(loading_error("xpub must be a string or an object")),
    };
    if xpub.is_empty() {
        return Ok(None);
    }
    let key = match &contract {
        Some(c) => format!("{xpub}_{c}"),
        None => xpub.clone(),
    };
    Ok(Some(WalletRef {
        key,
        xpub,
        contract,
    }))
}

fn loading_error(why: &str) -> RpcError {
    RpcError::fixed(-32005, &format!("Error loading wallet: {why}"))
}

/// A success answer.
pub(crate) fn success(id: &Value, result: Value) -> String {
    json!({"jsonrpc": "2.0", "result": result, "id": id}).to_string()
}

/// An error answer.
pub(crate) fn failure(id: &Value, err: &RpcError) -> String {
    json!({"jsonrpc": "2.0", "error": {"code": err.code, "message": err.message}, "id": id})
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(body: &str) -> Call {
        parse_call(body.as_bytes()).expect("valid call")
    }

    #[test]
    fn list_params_with_trailing_kwargs() {
        let c = call(
            r#"{"jsonrpc":"2.0","id":2,"method":"get_request","params":["ab12cd34ef",{"xpub":"zpub6r"}]}"#,
        );
        assert_eq!(c.id, json!(2));
        assert_eq!(c.method, "get_request");
        assert_eq!(c.args, vec![json!("ab12cd34ef")]);
        assert!(c.kwargs.is_empty());
        assert_eq!(c.wallet.map(|w| w.key), Some("zpub6r".to_string()));
    }

    #[test]
    fn object_params_and_null_xpub() {
        let c = call(r#"{"id":1,"method":"help","params":{"xpub":null}}"#);
        assert_eq!(c.wallet, None);
        let c = call(
            r#"{"id":4,"method":"add_request","params":{"amount":"0.1","expiry":900,"xpub":"z"}}"#,
        );
        assert_eq!(c.arg(0, "amount"), Some(&json!("0.1")));
        assert_eq!(c.arg(1, "expiry"), Some(&json!(900)));
        assert_eq!(c.wallet.map(|w| w.xpub), Some("z".to_string()));
        assert!(call(r#"{"method":"help"}"#).args.is_empty());
        assert_eq!(
            call(r#"{"method":"getinfo","params":{"xpub":""}}"#).wallet,
            None
        );
    }

    #[test]
    fn object_xpub_with_contract_makes_token_key() {
        let c = call(
            r#"{"method":"getrequest","params":["J",{"xpub":{"xpub":"0xAbC","contract":"0xdAC","diskless":true}}]}"#,
        );
        let w = c.wallet.expect("wallet");
        assert_eq!(w.key, "0xAbC_0xdAC");
        assert_eq!(w.contract.as_deref(), Some("0xdAC"));
        let c =
            call(r#"{"method":"getbalance","params":{"xpub":{"xpub":"0xAbC","contract":null}}}"#);
        assert_eq!(c.wallet.map(|w| w.key), Some("0xAbC".to_string()));
    }

    #[test]
    fn bad_bodies_get_the_right_codes() {
        let code = |b: &str| parse_call(b.as_bytes()).err().map(|(_, e)| e.code);
        assert_eq!(code("not json"), Some(-32700));
        assert_eq!(code("[1,2]"), Some(-32600));
        assert_eq!(code(r#"{"id":1}"#), Some(-32601));
        assert_eq!(code(r#"{"method":5}"#), Some(-32601));
        assert_eq!(code(r#"{"method":"x","params":5}"#), Some(-32603));
        assert_eq!(code(r#"{"method":"x","params":{"xpub":5}}"#), Some(-32005));
        assert_eq!(
            code(r#"{"method":"x","params":{"xpub":{"xpub":"a","contract":1}}}"#),
            Some(-32005)
        );
        let (id, _) = parse_call(br#"{"id":"q","method":"x","params":7}"#)
            .err()
            .unwrap();
        assert_eq!(id, json!("q"));
    }

    #[test]
    fn admin_params_are_taken_verbatim() {
        let c = call(r#"{"method":"sim_emit","params":[{"event":"x","xpub":"k"}]}"#);
        assert_eq!(c.args, vec![json!({"event":"x","xpub":"k"})]);
        assert_eq!(c.wallet, None);
        let c = call(r#"{"method":"sim_set_fault","params":{"stall":true}}"#);
        assert_eq!(c.kwargs.get("stall"), Some(&json!(true)));
    }

    #[test]
    fn missing_argument_is_a_type_error() {
        let c = call(r#"{"method":"get_request","params":{"xpub":"z"}}"#);
        let e = c.str_arg(0, "key").unwrap_err();
        assert_eq!(e.code, -32603);
        assert!(e.message.contains("missing 1 required positional argument"));
        let c = call(r#"{"method":"get_request","params":[5]}"#);
        assert!(c.str_arg(0, "key").is_err());
    }

    #[test]
    fn answers_are_jsonrpc_envelopes() {
        let ok: Value = serde_json::from_str(&success(&json!(3), json!(true))).unwrap();
        assert_eq!(ok, json!({"jsonrpc":"2.0","result":true,"id":3}));
        let err: Value =
            serde_json::from_str(&failure(&Value::Null, &RpcError::unauthorized())).unwrap();
        assert_eq!(
            err,
            json!({"jsonrpc":"2.0","error":{"code":-32600,"message":"Unauthorized"},"id":null})
        );
    }
}
