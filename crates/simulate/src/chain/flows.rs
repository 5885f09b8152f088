//! The payment flows of the simulated chain: picking what to pay, putting transactions in the
//! mempool, mining blocks and settling requests, with the family rules listed in the parent
//! module. Every update goes through `push`, which drops updates for unloaded wallets.

use super::{Chain, Emit, MAX_MEMPOOL, Request, Tx, split_key, status_str};
use crate::util;
use cryptoworker_base::coins::Family;
use serde_json::{Value, json};

impl Chain {
    fn push(&self, out: &mut Vec<Emit>, wallet: &str, update: Value) {
        if self.loaded.contains(wallet) {
            out.push(Emit {
                wallet: Some(wallet.to_string()),
                update,
            });
        }
    }

    /// The `new_payment` update for a request, shaped per family.
    fn payment_update(&self, wallet: &str, r: &Request) -> Value {
        let mut u = json!({
            "event": "new_payment",
            "address": r.id,
            "status": r.status,
            "status_str": status_str(r.status),
            "tx_hashes": r.tx_hashes,
            "sent_amount": util::format_amount(r.sent, self.decimals(wallet)),
        });
        if self.family != Family::Btc {
            u["contract"] = json!(split_key(wallet).1.filter(|_| self.family == Family::Eth));
        }
        u
    }

    /// Picks what to pay next: a queued RPC request, else a fresh request of the next
    /// generation wallet (eth family: one in five is a plain transfer with no request).
    fn pick_payment(&mut self, now: u64) -> Option<(String, Option<String>)> {
        while let Some((w, id)) = self.to_pay.pop_front() {
            if self
                .request(&w, &id)
                .is_some_and(|r| r.status == 0 && r.tx_hashes.is_empty())
            {
                return Some((w, Some(id)));
            }
        }
        if self.candidates.is_empty() {
            return None;
        }
        let w = self.candidates[self.next_candidate % self.candidates.len()].clone();
        self.next_candidate = self.next_candidate.wrapping_add(1);
        if self.family == Family::Eth && self.rng.below(5) == 0 {
            return Some((w, None));
        }
        let amount = self.random_amount(&w);
        let id = self.add_request(&w, amount, "", 900, now);
        if self.family == Family::Eth {
            let payer = self.random_address();
            self.set_payer(&w, &id, &payer);
        }
        Some((w, Some(id)))
    }

    /// Starts one payment flow. btc/xmr: the tx enters the mempool now (events now);
    /// eth: the tx waits for the next block (events then).
    pub(crate) fn pay_step(&mut self, now: u64) -> Vec<Emit> {
        if self.mempool.len() >= MAX_MEMPOOL {
            return Vec::new();
        }
        let Some((wallet, id)) = self.pick_payment(now) else {
            return Vec::new();
        };
        match self.family {
            Family::Eth => {
                self.pay_eth(&wallet, id);
                Vec::new()
            }
            _ => id.map_or_else(Vec::new, |id| self.pay_mempool(&wallet, &id)),
        }
    }

    fn pay_mempool(&mut self, wallet: &str, id: &str) -> Vec<Emit> {
        let hash = self.rng.hex(64);
        let from = (self.family == Family::Btc).then(|| self.random_address());
        let script = format!("0014{}", self.rng.hex(40));
        let Some(r) = self.requests.get_mut(wallet).and_then(|m| m.get_mut(id)) else {
            return Vec::new();
        };
        r.status = 7;
        r.sent = r.amount;
        r.tx_hashes = vec![hash.clone()];
        let (to, value) = (r.address.clone(), r.amount);
        let tx = Tx {
            hash: hash.clone(),
            wallet: wallet.to_string(),
            from,
            to,
            value,
            script,
            height: None,
            request: Some(id.to_string()),
        };
        self.insert_tx(tx);
        self.mempool.push(hash.clone());
        let mut out = Vec::new();
        if let Some(r) = self.request(wallet, id) {
            self.push(&mut out, wallet, self.payment_update(wallet, r));
        }
        self.push(
            &mut out,
            wallet,
            json!({"event": "new_transaction", "tx": hash}),
        );
        out
    }

    fn pay_eth(&mut self, wallet: &str, id: Option<String>) {
        let paying = id
            .as_deref()
            .and_then(|i| self.request(wallet, i))
            .and_then(|r| {
                r.payer
                    .clone()
                    .map(|p| (p, r.amount.saturating_sub(r.sent)))
            });
        let (from, value, request) = match paying {
            Some((payer, due)) => (payer, due, id),
            None => (self.random_address(), self.random_amount(wallet), None),
        };
        let hash = format!("0x{}", self.rng.hex(64));
        let to = split_key(wallet).0.to_string();
        let tx = Tx {
            hash: hash.clone(),
            wallet: wallet.to_string(),
            from: Some(from),
            to,
            value,
            script: String::new(),
            height: None,
            request,
        };
        self.insert_tx(tx);
        self.mempool.push(hash);
    }

    /// Mines one block: `new_block`, then the block's effects on mempool transactions.
    pub(crate) fn mine(&mut self) -> Vec<Emit> {
        self.height += 1;
        let height = self.height;
        let mut out = vec![Emit {
            wallet: None,
            update: json!({"event": "new_block", "height": height}),
        }];
        for hash in std::mem::take(&mut self.mempool) {
            self.confirm(&hash, height, &mut out);
        }
        out
    }

    fn confirm(&mut self, hash: &str, height: u64, out: &mut Vec<Emit>) {
        let Some(tx) = self.txs.get_mut(hash) else {
            return;
        };
        tx.height = Some(height);
        let tx = tx.clone();
        if self.family == Family::Eth {
            let (_, contract) = split_key(&tx.wallet);
            let update = json!({
                "event": "new_transaction", "tx": tx.hash, "from_address": tx.from, "to": tx.to,
                "amount": util::format_amount(tx.value, self.decimals(&tx.wallet)), "contract": contract,
            });
            self.push(out, &tx.wallet, update);
        }
        let settled = tx.request.as_deref().and_then(|id| self.settle(&tx, id));
        if let Some(r) = settled {
            self.push(out, &tx.wallet, self.payment_update(&tx.wallet, &r));
        }
        if self.family == Family::Btc {
            self.push(
                out,
                &tx.wallet,
                json!({"event": "verified_tx", "tx": tx.hash, "height": height}),
            );
        }
    }

    /// Applies a mined tx to its request; returns the request if its state changed.
    fn settle(&mut self, tx: &Tx, id: &str) -> Option<Request> {
        let family = self.family;
        let r = self.requests.get_mut(&tx.wallet)?.get_mut(id)?;
        if family == Family::Eth {
            if r.status == 3 || r.payer != tx.from || r.tx_hashes.contains(&tx.hash) {
                return None;
            }
            r.sent += tx.value;
            r.tx_hashes.push(tx.hash.clone());
        }
        r.status = if r.sent >= r.amount { 3 } else { 0 };
        Some(r.clone())
    }
}
