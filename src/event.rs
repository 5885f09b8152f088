//! The event model shared by the daemon side, the fan-out, the database and the handlers.
//!
//! An [`Event`] is what the daemon side produces after decoding and enrichment: the coin, the
//! event name, the wallet key (if any) and the client-facing `data` object of docs/protocol.md. The
//! pipeline gives it a sequence number and turns it into a [`Published`]: the `data` object
//! serialised **once** ([`Published::payload`]), and the complete WebSocket text frame built
//! from it **once** ([`Published::frame`]), shared by every client that receives it.
//!
//! Invariant: `Published::frame` is exactly the unmasked server frame carrying
//! `{"type":"event","seq":N,"data":<payload>,"timestamp":T}`.

use serde_json::{Map, Value};
use std::sync::Arc;

/// Event names the worker knows today (docs/protocol.md, "Events"). Others are passed through to
/// `"*"`.
pub const KNOWN_EVENTS: [&str; 5] = [
    "new_block",
    "new_transaction",
    "new_payment",
    "verified_tx",
    "daemon_status",
];

/// The keys of a `new_transaction`'s inner `data` object, the same in every coin family
/// (`null` where unknown; enrichment fills some of them and never removes one).
pub const TRANSACTION_DATA_KEYS: [&str; 6] = [
    "amount",
    "from_address",
    "to_address",
    "confirmations",
    "contract",
    "outputs",
];

/// A normalised event before it has a sequence number.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Upper-case coin symbol, e.g. `BTC`.
    pub coin: Arc<str>,
    /// Event name, e.g. `new_transaction`.
    pub name: String,
    /// Wallet key (`xpub` or `xpub_contract`) for wallet-scoped events.
    pub wallet: Option<String>,
    /// The client-facing `data` object, including `event`, `coin` and (if any) `wallet`.
    pub data: Map<String, Value>,
}

impl Event {
    /// Builds an event whose `data` starts with `event`, `coin` and, when given, `wallet`.
    pub fn new(coin: Arc<str>, name: &str, wallet: Option<String>) -> Event {
        let mut data = Map::new();
        data.insert("event".into(), Value::String(name.to_string()));
        data.insert("coin".into(), Value::String(coin.to_string()));
        if let Some(w) = &wallet {
            data.insert("wallet".into(), Value::String(w.clone()));
        }
        Event {
            coin,
            name: name.to_string(),
            wallet,
            data,
        }
    }

    /// Sets one field of `data`.
    pub fn with(mut self, key: &str, value: Value) -> Event {
        self.data.insert(key.to_string(), value);
        self
    }

    /// The filter-relevant facts of this event.
    pub fn meta(&self) -> EventMeta {
        EventMeta::from_data(&self.data)
    }
}

/// What subscription filters look at: name, coin, wallet and every address the event carries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventMeta {
    /// Event name.
    pub name: Box<str>,
    /// Upper-case coin.
    pub coin: Box<str>,
    /// Wallet key, if the event is wallet-scoped.
    pub wallet: Option<Box<str>>,
    /// Every address the event carries: `from_address`, `to_address`, output addresses and a
    /// payment's `address` (docs/protocol.md, "`subscribe`").
    pub addresses: Vec<Box<str>>,
}

impl EventMeta {
    /// Extracts the meta from a client `data` object (also used for events read back from the
    /// database event log).
    pub fn from_data(data: &Map<String, Value>) -> EventMeta {
        let text = |k: &str| data.get(k).and_then(Value::as_str).map(Box::from);
        let name = text("event").unwrap_or_default();
        let mut addresses: Vec<Box<str>> = Vec::new();
        let mut push = |a: Option<&str>| {
            if let Some(a) = a
                && !a.is_empty()
                && !addresses.iter().any(|x| &**x == a)
            {
                addresses.push(a.into());
            }
        };
        if &*name == "new_payment" {
            push(data.get("address").and_then(Value::as_str));
        }
        if let Some(Value::Object(inner)) = data.get("data") {
            push(inner.get("from_address").and_then(Value::as_str));
            push(inner.get("to_address").and_then(Value::as_str));
            if let Some(Value::Array(outs)) = inner.get("outputs") {
                for o in outs {
                    push(o.get("address").and_then(Value::as_str));
                }
            }
        }
        push(data.get("from_address").and_then(Value::as_str));
        push(data.get("to_address").and_then(Value::as_str));
        EventMeta {
            name,
            coin: text("coin").unwrap_or_default(),
            wallet: text("wallet"),
            addresses,
        }
    }
}

/// A sequenced event, serialised once and shared by every receiver.
#[derive(Debug)]
pub struct Published {
    /// Epoch this sequence number belongs to.
    pub epoch: Arc<str>,
    /// Sequence number within the epoch (one per event, no gaps).
    pub seq: u64,
    /// Filter facts.
    pub meta: EventMeta,
    /// Where the `data` object's JSON text (the event log's `payload`) sits inside `frame`:
    /// it is stored once, as part of the frame, not a second time.
    payload_at: u32,
    payload_len: u32,
    /// Unix seconds with millisecond precision.
    pub timestamp: f64,
    /// The complete WebSocket text frame for clients.
    pub frame: Arc<[u8]>,
}

impl Published {
    /// Serialises `event` once and frames it.
    pub fn new(epoch: Arc<str>, seq: u64, event: &Event, timestamp: f64) -> Published {
        let meta = event.meta();
        Published::framed(epoch, seq, meta, timestamp, |out| {
            if serde_json::to_writer(&mut *out, &event.data).is_err() {
                out.extend_from_slice(b"{}");
            }
        })
    }

    /// Frames an already serialised payload (used for replays from the event log).
    pub fn from_payload(
        epoch: Arc<str>,
        seq: u64,
        meta: EventMeta,
        payload: &str,
        timestamp: f64,
    ) -> Published {
        Published::framed(epoch, seq, meta, timestamp, |out| {
            out.extend_from_slice(payload.as_bytes())
        })
    }

    /// Builds the frame in a reused per-thread buffer (room for the longest header first, the
    /// envelope around what `write_payload` appends), then copies it once into an exact-size
    /// shared allocation: one allocation per event, none of them grown.
    fn framed(
        epoch: Arc<str>,
        seq: u64,
        meta: EventMeta,
        timestamp: f64,
        write_payload: impl FnOnce(&mut Vec<u8>),
    ) -> Published {
        use crate::ws::frame::{MAX_HEADER, header};
        use std::io::Write;
        FRAME_SCRATCH.with_borrow_mut(|buf| {
            buf.clear();
            buf.resize(MAX_HEADER, 0);
            // Writing into a Vec cannot fail.
            let _ = write!(buf, "{{\"type\":\"event\",\"seq\":{seq},\"data\":");
            let payload_start = buf.len();
            write_payload(buf);
            let payload_len = buf.len() - payload_start;
            let _ = write!(buf, ",\"timestamp\":{timestamp:.3}}}");
            let (head, used) = header(0x1, buf.len() - MAX_HEADER);
            let start = MAX_HEADER - used;
            buf[start..MAX_HEADER].copy_from_slice(&head[..used]);
            let frame: Arc<[u8]> = Arc::from(&buf[start..]);
            if buf.capacity() > MAX_SCRATCH {
                *buf = Vec::with_capacity(SCRATCH_CAPACITY);
            }
            Published {
                epoch,
                seq,
                meta,
                payload_at: (payload_start - start) as u32,
                payload_len: payload_len as u32,
                timestamp,
                frame,
            }
        })
    }
}

/// Initial size of the per-thread frame buffer.
const SCRATCH_CAPACITY: usize = 4096;
/// A buffer grown beyond this by one large event is given back rather than kept.
const MAX_SCRATCH: usize = 256 * 1024;

thread_local! {
    /// Where [`Published::framed`] assembles frames.
    static FRAME_SCRATCH: std::cell::RefCell<Vec<u8>> =
        std::cell::RefCell::new(Vec::with_capacity(SCRATCH_CAPACITY));
}

impl Published {
    /// The `data` object as JSON text (the event log's `payload`).
    pub fn payload(&self) -> &str {
        let start = self.payload_at as usize;
        let bytes = self
            .frame
            .get(start..start + self.payload_len as usize)
            .unwrap_or_default();
        // The range was cut from a `str` at construction, so it is valid UTF-8.
        std::str::from_utf8(bytes).unwrap_or_default()
    }
}

/// Formats Unix seconds with exactly three decimals (millisecond precision, docs/protocol.md).
pub fn format_timestamp(t: f64) -> String {
    format!("{t:.3}")
}

/// Current Unix time in seconds, millisecond precision.
pub fn now_unix() -> f64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_millis() as f64) / 1000.0
}

/// A new epoch: its creation time in milliseconds as 12 hex digits, `-`, 8 random hex digits
/// (`"018c2e5a9f10-3fa4b2c1"`). Byte order of epochs is creation order (the database compares
/// them in the `"C"` collation, see docs/database.md).
pub fn new_epoch() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let r = crate::util::rng::Rng::from_os().next_u64() as u32;
    format!("{ms:012x}-{r:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn epochs_are_fixed_width_and_sort_by_creation_time() {
        let a = new_epoch();
        std::thread::sleep(std::time::Duration::from_millis(3));
        let b = new_epoch();
        assert_eq!(a.len(), 21);
        assert_eq!(a.as_bytes()[12], b'-');
        assert!(a.bytes().all(|c| c == b'-' || c.is_ascii_hexdigit()), "{a}");
        assert!(a < b, "{a} < {b}");
        assert_ne!(a[13..], b[13..]);
    }

    #[test]
    fn meta_collects_every_address_once() {
        let ev = Event::new("BTC".into(), "new_transaction", Some("zpub1".into())).with(
            "data",
            json!({"from_address": null, "to_address": "a1",
                   "outputs": [{"address": "a1"}, {"address": "a2"}]}),
        );
        let m = ev.meta();
        assert_eq!(&*m.name, "new_transaction");
        assert_eq!(&*m.coin, "BTC");
        assert_eq!(m.wallet.as_deref(), Some("zpub1"));
        let addrs: Vec<&str> = m.addresses.iter().map(|a| &**a).collect();
        assert_eq!(addrs, ["a1", "a2"]);
    }

    #[test]
    fn payment_address_is_an_address() {
        let ev = Event::new("BTC".into(), "new_payment", Some("w".into()))
            .with("address", json!("3f9a0c1b7e"));
        assert_eq!(ev.meta().addresses, vec![Box::from("3f9a0c1b7e")]);
    }

    #[test]
    fn published_frames_of_every_header_size_carry_their_payload() {
        for filler in [10usize, 1_000, 70_000] {
            let ev =
                Event::new("BTC".into(), "new_block", None).with("x", json!("y".repeat(filler)));
            let p = Published::new("e1".into(), 9, &ev, 2.5);
            let (len, at) = match p.frame[1] {
                126 => (u16::from_be_bytes([p.frame[2], p.frame[3]]) as usize, 4),
                127 => (
                    u64::from_be_bytes(p.frame[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                n => (n as usize, 2),
            };
            assert_eq!(p.frame[0], 0x81);
            assert_eq!(
                at + len,
                p.frame.len(),
                "filler {filler}: header length matches"
            );
            let body: Value = serde_json::from_slice(&p.frame[at..]).unwrap();
            assert_eq!(body["data"]["x"].as_str().unwrap().len(), filler);
            assert_eq!(body["timestamp"], 2.5);
            let data: Value = serde_json::from_str(p.payload()).unwrap();
            assert_eq!(data, body["data"]);
            let again = Published::from_payload("e1".into(), 9, p.meta.clone(), p.payload(), 2.5);
            assert_eq!(
                again.frame, p.frame,
                "a replayed payload frames identically"
            );
        }
    }

    #[test]
    fn published_frame_is_the_spec_envelope() {
        let ev = Event::new("BTC".into(), "new_block", None).with("height", json!(800000));
        let p = Published::new("e1".into(), 7, &ev, 1640995200.456);
        // Unmasked text frame, short length.
        assert_eq!(p.frame[0], 0x81);
        let len = p.frame[1] as usize;
        let body: Value = serde_json::from_slice(&p.frame[2..2 + len]).unwrap();
        assert_eq!(body["type"], "event");
        assert_eq!(body["seq"], 7);
        assert_eq!(body["data"]["event"], "new_block");
        assert_eq!(body["data"]["height"], 800000);
        assert_eq!(body["timestamp"], 1640995200.456);
        let data: Value = serde_json::from_str(p.payload()).unwrap();
        assert_eq!(
            data, body["data"],
            "the payload is the data object inside the frame"
        );
    }
}
