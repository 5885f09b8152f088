//! The `/spec` document of each daemon family and the mapping of error messages to JSON-RPC codes,
//! done the way the real daemons do it (docs/daemon.md, "How daemons answer"): the code of an
//! exception is found by case-insensitive substring match of its message against the family's
//! `electrum_map`, falling back to -32603. That is why "Request not found" is -32003 on the btc
//! family and -32603 on the eth/xmr families.

use cryptoworker_base::coins::Family;
use serde_json::{Map, Value, json};

/// A JSON-RPC error to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RpcError {
    pub code: i64,
    pub message: String,
}

impl RpcError {
    /// A framework error with a fixed code.
    pub(crate) fn fixed(code: i64, message: &str) -> RpcError {
        RpcError {
            code,
            message: message.to_string(),
        }
    }

    /// -32700: the body is not JSON.
    pub(crate) fn parse() -> RpcError {
        RpcError::fixed(-32700, "Parse error")
    }

    /// -32601: no such method.
    pub(crate) fn not_found() -> RpcError {
        RpcError::fixed(-32601, "Procedure not found")
    }

    /// -32000: the method needs a wallet and none was given.
    pub(crate) fn wallet_required() -> RpcError {
        RpcError::fixed(-32000, "Wallet not loaded")
    }

    /// -32600: bad or missing credentials.
    pub(crate) fn unauthorized() -> RpcError {
        RpcError::fixed(-32600, "Unauthorized")
    }

    /// An exception raised by a method: its code comes from the family's `electrum_map`.
    pub(crate) fn exception(family: Family, coin: &str, message: &str) -> RpcError {
        RpcError {
            code: map_code(family, coin, message),
            message: message.to_string(),
        }
    }
}

fn exc(name: &str, doc: &str) -> Value {
    json!({"exc_name": name, "docstring": doc})
}

fn btc_spec(coin: &str) -> Value {
    let mut map = json!({
        "wallet not loaded": -32000,
        "should be a transaction hash": -32001,
        "No such mempool or blockchain transaction": -32002,
        "Request not found": -32003,
        "Invalid Bitcoin address": -32004,
        "Insufficient funds": -32006,
        "Invalid node ID": -32007,
        "Remove the existing wallet first!": -32008,
        "Wrong Lightning invoice HRP": -32009,
        "No path found": -32010,
        "Lightning not supported in this wallet type": -32011,
        "Invoice not found": -32012,
        "wallet version": -32013,
        "No such config key": -32014,
    });
    if matches!(coin, "BCH" | "XRG") {
        map["invalid checksum in address"] = json!(-32004);
    }
    json!({
        "version": "4.5.0",
        "electrum_map": map,
        "exceptions": {
            "-32601": exc("ProcedureNotFoundError", "Procedure not found"),
            "-32000": exc("WalletNotLoadedError", "Wallet not loaded. No xpub was provided and this function requires wallet"),
            "-32001": exc("InvalidTxHashError", "Invalid tx hash provided"),
            "-32002": exc("TxNotFoundError", "No such mempool or blockchain transaction"),
            "-32003": exc("RequestNotFoundError", "Payment request not found"),
            "-32004": exc("InvalidAddressError", "Invalid address or alias"),
            "-32005": exc("LoadingWalletError", "Error loading wallet: seed or key not recognized"),
            "-32006": exc("NotEnoughFundsError", "Insufficient funds"),
            "-32007": exc("InvalidNodeIDError", "Invalid node ID"),
            "-32008": exc("WalletExistsError", "This wallet already exists"),
            "-32009": exc("InvalidLightningInvoiceError", "Invalid lightning invoice"),
            "-32010": exc("NoPathFoundError", "No path found to pay the invoice"),
            "-32011": exc("LightningUnsupportedError", "Lightning not supported in this wallet type"),
            "-32012": exc("InvoiceNotFoundError", "Invoice not found"),
            "-32013": exc("WalletVersionMismatchError", "Wallet version mismatch"),
            "-32014": exc("NoConfigKeyError", "No such config key"),
        },
        "capabilities": {"lightning": false},
    })
}

fn eth_spec(coin: &str, family: Family) -> Value {
    let mut spec = json!({
        "version": "4.5.0",
        "electrum_map": {
            "Procedure not found": -32601,
            "wallet not loaded": -32000,
            "error loading wallet": -32000,
            "NotImplementedError": -32602,
            "it must be a hex string": -32001,
            "TransactionNotFound": -32002,
            "The private key must be exactly": -32003,
            "No message specified": -32004,
            "Invalid key provided": -32005,
            "This is a watching-only wallet": -32006,
            "This wallet has no seed words": -32007,
            "Invalid transaction": -32008,
            "Invalid contract address or non-ERC20 token": -32009,
            "Contract ABI is missing": -32010,
            "Invalid arguments for": -32011,
            "Invalid mix of transaction fee params": -32012,
        },
        "exceptions": {
            "-32601": exc("ProcedureNotFoundError", "Procedure not found"),
            "-32602": exc("NotImplementedError", "Not implemented"),
            "-32000": exc("WalletNotLoadedError", "Wallet not loaded. No address was provided and this function requires wallet"),
            "-32001": exc("InvalidHexStringError", "Invalid hex string provided"),
            "-32002": exc("TxNotFoundError", "No such blockchain transaction"),
            "-32003": exc("PrivateKeyRequiredError", "This function requires signing capabilities, but no private key was provided"),
            "-32004": exc("NoMessageSpecifiedError", "Please specify a message to sign"),
            "-32005": exc("InvalidKeyProvidedError", "Invalid key provided. We support seed, private, public keys and address directly as a key"),
            "-32006": exc("WatchOnlyWalletError", "This is a watch-only wallet. Please restore from seed or private key to use wallet functions"),
            "-32007": exc("NoSeedError", "This wallet has no seed words. Please restore from seed"),
            "-32008": exc("InvalidTransactionError", "Invalid transaction"),
            "-32009": exc("InvalidContractAddressError", "Invalid contract address or non-ERC20 token"),
            "-32010": exc("NoSuchContractFunctionError", "Contract ABI is missing this function"),
            "-32011": exc("InvalidContractArgumentsError", "Invalid arguments for this contract function"),
            "-32012": exc("InvalidFeeParametersError", "Invalid mix of transaction fee params"),
        },
    });
    if family == Family::Xmr {
        spec["electrum_map"]["Invalid tx hash"] = json!(-32001);
        spec["electrum_map"]["Transaction not found"] = json!(-32002);
    }
    if coin == "TRX" {
        spec["electrum_map"]["Unexpected format"] = json!(-32013);
        spec["exceptions"]["-32013"] = exc("UnexpectedFormatError", "Unexpected format");
    }
    spec
}

/// The `/spec` document of a daemon for `coin` of `family`.
pub(crate) fn spec(family: Family, coin: &str) -> Value {
    match family {
        Family::Btc => btc_spec(coin),
        Family::Eth | Family::Xmr => eth_spec(coin, family),
    }
}

/// The code of an exception message: first `electrum_map` key (case-insensitive) contained in
/// the message, else -32603.
pub(crate) fn map_code(family: Family, coin: &str, message: &str) -> i64 {
    let spec = spec(family, coin);
    let lower = message.to_lowercase();
    let empty = Map::new();
    let map = spec["electrum_map"].as_object().unwrap_or(&empty);
    map.iter()
        .find(|(k, _)| lower.contains(&k.to_lowercase()))
        .and_then(|(_, v)| v.as_i64())
        .unwrap_or(-32603)
}

/// The message a family's daemon raises for an unknown transaction.
pub(crate) fn tx_not_found(family: Family, hash: &str) -> String {
    match family {
        Family::Btc => {
            "No such mempool or blockchain transaction. Use gettransaction for wallet transactions."
                .into()
        }
        Family::Eth => format!("TransactionNotFound: Transaction with hash: '{hash}' not found."),
        Family::Xmr => "Transaction not found".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_not_found_code_depends_on_family() {
        assert_eq!(
            map_code(Family::Btc, "BTC", "Exception: Request not found"),
            -32003
        );
        assert_eq!(
            map_code(Family::Eth, "ETH", "Exception: Request not found"),
            -32603
        );
        assert_eq!(map_code(Family::Xmr, "XMR", "Request not found"), -32603);
    }

    #[test]
    fn matching_is_case_insensitive_substring() {
        assert_eq!(
            map_code(Family::Btc, "BTC", "Error: WALLET NOT LOADED yet"),
            -32000
        );
        assert_eq!(
            map_code(Family::Btc, "BTC", &tx_not_found(Family::Btc, "ab")),
            -32002
        );
        assert_eq!(
            map_code(Family::Eth, "ETH", &tx_not_found(Family::Eth, "0xab")),
            -32002
        );
        assert_eq!(
            map_code(Family::Xmr, "XMR", &tx_not_found(Family::Xmr, "ab")),
            -32002
        );
        assert_eq!(map_code(Family::Btc, "BTC", "something else"), -32603);
    }

    #[test]
    fn specs_carry_version_exceptions_and_capabilities() {
        let btc = spec(Family::Btc, "BTC");
        assert_eq!(btc["version"], "4.5.0");
        assert_eq!(
            btc["exceptions"]["-32003"]["exc_name"],
            "RequestNotFoundError"
        );
        assert_eq!(btc["capabilities"]["lightning"], false);
        let eth = spec(Family::Eth, "ETH");
        assert_eq!(
            eth["exceptions"]["-32003"]["exc_name"],
            "PrivateKeyRequiredError"
        );
        assert!(eth.get("capabilities").is_none());
        assert_eq!(
            spec(Family::Eth, "TRX")["exceptions"]["-32013"]["exc_name"],
            "UnexpectedFormatError"
        );
        assert_eq!(
            spec(Family::Xmr, "XMR")["electrum_map"]["Invalid tx hash"],
            -32001
        );
        assert_eq!(
            spec(Family::Btc, "BCH")["electrum_map"]["invalid checksum in address"],
            -32004
        );
    }

    #[test]
    fn framework_errors_have_fixed_codes() {
        assert_eq!(RpcError::parse().code, -32700);
        assert_eq!(RpcError::not_found().code, -32601);
        assert_eq!(RpcError::wallet_required().code, -32000);
        assert_eq!(
            RpcError::unauthorized(),
            RpcError {
                code: -32600,
                message: "Unauthorized".into()
            }
        );
    }
}
