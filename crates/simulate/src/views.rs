//! Result shapes of the RPC methods, per family (docs/daemon.md, "JSON-RPC calls"): payment
//! requests, transactions and `getinfo`. Pure functions of the chain state.

use super::chain::{Chain, Request, Tx, split_key, status_str};
use super::util::format_amount;
use cryptoworker_base::coins::Family;
use serde_json::{Value, json};

/// An integer amount as a JSON number when it fits in `u64`, else as a decimal string.
fn units(v: u128) -> Value {
    u64::try_from(v).map_or_else(|_| json!(v.to_string()), |n| json!(n))
}

/// `get_request` / `add_request` result.
pub(crate) fn request(chain: &Chain, wallet: &str, r: &Request) -> Value {
    let d = chain.decimals(wallet);
    let amount = format_amount(r.amount, d);
    let mut v = match chain.family {
        Family::Btc => json!({
            "is_lightning": false,
            format!("amount_{}", chain.coin): amount,
            "amount_sat": units(r.amount),
            "message": r.memo,
            "timestamp": r.created,
            "expiry": r.expiry,
            "address": r.address,
            "URI": format!("bitcoin:{}?amount={amount}", r.address),
        }),
        Family::Eth | Family::Xmr => json!({
            "id": r.id,
            "is_lightning": false,
            format!("amount_{}", chain.coin): amount,
            "amount_wei": units(r.amount),
            "message": r.memo,
            "timestamp": r.created,
            "expiration": r.expiry,
            "payment_address": r.payer,
            "address": r.address,
            "contract": split_key(wallet).1,
            "URI": format!("{}:{}?value={amount}", chain.coin.to_lowercase(), r.address),
        }),
    };
    v["request_id"] = json!(r.id);
    v["status"] = json!(r.status);
    v["status_str"] = json!(status_str(r.status));
    v["sent_amount"] = json!(format_amount(r.sent, d));
    v["tx_hashes"] = json!(r.tx_hashes);
    // `confirmations` of the first tx once it is mined, and always once paid (0 while the
    // chain does not know that tx mined, e.g. a request set paid by `sim_set_request`).
    let first = r.tx_hashes.first().and_then(|h| chain.tx(h));
    if r.status == 3 || first.is_some_and(|t| t.height.is_some()) {
        v["confirmations"] = json!(first.map_or(0, |t| chain.confirmations(t)));
    }
    v
}

/// btc family `get_transaction` result: Electrum's deserialised tx plus `confirmations`.
pub(crate) fn btc_tx(chain: &Chain, tx: &Tx) -> Value {
    let fee = 1_000u128;
    let prevout: String = tx.hash.chars().rev().collect();
    json!({
        "txid": tx.hash,
        "version": 2,
        "locktime": 0,
        "inputs": [{
            "prevout_hash": prevout,
            "prevout_n": 0,
            "address": tx.from,
            "value_sats": units(tx.value + fee),
            "sequence": 4_294_967_293u64,
        }],
        "outputs": [{"address": tx.to, "value_sats": units(tx.value), "scriptpubkey": tx.script}],
        "confirmations": chain.confirmations(tx),
    })
}

/// eth/xmr family `gettransaction` result: the chain's tx object plus `confirmations`.
pub(crate) fn chain_tx(chain: &Chain, tx: &Tx) -> Value {
    json!({
        "hash": tx.hash,
        "from": tx.from,
        "to": tx.to,
        "value": units(tx.value),
        "blockNumber": tx.height,
        "contract": split_key(&tx.wallet).1.filter(|_| chain.family == Family::Eth),
        "confirmations": chain.confirmations(tx),
    })
}

/// The lookup answer for a bench push's tx (`0x{scheduled_us:016x}{index:048x}`), which no chain
/// holds: synthesised from the hash, so answering costs no memory. BTC family: one output of 0.1
/// coin to an address derived from `index`; eth/xmr: 0.1 coin to the bench wallet. Always in the
/// mempool (0 confirmations), like a fresh payment.
pub(crate) fn bench_tx(chain: &Chain, hash: &str, index: u64, wallet: &str) -> Value {
    let value = 10u128.pow(chain.decimals(wallet).saturating_sub(1));
    match chain.family {
        Family::Btc => json!({
            "txid": hash,
            "version": 2,
            "locktime": 0,
            "inputs": [],
            "outputs": [{"address": format!("bc1q{index:038x}"), "value_sats": units(value),
                         "scriptpubkey": format!("0014{index:040x}")}],
            "confirmations": 0,
        }),
        Family::Eth | Family::Xmr => json!({
            "hash": hash,
            "from": "0x5a0b54d5dc17e0aadc383d2db43b0a0d3e029c4c",
            "to": split_key(wallet).0,
            "value": units(value),
            "blockNumber": null,
            "contract": split_key(wallet).1.filter(|_| chain.family == Family::Eth),
            "confirmations": 0,
        }),
    }
}

/// `getinfo` result, per family.
pub(crate) fn getinfo(chain: &Chain, loaded: usize) -> Value {
    let h = chain.height;
    let path = format!("/simulated/{}", chain.coin.to_lowercase());
    match chain.family {
        Family::Btc => json!({
            "network": "mainnet", "path": path, "server": "simulated", "blockchain_height": h,
            "server_height": h, "spv_nodes": 8, "connected": true, "auto_connect": true,
            "version": "4.5.0", "fee_estimates": {}, "synchronized": true, "total_wallets": loaded,
        }),
        Family::Eth | Family::Xmr => {
            let mut v = json!({
                "blockchain_height": h, "connected": true, "gas_price": 20_000_000_000u64,
                "path": path, "server": "simulated", "server_height": h, "spv_nodes": 0,
                "synchronized": true, "total_wallets": loaded, "version": "4.5.0",
            });
            if chain.coin == "ETH" {
                v["trace_enabled"] = json!(false);
            }
            v
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::RequestPatch;

    #[test]
    fn btc_request_shape_and_confirmations_once_mined() {
        let mut c = Chain::new("BTC", Family::Btc, &["w".into()], true, 3);
        c.pay_step(0);
        let (w, id) = (
            "w",
            c.pay_step(0)[0].update["address"]
                .as_str()
                .unwrap()
                .to_string(),
        );
        let v = request(&c, w, c.request(w, &id).unwrap());
        assert_eq!(v["request_id"], json!(id));
        assert_eq!(v["status"], 7);
        assert!(v.get("confirmations").is_none());
        assert!(v["amount_BTC"].is_string() && v["amount_sat"].is_u64());
        c.mine();
        let v = request(&c, w, c.request(w, &id).unwrap());
        assert_eq!(
            (v["status"].clone(), v["confirmations"].clone()),
            (json!(3), json!(1))
        );
        let tx = c.tx(v["tx_hashes"][0].as_str().unwrap()).unwrap();
        let t = btc_tx(&c, tx);
        assert_eq!(
            t["outputs"][0]["value_sats"],
            json!(c.request(w, &id).unwrap().amount as u64)
        );
        assert_eq!(t["outputs"][0]["address"], v["address"]);
        assert_eq!(t["confirmations"], 1);
    }

    #[test]
    fn eth_shapes() {
        let mut c = Chain::new("ETH", Family::Eth, &[], false, 3);
        let id = c.add_request("0xa_0xc", 5, "m", 60, 9);
        let v = request(&c, "0xa_0xc", c.request("0xa_0xc", &id).unwrap());
        assert_eq!(v["id"], json!(id));
        assert_eq!(v["amount_ETH"], "0.000005");
        assert_eq!(v["contract"], "0xc");
        assert_eq!(v["address"], "0xa");
        assert_eq!(v["expiration"], 60);
        let info = getinfo(&c, 0);
        assert_eq!(info["blockchain_height"], 20_000_000);
        assert_eq!(info["trace_enabled"], false);
        assert_eq!(
            getinfo(&Chain::new("BTC", Family::Btc, &[], false, 1), 2)["total_wallets"],
            2
        );
    }

    #[test]
    fn paid_request_always_has_confirmations() {
        let mut c = Chain::new("ETH", Family::Eth, &[], false, 3);
        let id = c.add_request("0xa", 5, "", 60, 9);
        let get = |c: &Chain| request(c, "0xa", c.request("0xa", &id).unwrap());
        assert!(get(&c).get("confirmations").is_none());
        let paid = RequestPatch {
            status: Some(3),
            tx_hashes: Some(vec!["0xunknown".into()]),
            ..Default::default()
        };
        c.set_request("0xa", &id, Some(paid), 9);
        assert_eq!(get(&c)["confirmations"], 0);
        c.mine();
        assert_eq!(get(&c)["confirmations"], 0, "an unknown tx is never mined");
    }

    #[test]
    fn huge_amounts_become_strings() {
        assert_eq!(units(5), json!(5));
        assert_eq!(
            units(u128::from(u64::MAX) + 1),
            json!("18446744073709551616")
        );
    }
}
