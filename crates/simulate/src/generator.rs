//! The generator thread: payment flows at `rate` and a block every `block_interval`, or, in
//! bench mode, an open-loop stream of eth-shaped `new_transaction` pushes.
//!
//! Flows: a flow yields 4 updates on the btc family (7 + tx, then 3 + verified), 3 on xmr and
//! about 2 on eth, so flows start every `flow_size / rate` seconds to average `rate` updates/s.
//! Bench: push `i` is due at `start + i/rate` and carries that scheduled time in its tx hash,
//! `0x{scheduled_unix_micros:016x}{i:048x}`, so queueing anywhere counts as latency. Pushes are
//! built straight as text (no JSON tree) and handed to the hub in batches; like every push they
//! are also queued for `get_updates` (the tail of each batch, as the cap keeps no more).

use super::chain::split_key;
use super::hub::Frame;
use super::shared::Shared;
use super::util::unix_micros;
use cryptoworker_base::coins::Family;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Most flows started in one wake-up (catch-up is bounded, not a burst).
const MAX_FLOWS_PER_WAKE: u32 = 1000;
/// Most bench pushes built per batch.
const BENCH_BATCH: u64 = 1024;
/// Longest sleep, so the thread notices stop.
const TICK: Duration = Duration::from_millis(20);
/// Wallet used by bench mode when none is configured.
const BENCH_WALLET: &str = "0x00000000000000000000000000000000000bec4c";

/// Runs the generator until stop.
pub(crate) fn run(shared: &Shared) {
    if shared.cfg.bench {
        run_bench(shared);
    } else {
        run_flows(shared);
    }
}

fn flow_size(family: Family) -> f64 {
    match family {
        Family::Btc => 4.0,
        Family::Xmr => 3.0,
        Family::Eth => 2.0,
    }
}

fn run_flows(shared: &Shared) {
    let cfg = &shared.cfg;
    let start = Instant::now();
    let block_every = (!cfg.block_interval.is_zero()).then_some(cfg.block_interval);
    let flow_every =
        (cfg.rate > 0.0).then(|| Duration::from_secs_f64(flow_size(cfg.family) / cfg.rate));
    let mut next_block = block_every.map(|d| start + d);
    let mut next_flow = flow_every.map(|d| start + d);
    while !shared.is_stopping() {
        let now = Instant::now();
        if let (Some(due), Some(every)) = (next_block, block_every)
            && now >= due
        {
            shared.mine();
            next_block = Some(if now > due + every {
                now + every
            } else {
                due + every
            });
        }
        if let (Some(mut due), Some(every)) = (next_flow, flow_every) {
            let mut n = 0;
            while now >= due && n < MAX_FLOWS_PER_WAKE {
                shared.pay_step();
                due += every;
                n += 1;
            }
            next_flow = Some(if now > due + Duration::from_secs(1) {
                now + every
            } else {
                due
            });
        }
        let wake = [next_block, next_flow]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now + TICK);
        std::thread::sleep(wake.saturating_duration_since(Instant::now()).min(TICK));
    }
}

/// Builds bench pushes: everything but the tx hash is fixed per run.
pub(crate) struct BenchFrames {
    prefix: String,
    suffix: String,
    wallet: Arc<str>,
}

impl BenchFrames {
    pub(crate) fn new(coin: &str, wallet: &str) -> BenchFrames {
        let (to, contract) = split_key(wallet);
        let q = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "null".into());
        let contract = contract.map_or_else(|| "null".to_string(), q);
        let suffix = format!(
            r#"","from_address":"0x5a0b54d5dc17e0aadc383d2db43b0a0d3e029c4c","to":{},"amount":"0.100000000000000000","contract":{contract}}}],"wallet":{},"currency":{}}}"#,
            q(to),
            q(wallet),
            q(coin),
        );
        BenchFrames {
            prefix: r#"{"updates":[{"event":"new_transaction","tx":""#.to_string(),
            suffix,
            wallet: Arc::from(wallet),
        }
    }

    /// The push for event `i` scheduled at `scheduled_micros` (Unix).
    pub(crate) fn frame(&self, scheduled_micros: u64, i: u64) -> Frame {
        let mut text = String::with_capacity(self.prefix.len() + 66 + self.suffix.len());
        text.push_str(&self.prefix);
        let _ = write!(text, "0x{scheduled_micros:016x}{i:048x}");
        text.push_str(&self.suffix);
        Frame {
            wallet: Some(self.wallet.clone()),
            text: text.into(),
        }
    }
}

/// Decodes a bench tx hash into (scheduled Unix microseconds, event index).
pub fn decode_bench_tx(tx: &str) -> Option<(u64, u64)> {
    let hex = tx.strip_prefix("0x").filter(|h| h.len() == 64)?;
    let micros = u64::from_str_radix(hex.get(..16)?, 16).ok()?;
    let index = u128::from_str_radix(hex.get(16..)?, 16).ok()?;
    Some((micros, u64::try_from(index).ok()?))
}

/// Records a bench batch in the `get_updates` queues: only its last `cap` pushes can stay.
fn queue_tail(shared: &Shared, batch: &[Frame]) {
    let mut chain = shared.chain();
    let cap = chain.polling.cap();
    if cap > 0 && !batch.is_empty() {
        chain
            .polling
            .record_frames(&batch[batch.len().saturating_sub(cap)..]);
    }
}

/// The wallet bench pushes name: the first configured one, else [`BENCH_WALLET`].
pub(crate) fn bench_wallet(cfg: &super::SimConfig) -> &str {
    cfg.wallets.first().map_or(BENCH_WALLET, String::as_str)
}

fn run_bench(shared: &Shared) {
    let cfg = &shared.cfg;
    let wallet = bench_wallet(cfg);
    let frames = BenchFrames::new(&cfg.coin, wallet);
    let start_micros = unix_micros() + cfg.start_delay.as_micros() as u64;
    let start = Instant::now() + cfg.start_delay;
    if !shared.sleep(cfg.start_delay) {
        return;
    }
    let rate = cfg.rate;
    let end = if cfg.count == 0 { u64::MAX } else { cfg.count };
    let mut i = 0u64;
    while !shared.is_stopping() && i < end {
        let due = ((start.elapsed().as_secs_f64() * rate) as u64)
            .saturating_add(1)
            .min(end);
        if i < due {
            let upto = due.min(i + BENCH_BATCH);
            let loaded = shared.chain().is_loaded(wallet);
            let batch: Vec<Frame> = (i..upto)
                .filter(|_| loaded)
                .map(|k| frames.frame(start_micros + (k as f64 * 1e6 / rate) as u64, k))
                .collect();
            queue_tail(shared, &batch);
            shared.hub.broadcast(&batch);
            shared
                .stats
                .bench_events
                .fetch_add(upto - i, Ordering::Relaxed);
            i = upto;
            continue;
        }
        let next = start + Duration::from_secs_f64(i as f64 / rate);
        std::thread::sleep(next.saturating_duration_since(Instant::now()).min(TICK));
    }
    log::info!("[SIMULATE] bench stream finished after {i} events");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn bench_frame_is_valid_json_with_encoded_hash() {
        let b = BenchFrames::new("ETH", "0xAbC_0xdAC");
        let f = b.frame(1_700_000_000_123_456, 42);
        assert_eq!(f.wallet.as_deref(), Some("0xAbC_0xdAC"));
        let v: Value = serde_json::from_str(f.text.as_str()).unwrap();
        let u = &v["updates"][0];
        assert_eq!(u["event"], "new_transaction");
        assert_eq!(
            (u["to"].as_str(), u["contract"].as_str()),
            (Some("0xAbC"), Some("0xdAC"))
        );
        assert_eq!(v["wallet"], "0xAbC_0xdAC");
        assert_eq!(v["currency"], "ETH");
        let tx = u["tx"].as_str().unwrap();
        assert_eq!(tx.len(), 66);
        assert_eq!(
            tx,
            format!("0x{:016x}{:048x}", 1_700_000_000_123_456u64, 42)
        );
        assert_eq!(decode_bench_tx(tx), Some((1_700_000_000_123_456, 42)));
        let len = BenchFrames::new("ETH", "0x5a0b54d5dc17e0aadc383d2db43b0a0d3e029c4c")
            .frame(0, 0)
            .text
            .len();
        assert!((250..=350).contains(&len), "frame is {len} bytes");
    }

    #[test]
    fn decode_refuses_other_hashes() {
        assert_eq!(decode_bench_tx("abc"), None);
        assert_eq!(decode_bench_tx(&format!("0x{}", "z".repeat(64))), None);
        assert_eq!(decode_bench_tx(&"0".repeat(66)), None);
    }
}
