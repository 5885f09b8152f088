//! One connection's subscription filter (docs/protocol.md, "`subscribe`").
//!
//! An event is delivered when its name is subscribed (`"*"` = every name, including names the
//! worker does not know) **and** it passes each given dimension:
//! - `coins`: the event's coin is listed (case-insensitive; stored upper-case);
//! - `wallets`: the event carries no wallet, or its wallet is listed;
//! - `addresses`: the event carries no address, or any address it carries is listed.
//!
//! An omitted dimension matches everything; a dimension given as `["*"]` counts as omitted (so a
//! client may send back what a `subscribed` reply echoed).
//!
//! `unsubscribe` of specific names from a `"*"` subscription turns it into the explicit list of
//! known event names minus those names: the reply then states exactly what is still delivered,
//! and names the worker does not know stop being passed through. `unsubscribe` of `"*"` (or
//! with no list) removes everything.
//!
//! Addresses of the form `0x` + 40 hex digits (ETH-like chains) are compared case-insensitively
//! (EIP-55 mixed case is only a checksum); they are stored and echoed in lower case. Every other
//! address and every wallet key is compared exactly.
//!
//! Memory: a filter is an event bit mask plus three optional boxed slices; wallets and addresses
//! are sorted and deduplicated so a match is a binary search.

use super::request::{ErrorCode, RequestError, SubscribeRequest, quote};
use crate::event::{EventMeta, KNOWN_EVENTS};
use std::borrow::Cow;

/// Bit meaning "every event name" (`"*"`).
const ALL: u8 = 1 << 7;
const _: () = assert!(
    KNOWN_EVENTS.len() < 7,
    "event mask has room for 7 known names"
);

/// Index of `name` in [`KNOWN_EVENTS`].
pub(crate) fn event_slot(name: &str) -> Option<usize> {
    KNOWN_EVENTS.iter().position(|k| *k == name)
}

/// Whether the event carries a wallet (so a `wallets` filter constrains it).
pub(crate) fn carries_wallet(meta: &EventMeta) -> bool {
    meta.wallet.is_some()
}

/// Whether the event carries an address (so an `addresses` filter constrains it).
pub(crate) fn carries_address(meta: &EventMeta) -> bool {
    !meta.addresses.is_empty()
}

/// The form addresses are compared in: `0x`+40 hex lower-cased, anything else unchanged.
pub fn normalize_address(a: &str) -> Cow<'_, str> {
    let b = a.as_bytes();
    let eth_like = b.len() == 42
        && (b.starts_with(b"0x") || b.starts_with(b"0X"))
        && b[2..].iter().all(u8::is_ascii_hexdigit);
    if eth_like && b.iter().any(u8::is_ascii_uppercase) {
        Cow::Owned(a.to_ascii_lowercase())
    } else {
        Cow::Borrowed(a)
    }
}

/// A validated subscription.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Filter {
    /// Bit i = `KNOWN_EVENTS[i]`; [`ALL`] = `"*"` (then the other bits are 0).
    events: u8,
    /// Upper-case coins, deduplicated; `None` = every coin.
    coins: Option<Box<[Box<str>]>>,
    /// Sorted, deduplicated wallet keys; `None` = every wallet.
    wallets: Option<Box<[Box<str>]>>,
    /// Sorted, deduplicated, normalised addresses; `None` = every address.
    addresses: Option<Box<[Box<str>]>>,
}

impl Filter {
    /// Validates against KNOWN_EVENTS ("*" allowed; unknown name -> `unknown_event` naming it)
    /// and the configured coins (case-insensitive; unknown -> `unknown_coin` naming it; stored
    /// upper-case). The error carries no id: add it with `RequestError::with_id`.
    pub fn from_request(
        req: &SubscribeRequest,
        known_coins: &[String],
    ) -> Result<Filter, RequestError> {
        let mut events = 0u8;
        for name in &req.events {
            events |= event_bit(name)?;
        }
        if events & ALL != 0 {
            events = ALL;
        }
        let coins = match unrestricted(&req.coins) {
            None => None,
            Some(list) => Some(validate_coins(list, known_coins)?),
        };
        let wallets = unrestricted(&req.wallets).map(|l| sorted_set(l.iter().map(|w| w.as_str())));
        let addresses = unrestricted(&req.addresses)
            .map(|l| sorted_set(l.iter().map(|a| normalize_address(a))));
        Ok(Filter {
            events,
            coins,
            wallets,
            addresses,
        })
    }

    /// Whether an event with these facts is delivered under this filter.
    pub fn matches(&self, meta: &EventMeta) -> bool {
        self.wants_event(&meta.name)
            && self.coin_ok(&meta.coin)
            && self.wallet_ok(meta)
            && self.address_ok(meta)
    }

    /// `unsubscribe`: `None` = everything; `Some(list)` removes those names (`"*"` in it removes
    /// everything; an unknown name is an `unknown_event` error and changes nothing).
    pub fn unsubscribe(&mut self, events: Option<&[String]>) -> Result<(), RequestError> {
        let Some(names) = events else {
            self.events = 0;
            return Ok(());
        };
        let mut remove = 0u8;
        for name in names {
            remove |= event_bit(name)?;
        }
        if remove & ALL != 0 {
            self.events = 0;
            return Ok(());
        }
        if self.events & ALL != 0 {
            self.events = (1u8 << KNOWN_EVENTS.len()) - 1;
        }
        self.events &= !remove;
        Ok(())
    }

    /// Subscribed event names: `["*"]`, or known names in `KNOWN_EVENTS` order.
    pub fn events(&self) -> Vec<String> {
        if self.events & ALL != 0 {
            return vec!["*".to_string()];
        }
        self.known_slots()
            .map(|i| KNOWN_EVENTS[i].to_string())
            .collect()
    }

    /// Coins (upper case), or `["*"]` when unrestricted.
    pub fn coins(&self) -> Vec<String> {
        echo(&self.coins)
    }

    /// Wallet keys (sorted), or `["*"]` when unrestricted.
    pub fn wallets(&self) -> Vec<String> {
        echo(&self.wallets)
    }

    /// Addresses (sorted, normalised), or `["*"]` when unrestricted.
    pub fn addresses(&self) -> Vec<String> {
        echo(&self.addresses)
    }

    /// No events subscribed: this filter matches nothing.
    pub fn is_empty(&self) -> bool {
        self.events == 0
    }

    /// Whether `"*"` is subscribed.
    pub(crate) fn wants_all_events(&self) -> bool {
        self.events & ALL != 0
    }

    /// Indices into `KNOWN_EVENTS` of the names subscribed explicitly.
    pub(crate) fn known_slots(&self) -> impl Iterator<Item = usize> + '_ {
        (0..KNOWN_EVENTS.len()).filter(|i| self.events & (1 << i) != 0)
    }

    /// The wallet restriction, if any (sorted).
    pub(crate) fn wallet_set(&self) -> Option<&[Box<str>]> {
        self.wallets.as_deref()
    }

    /// The address restriction, if any (sorted, normalised).
    pub(crate) fn address_set(&self) -> Option<&[Box<str>]> {
        self.addresses.as_deref()
    }

    fn wants_event(&self, name: &str) -> bool {
        self.events & ALL != 0 || event_slot(name).is_some_and(|i| self.events & (1 << i) != 0)
    }

    fn coin_ok(&self, coin: &str) -> bool {
        self.coins
            .as_deref()
            .is_none_or(|cs| cs.iter().any(|c| c.eq_ignore_ascii_case(coin)))
    }

    fn wallet_ok(&self, meta: &EventMeta) -> bool {
        match (self.wallets.as_deref(), meta.wallet.as_deref()) {
            (Some(ws), Some(w)) => ws.binary_search_by(|x| (**x).cmp(w)).is_ok(),
            _ => true,
        }
    }

    fn address_ok(&self, meta: &EventMeta) -> bool {
        let Some(set) = self.addresses.as_deref() else {
            return true;
        };
        !carries_address(meta)
            || meta.addresses.iter().any(|a| {
                let a = normalize_address(a);
                set.binary_search_by(|x| (**x).cmp(&*a)).is_ok()
            })
    }
}

/// The mask bit for one requested event name.
fn event_bit(name: &str) -> Result<u8, RequestError> {
    if name == "*" {
        return Ok(ALL);
    }
    event_slot(name).map(|i| 1u8 << i).ok_or_else(|| {
        RequestError::new(
            ErrorCode::UnknownEvent,
            format!(
                "unknown event \"{}\"; known events are {} (or \"*\")",
                quote(name),
                KNOWN_EVENTS.join(", ")
            ),
        )
    })
}

/// The list when it restricts, `None` when absent or containing `"*"`.
fn unrestricted(list: &Option<Vec<String>>) -> Option<&[String]> {
    list.as_deref().filter(|l| !l.iter().any(|x| x == "*"))
}

fn validate_coins(list: &[String], known: &[String]) -> Result<Box<[Box<str>]>, RequestError> {
    let mut out: Vec<Box<str>> = Vec::with_capacity(list.len().min(known.len()));
    for coin in list {
        if !known.iter().any(|k| k.eq_ignore_ascii_case(coin)) {
            return Err(RequestError::new(
                ErrorCode::UnknownCoin,
                format!(
                    "unknown coin \"{}\"; this worker serves {}",
                    quote(coin),
                    known.join(", ")
                ),
            ));
        }
        if !out.iter().any(|c| c.eq_ignore_ascii_case(coin)) {
            out.push(coin.to_ascii_uppercase().into());
        }
    }
    Ok(out.into_boxed_slice())
}

fn sorted_set<'a, S: AsRef<str> + 'a>(items: impl Iterator<Item = S>) -> Box<[Box<str>]> {
    let mut v: Vec<Box<str>> = items.map(|s| Box::from(s.as_ref())).collect();
    v.sort_unstable();
    v.dedup();
    v.into_boxed_slice()
}

fn echo(dim: &Option<Box<[Box<str>]>>) -> Vec<String> {
    match dim {
        None => vec!["*".to_string()],
        Some(items) => items.iter().map(|s| s.to_string()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(events: &[&str]) -> SubscribeRequest {
        SubscribeRequest {
            events: events.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn list(items: &[&str]) -> Option<Vec<String>> {
        Some(items.iter().map(|s| s.to_string()).collect())
    }

    fn coins() -> Vec<String> {
        vec!["BTC".into(), "ETH".into()]
    }

    fn meta(name: &str, coin: &str, wallet: Option<&str>, addrs: &[&str]) -> EventMeta {
        EventMeta {
            name: name.into(),
            coin: coin.into(),
            wallet: wallet.map(Box::from),
            addresses: addrs.iter().map(|a| Box::from(*a)).collect(),
        }
    }

    #[test]
    fn events_and_star() {
        let f = Filter::from_request(&req(&["new_block"]), &coins()).unwrap();
        assert!(f.matches(&meta("new_block", "BTC", None, &[])));
        assert!(!f.matches(&meta("new_transaction", "BTC", None, &[])));
        let star = Filter::from_request(&req(&["new_block", "*"]), &coins()).unwrap();
        assert_eq!(star.events(), ["*"]);
        assert!(star.matches(&meta("something_new", "BTC", None, &[])));
        assert!(!f.matches(&meta("something_new", "BTC", None, &[])));
    }

    #[test]
    fn unknown_event_and_coin_are_named() {
        let e = Filter::from_request(&req(&["new_block", "new_blok"]), &coins()).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownEvent);
        assert!(e.message.contains("\"new_blok\""), "{}", e.message);
        let mut r = req(&["*"]);
        r.coins = list(&["btc", "doge"]);
        let e = Filter::from_request(&r, &coins()).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownCoin);
        assert!(e.message.contains("\"doge\""), "{}", e.message);
    }

    #[test]
    fn coins_are_case_insensitive_and_upper_cased() {
        let mut r = req(&["*"]);
        r.coins = list(&["btc", "BTC", "Eth"]);
        let f = Filter::from_request(&r, &coins()).unwrap();
        assert_eq!(f.coins(), ["BTC", "ETH"]);
        assert!(f.matches(&meta("new_block", "BTC", None, &[])));
        r.coins = list(&["eth"]);
        let f = Filter::from_request(&r, &coins()).unwrap();
        assert!(!f.matches(&meta("new_block", "BTC", None, &[])));
        assert_eq!(
            Filter::from_request(&req(&["*"]), &coins())
                .unwrap()
                .coins(),
            ["*"]
        );
        r.coins = list(&["*"]);
        assert_eq!(Filter::from_request(&r, &coins()).unwrap().coins(), ["*"]);
    }

    #[test]
    fn wallets_constrain_only_events_with_a_wallet() {
        let mut r = req(&["*"]);
        r.wallets = list(&["w2", "w1", "w2"]);
        let f = Filter::from_request(&r, &coins()).unwrap();
        assert_eq!(f.wallets(), ["w1", "w2"]);
        assert!(f.matches(&meta("new_transaction", "BTC", Some("w1"), &["a"])));
        assert!(!f.matches(&meta("new_transaction", "BTC", Some("w3"), &["a"])));
        assert!(f.matches(&meta("new_block", "BTC", None, &[])));
        assert!(f.matches(&meta("daemon_status", "ETH", None, &[])));
    }

    #[test]
    fn addresses_match_any_carried_address() {
        let mut r = req(&["new_transaction", "new_payment", "new_block"]);
        r.addresses = list(&["a2", "a9"]);
        let f = Filter::from_request(&r, &coins()).unwrap();
        assert!(f.matches(&meta("new_transaction", "BTC", Some("w"), &["a1", "a2"])));
        assert!(!f.matches(&meta("new_transaction", "BTC", Some("w"), &["a1", "a3"])));
        assert!(f.matches(&meta("new_payment", "BTC", Some("w"), &["a9"])));
        // No address carried: the dimension does not constrain it.
        assert!(f.matches(&meta("new_block", "BTC", None, &[])));
        assert!(!f.matches(&meta("verified_tx", "BTC", Some("w"), &[])));
    }

    #[test]
    fn eth_addresses_ignore_case() {
        let upper = "0xAbCdEf0123456789aBcDeF0123456789ABCDEF01";
        let lower = upper.to_ascii_lowercase();
        let mut r = req(&["*"]);
        r.addresses = list(&[upper, "BcAddr"]);
        let f = Filter::from_request(&r, &coins()).unwrap();
        assert_eq!(f.addresses(), [lower.as_str(), "BcAddr"]);
        assert!(f.matches(&meta("new_transaction", "ETH", None, &[&lower])));
        assert!(f.matches(&meta("new_transaction", "ETH", None, &[upper])));
        assert!(!f.matches(&meta("new_transaction", "BTC", None, &["bcaddr"])));
        assert_eq!(normalize_address("0x12"), "0x12");
        assert_eq!(normalize_address("0XAB"), "0XAB");
    }

    #[test]
    fn all_dimensions_together() {
        let mut r = req(&["new_transaction"]);
        r.coins = list(&["btc"]);
        r.wallets = list(&["w1"]);
        r.addresses = list(&["a1"]);
        let f = Filter::from_request(&r, &coins()).unwrap();
        assert!(f.matches(&meta("new_transaction", "BTC", Some("w1"), &["a1"])));
        assert!(!f.matches(&meta("new_transaction", "ETH", Some("w1"), &["a1"])));
        assert!(!f.matches(&meta("new_transaction", "BTC", Some("w2"), &["a1"])));
        assert!(!f.matches(&meta("new_transaction", "BTC", Some("w1"), &["a2"])));
        assert!(f.matches(&meta("new_transaction", "BTC", None, &[])));
    }

    #[test]
    fn unsubscribe_names_star_and_everything() {
        let mut f = Filter::from_request(&req(&["new_block", "new_payment"]), &coins()).unwrap();
        f.unsubscribe(Some(&["new_block".to_string()])).unwrap();
        assert_eq!(f.events(), ["new_payment"]);
        let e = f.unsubscribe(Some(&["nope".to_string()])).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownEvent);
        assert_eq!(
            f.events(),
            ["new_payment"],
            "a failed unsubscribe changes nothing"
        );
        f.unsubscribe(None).unwrap();
        assert!(f.is_empty());
        assert!(f.events().is_empty());
        assert!(!f.matches(&meta("new_payment", "BTC", None, &[])));

        let mut star = Filter::from_request(&req(&["*"]), &coins()).unwrap();
        star.unsubscribe(Some(&["daemon_status".to_string()]))
            .unwrap();
        assert_eq!(
            star.events(),
            ["new_block", "new_transaction", "new_payment", "verified_tx"]
        );
        assert!(!star.matches(&meta("daemon_status", "BTC", None, &[])));
        assert!(!star.matches(&meta("something_new", "BTC", None, &[])));
        star.unsubscribe(Some(&["*".to_string()])).unwrap();
        assert!(star.is_empty());
    }
}
