//! JSON-RPC method dispatch: the daemon methods the worker and the API use (docs/daemon.md,
//! "JSON-RPC calls") and the `sim_*` admin methods for tests.
//!
//! Invariants: every non-admin call is logged (`sim_rpc_log`); a known method naming a wallet
//! loads it before running; wallet methods without a wallet answer -32000; methods of the other
//! family are unknown (-32601); method exceptions get their code from the family's spec;
//! `get_updates` (both families) drains the named wallet's queue of pushed updates; a bench
//! push's tx hash is answered by `get_transaction`/`gettransaction` (synthesised, see
//! `views::bench_tx`).

use super::chain::{Chain, RequestPatch};
use super::generator::{bench_wallet, decode_bench_tx};
use super::rpc::Call;
use super::shared::Shared;
use super::spec::{self, RpcError};
use super::util::{format_amount, parse_amount, unix_secs};
use super::views;
use cryptoworker_base::coins::Family;
use serde_json::{Value, json};

/// Methods of every family.
const COMMON: &[&str] = &[
    "help",
    "getinfo",
    "add_request",
    "get_request",
    "getrequest",
    "getbalance",
    "setrequestaddress",
    "normalizeaddress",
    "close_wallet",
    "get_updates",
];
/// Methods that need a wallet.
const WALLET_METHODS: &[&str] = &[
    "add_request",
    "get_request",
    "getrequest",
    "getbalance",
    "setrequestaddress",
    "close_wallet",
    "get_updates",
];

/// The family's transaction lookup method.
fn tx_method(family: Family) -> &'static str {
    match family {
        Family::Btc => "get_transaction",
        Family::Eth | Family::Xmr => "gettransaction",
    }
}

fn is_known(family: Family, method: &str) -> bool {
    COMMON.contains(&method) || method == tx_method(family)
}

/// Runs one call (admin or not) and returns its result or error.
pub(crate) fn handle(shared: &Shared, call: &Call) -> Result<Value, RpcError> {
    if call.method.starts_with("sim_") {
        return admin(shared, call);
    }
    let wallet = call.wallet.as_ref().map(|w| w.key.as_str());
    shared.record_call(&call.method, wallet);
    let family = shared.cfg.family;
    if !is_known(family, &call.method) {
        return Err(RpcError::not_found());
    }
    if let Some(w) = wallet
        && !shared.chain().load(w)
    {
        return Err(RpcError::fixed(
            -32005,
            "Error loading wallet: too many wallets loaded",
        ));
    }
    if WALLET_METHODS.contains(&call.method.as_str()) && wallet.is_none() {
        return Err(RpcError::wallet_required());
    }
    daemon_method(shared, call, wallet.unwrap_or_default())
}

fn exception(shared: &Shared, message: &str) -> RpcError {
    RpcError::exception(shared.cfg.family, &shared.cfg.coin, message)
}

fn daemon_method(shared: &Shared, call: &Call, wallet: &str) -> Result<Value, RpcError> {
    let family = shared.cfg.family;
    let mut chain = shared.chain();
    match call.method.as_str() {
        "help" => {
            let mut names: Vec<&str> = COMMON.to_vec();
            names.push(tx_method(family));
            names.sort_unstable();
            Ok(json!(names))
        }
        "getinfo" => Ok(views::getinfo(&chain, chain.loaded().len())),
        "get_transaction" | "gettransaction" => {
            let hash = call.str_arg(0, "txid")?;
            match (chain.tx(hash), decode_bench_tx(hash)) {
                (Some(tx), _) if family == Family::Btc => Ok(views::btc_tx(&chain, tx)),
                (Some(tx), _) => Ok(views::chain_tx(&chain, tx)),
                (None, Some((_, index))) => {
                    let wallet = bench_wallet(&shared.cfg);
                    Ok(views::bench_tx(&chain, hash, index, wallet))
                }
                (None, None) => Err(exception(shared, &spec::tx_not_found(family, hash))),
            }
        }
        "get_request" | "getrequest" => {
            let id = call.str_arg(0, "key")?;
            match chain.request(wallet, id) {
                Some(r) => Ok(views::request(&chain, wallet, r)),
                None => Err(exception(shared, "Request not found")),
            }
        }
        "add_request" => add_request(shared, &mut chain, call, wallet),
        "getbalance" => Ok(balance(&chain, wallet)),
        "setrequestaddress" => {
            let (id, addr) = (call.str_arg(0, "key")?, call.str_arg(1, "address")?);
            if family != Family::Eth {
                return Ok(json!(false));
            }
            if chain.set_payer(wallet, id, addr) {
                Ok(json!(true))
            } else {
                Err(exception(shared, "Request not found"))
            }
        }
        "normalizeaddress" => Ok(json!(call.str_arg(0, "address")?)),
        "close_wallet" => Ok(json!(chain.unload(wallet))),
        "get_updates" => Ok(Value::Array(chain.polling.take(wallet))),
        _ => Err(RpcError::not_found()),
    }
}

/// `add_request(amount, memo, expiry|expiration, force)`: a new open request, queued so the
/// generator pays it next.
fn add_request(
    shared: &Shared,
    chain: &mut Chain,
    call: &Call,
    wallet: &str,
) -> Result<Value, RpcError> {
    let amount = amount_arg(call, chain.decimals(wallet))?;
    let memo = call.arg(1, "memo").and_then(Value::as_str).unwrap_or("");
    let expiry = call
        .arg(2, "expiry")
        .or_else(|| call.kwargs.get("expiration"));
    let expiry = expiry.and_then(Value::as_u64).unwrap_or(900);
    let id = chain.add_request(wallet, amount, memo, expiry, unix_secs());
    chain.queue_payment(wallet, &id);
    let r = chain
        .request(wallet, &id)
        .ok_or_else(|| exception(shared, "Request not found"))?;
    Ok(views::request(chain, wallet, r))
}

/// `getbalance`: totals of paid (confirmed) and unconfirmed requests.
fn balance(chain: &Chain, wallet: &str) -> Value {
    let d = chain.decimals(wallet);
    let (confirmed, unconfirmed) = chain.balance(wallet);
    let mut v = json!({"confirmed": format_amount(confirmed, d), "unconfirmed": format_amount(unconfirmed, d)});
    if chain.family == Family::Btc {
        v["unmatured"] = json!(format_amount(0, d));
        v["lightning"] = json!(format_amount(0, d));
    }
    v
}

fn amount_arg(call: &Call, decimals: u32) -> Result<u128, RpcError> {
    let text = match call.arg(0, "amount") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => {
            return Err(RpcError::fixed(
                -32603,
                "add_request() missing 1 required positional argument: 'amount'",
            ));
        }
    };
    parse_amount(&text, decimals)
        .map_err(|_| RpcError::fixed(-32603, &format!("Invalid amount: {text}")))
}

fn admin(shared: &Shared, call: &Call) -> Result<Value, RpcError> {
    match call.method.as_str() {
        "sim_emit" => {
            let update = call
                .arg(0, "update")
                .ok_or_else(|| bad_params("sim_emit(update, wallet)"))?;
            let wallet = match call.arg(1, "wallet") {
                None | Some(Value::Null) => None,
                Some(Value::String(w)) => Some(w.as_str()),
                Some(_) => return Err(bad_params("wallet must be a string or null")),
            };
            shared.emit(update, wallet);
            Ok(json!(true))
        }
        "sim_emit_raw" => {
            let text = call.str_arg(0, "text")?;
            shared.emit_raw(text.to_string());
            Ok(json!(true))
        }
        "sim_set_fault" => {
            let given = call
                .arg(0, "faults")
                .cloned()
                .unwrap_or_else(|| Value::Object(call.kwargs.clone()));
            let mut faults = shared.faults.load();
            faults.apply_json(&given).map_err(|e| bad_params(&e.0))?;
            shared.set_faults(&faults);
            Ok(faults.to_json())
        }
        "sim_rpc_log" => Ok(json!(shared.rpc_log())),
        "sim_set_request" => set_request(shared, call),
        "sim_state" => Ok(shared.state_json()),
        "sim_mine" => Ok(json!(shared.mine())),
        "sim_pay" => {
            shared.pay_step();
            Ok(json!(true))
        }
        _ => Err(RpcError::not_found()),
    }
}

fn bad_params(why: &str) -> RpcError {
    RpcError::fixed(-32602, &format!("Invalid params: {why}"))
}

/// `sim_set_request(wallet, id, {status, sent_amount, tx_hashes, amount} | null)`.
fn set_request(shared: &Shared, call: &Call) -> Result<Value, RpcError> {
    let wallet = call.str_arg(0, "wallet")?;
    let id = call.str_arg(1, "id")?;
    let mut chain = shared.chain();
    let d = chain.decimals(wallet);
    let patch = match call.arg(2, "state") {
        None | Some(Value::Null) => None,
        Some(Value::Object(o)) => {
            let amount = |k: &str| -> Result<Option<u128>, RpcError> {
                match o.get(k) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(s)) => {
                        parse_amount(s, d).map(Some).map_err(|_| bad_params(k))
                    }
                    Some(Value::Number(n)) => parse_amount(&n.to_string(), d)
                        .map(Some)
                        .map_err(|_| bad_params(k)),
                    Some(_) => Err(bad_params(k)),
                }
            };
            let status = match o.get("status") {
                None => None,
                Some(v) => Some(
                    v.as_u64()
                        .and_then(|s| u8::try_from(s).ok())
                        .ok_or_else(|| bad_params("status"))?,
                ),
            };
            let tx_hashes = match o.get("tx_hashes") {
                None => None,
                Some(v) => Some(
                    serde_json::from_value::<Vec<String>>(v.clone())
                        .map_err(|_| bad_params("tx_hashes"))?,
                ),
            };
            Some(RequestPatch {
                status,
                sent: amount("sent_amount")?,
                amount: amount("amount")?,
                tx_hashes,
            })
        }
        Some(_) => return Err(bad_params("state must be an object or null")),
    };
    let existed = chain.set_request(wallet, id, patch, unix_secs());
    Ok(
        json!({"existed": existed, "request": chain.request(wallet, id).map(|r| views::request(&chain, wallet, r))}),
    )
}
