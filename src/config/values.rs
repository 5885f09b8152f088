//! Parsers from a setting's text to a typed value, each refusing bad input with a
//! [`ConfigError`] that names the setting's source (variable or flag) and quotes the bad text.
//!
//! Invariants: numbers are trimmed before parsing; quoted text in messages is shortened, so a
//! hostile value cannot produce an unbounded message; secrets (API keys) are never quoted.

use std::time::Duration;

use super::source::Value;
use super::{ConfigError, Family};

/// Longest timeout or interval accepted, in seconds (one day); keeps `Instant + d` far from
/// overflow.
pub(crate) const MAX_SECONDS: u64 = 86_400;

/// A value shortened and quoted for an error message.
pub(crate) fn quoted(text: &str) -> String {
    match crate::util::clip(text) {
        (head, true) => format!("{head:?}..."),
        (all, false) => format!("{all:?}"),
    }
}

fn error(v: &Value, message: String) -> ConfigError {
    ConfigError::new(&v.source, message)
}

/// A TCP port; `allow_zero` for a listener (0 = ephemeral), not for a daemon to connect to.
/// `on`/`off` (also `true`/`false`, `1`/`0`, `yes`/`no`), case-insensitive.
pub(crate) fn switch(v: &Value) -> Result<bool, ConfigError> {
    match v.text.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "1" | "yes" => Ok(true),
        "off" | "false" | "0" | "no" => Ok(false),
        _ => Err(error(v, format!("{} is not on or off", quoted(&v.text)))),
    }
}

pub(crate) fn port(v: &Value, allow_zero: bool) -> Result<u16, ConfigError> {
    let min = u16::from(!allow_zero);
    match v.text.trim().parse::<u16>() {
        Ok(p) if p >= min => Ok(p),
        _ => Err(error(
            v,
            format!("{} is not a port number ({min}-65535)", quoted(&v.text)),
        )),
    }
}

/// A whole number in `min..=max`.
pub(crate) fn int_in(v: &Value, min: u64, max: u64) -> Result<u64, ConfigError> {
    let n = v.text.trim().parse::<u64>().map_err(|_| {
        error(
            v,
            format!("{} is not a whole number ({min}-{max})", quoted(&v.text)),
        )
    })?;
    if n < min || n > max {
        return Err(error(v, format!("{n} is out of range ({min}-{max})")));
    }
    Ok(n)
}

/// A whole number in `min..=max` as `usize`.
pub(crate) fn usize_in(v: &Value, min: usize, max: usize) -> Result<usize, ConfigError> {
    let n = int_in(v, min as u64, max as u64)?;
    usize::try_from(n).map_err(|_| error(v, format!("{n} is too large for this machine")))
}

/// A duration in whole seconds, 1 to [`MAX_SECONDS`].
pub(crate) fn seconds(v: &Value) -> Result<Duration, ConfigError> {
    match v.text.trim().parse::<u64>() {
        Ok(n) if (1..=MAX_SECONDS).contains(&n) => Ok(Duration::from_secs(n)),
        _ => Err(error(
            v,
            format!(
                "{} is not a whole number of seconds (1-{MAX_SECONDS})",
                quoted(&v.text)
            ),
        )),
    }
}

/// A finite number in `min..=max` (rates and bursts).
pub(crate) fn number_in(v: &Value, min: f64, max: f64) -> Result<f64, ConfigError> {
    let n = v.text.trim().parse::<f64>().ok().filter(|n| n.is_finite());
    match n {
        Some(n) if n >= min && n <= max => Ok(n),
        Some(_) => Err(error(
            v,
            format!("{} is out of range ({min}-{max})", quoted(&v.text)),
        )),
        None => Err(error(v, format!("{} is not a number", quoted(&v.text)))),
    }
}

/// A comma list: entries trimmed, empty entries dropped, duplicates removed (first kept).
pub(crate) fn list(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for entry in v.text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        if !out.iter().any(|e| e == entry) {
            out.push(entry.to_string());
        }
    }
    out
}

/// Wallet keys (`{COIN}_WALLETS`): a [`list`] of printable tokens up to 1024 bytes.
pub(crate) fn wallets(v: &Value) -> Result<Vec<String>, ConfigError> {
    let keys = list(v);
    for key in &keys {
        if key.len() > 1024 || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(error(
                v,
                format!(
                    "wallet key {} must be one word of at most 1024 bytes",
                    quoted(key)
                ),
            ));
        }
    }
    Ok(keys)
}

/// API keys (`WORKER_API_KEYS`): a [`list`] of printable tokens; the keys are never quoted.
pub(crate) fn api_keys(v: &Value) -> Result<Vec<String>, ConfigError> {
    let keys = list(v);
    for (i, key) in keys.iter().enumerate() {
        if key.len() > 1024 || !key.chars().all(|c| c.is_ascii_graphic()) {
            return Err(error(
                v,
                format!(
                    "key number {} must be printable ASCII without spaces, at most 1024 bytes",
                    i + 1
                ),
            ));
        }
    }
    Ok(keys)
}

/// The coin list (`WORKER_COINS`): upper-cased, trimmed, duplicates removed; empty entries and
/// names that cannot form variable names are refused.
pub(crate) fn coins(v: &Value) -> Result<Vec<String>, ConfigError> {
    let mut out: Vec<String> = Vec::new();
    for (i, entry) in v.text.split(',').map(str::trim).enumerate() {
        if entry.is_empty() {
            return Err(error(
                v,
                format!("entry {} of {} is empty", i + 1, quoted(&v.text)),
            ));
        }
        let coin = entry.to_ascii_uppercase();
        let valid = coin.len() <= 32
            && coin.starts_with(|c: char| c.is_ascii_alphabetic())
            && coin.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(error(
                v,
                format!(
                    "{} is not a coin symbol (letters, digits and _, starting with a letter, \
                     at most 32)",
                    quoted(entry)
                ),
            ));
        }
        if !out.contains(&coin) {
            out.push(coin);
        }
    }
    Ok(out)
}

/// A host name or IP address (surrounding brackets of an IPv6 address are removed).
pub(crate) fn host(v: &Value) -> Result<String, ConfigError> {
    let text = v.text.trim();
    if text.contains("://") {
        return Err(error(
            v,
            format!(
                "{} is a URL; give only the host name or IP address",
                quoted(text)
            ),
        ));
    }
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    let valid = !bare.is_empty()
        && bare.len() <= 253
        && bare
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '%'));
    let ipv6_ok = || {
        let addr = bare.split('%').next().unwrap_or(bare);
        addr.parse::<std::net::Ipv6Addr>().is_ok()
    };
    if !valid || (bare.contains(':') && !ipv6_ok()) {
        return Err(error(
            v,
            format!(
                "{} is not a host name or IP address (the port is a separate setting)",
                quoted(text)
            ),
        ));
    }
    Ok(bare.to_string())
}

/// A Basic auth user name (`{COIN}_LOGIN`): no `:` (RFC 7617) and no control characters.
pub(crate) fn login(v: &Value) -> Result<String, ConfigError> {
    if v.text.chars().any(|c| c == ':' || c.is_control()) {
        return Err(error(
            v,
            format!(
                "{} must not contain ':' or control characters",
                quoted(&v.text)
            ),
        ));
    }
    Ok(v.text.clone())
}

/// `LOG_LEVEL`: error, warn, info, debug or trace, case-insensitive.
pub(crate) fn log_level(v: &Value) -> Result<log::LevelFilter, ConfigError> {
    use log::LevelFilter::{Debug, Error, Info, Trace, Warn};
    let level = match v.text.trim().to_ascii_lowercase().as_str() {
        "error" => Error,
        "warn" => Warn,
        "info" => Info,
        "debug" => Debug,
        "trace" => Trace,
        _ => {
            return Err(error(
                v,
                format!(
                    "{} is not a log level (error, warn, info, debug, trace)",
                    quoted(&v.text)
                ),
            ));
        }
    };
    Ok(level)
}

/// `{COIN}_FAMILY`: btc, eth or xmr, case-insensitive.
pub(crate) fn family(v: &Value) -> Result<Family, ConfigError> {
    Family::from_name(v.text.trim()).ok_or_else(|| {
        error(
            v,
            format!("{} is not a family (btc, eth, xmr)", quoted(&v.text)),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn val(text: &str) -> Value {
        Value {
            text: text.into(),
            source: "X_VAR".into(),
        }
    }

    #[test]
    fn port_refuses_junk_and_names_range() {
        let e = port(&val("80a"), true).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"invalid X_VAR: "80a" is not a port number (0-65535)"#
        );
        assert_eq!(port(&val(" 0 "), true).unwrap(), 0);
        assert!(port(&val("0"), false).is_err());
        assert!(port(&val("65536"), true).is_err());
        assert!(port(&val("-1"), true).is_err());
        assert_eq!(port(&val("65535"), false).unwrap(), 65535);
    }

    #[test]
    fn int_in_checks_bounds() {
        assert_eq!(int_in(&val("64"), 1, 64).unwrap(), 64);
        assert!(
            int_in(&val("65"), 1, 64)
                .unwrap_err()
                .message
                .contains("out of range")
        );
        assert!(int_in(&val("0"), 1, 64).is_err());
        assert!(
            int_in(&val("1.0"), 1, 64)
                .unwrap_err()
                .message
                .contains("whole number")
        );
        assert_eq!(usize_in(&val("0"), 0, 9).unwrap(), 0);
    }

    #[test]
    fn seconds_are_whole_positive_and_bounded() {
        assert_eq!(seconds(&val("5")).unwrap(), Duration::from_secs(5));
        assert!(seconds(&val("0")).is_err());
        assert!(seconds(&val("1.5")).is_err());
        assert!(seconds(&val("86401")).is_err());
        assert!(seconds(&val("18446744073709551615")).is_err());
    }

    #[test]
    fn numbers_must_be_finite_and_in_range() {
        assert_eq!(number_in(&val("2.5"), 0.001, 10.0).unwrap(), 2.5);
        assert!(number_in(&val("NaN"), 0.001, 10.0).is_err());
        assert!(number_in(&val("inf"), 0.001, 10.0).is_err());
        assert!(number_in(&val("0"), 0.001, 10.0).is_err());
        assert!(number_in(&val("-3"), 0.001, 10.0).is_err());
    }

    #[test]
    fn list_trims_drops_empty_and_dedupes() {
        assert_eq!(list(&val(" a, ,b,,a ,c")), vec!["a", "b", "c"]);
        assert!(list(&val(" , ")).is_empty());
    }

    #[test]
    fn coins_normalise_and_refuse_empty_or_odd_entries() {
        assert_eq!(coins(&val(" btc ,Eth,BTC")).unwrap(), vec!["BTC", "ETH"]);
        assert!(
            coins(&val("BTC,,ETH"))
                .unwrap_err()
                .message
                .contains("entry 2")
        );
        assert!(coins(&val("BTC,")).is_err());
        assert!(coins(&val("BT C")).is_err());
        assert!(coins(&val("1BTC")).is_err());
        assert!(coins(&val("BTC-X")).is_err());
        assert_eq!(coins(&val("usdt_erc20")).unwrap(), vec!["USDT_ERC20"]);
    }

    #[test]
    fn host_accepts_names_and_ips_and_refuses_urls() {
        assert_eq!(host(&val("node-1.example")).unwrap(), "node-1.example");
        assert_eq!(host(&val("[::1]")).unwrap(), "::1");
        assert_eq!(host(&val("10.0.0.1")).unwrap(), "10.0.0.1");
        assert!(host(&val("http://x")).unwrap_err().message.contains("URL"));
        assert!(host(&val("a b")).is_err());
        assert!(host(&val("a/b")).is_err());
        assert!(host(&val("[]")).is_err());
        assert!(
            host(&val("localhost:5000"))
                .unwrap_err()
                .message
                .contains("port")
        );
        assert_eq!(host(&val("fe80::1%eth0")).unwrap(), "fe80::1%eth0");
    }

    #[test]
    fn log_level_is_case_insensitive_and_closed() {
        assert_eq!(log_level(&val("DEBUG")).unwrap(), log::LevelFilter::Debug);
        assert_eq!(log_level(&val(" warn ")).unwrap(), log::LevelFilter::Warn);
        assert!(log_level(&val("verbose")).is_err());
        assert!(log_level(&val("off")).is_err());
    }

    #[test]
    fn login_refuses_colons() {
        assert_eq!(login(&val("electrum")).unwrap(), "electrum");
        assert!(login(&val("a:b")).is_err());
        assert!(login(&val("a\nb")).is_err());
    }

    #[test]
    fn family_names() {
        assert_eq!(family(&val("ETH")).unwrap(), Family::Eth);
        assert_eq!(family(&val("xmr")).unwrap(), Family::Xmr);
        assert!(
            family(&val("doge"))
                .unwrap_err()
                .message
                .contains("btc, eth, xmr")
        );
    }

    #[test]
    fn api_key_errors_never_show_the_key() {
        let e = api_keys(&val("good,sec ret")).unwrap_err();
        assert!(!e.message.contains("sec"), "{}", e.message);
        assert!(e.message.contains("key number 2"));
        assert_eq!(api_keys(&val("a,,b,a")).unwrap(), vec!["a", "b"]);
    }

    #[test]
    fn wallet_keys_are_single_words() {
        assert_eq!(wallets(&val("x1, x2_0xab")).unwrap(), vec!["x1", "x2_0xab"]);
        assert!(wallets(&val("x 1")).is_err());
        assert!(wallets(&val(&"k".repeat(2000))).is_err());
    }

    #[test]
    fn quoted_shortens_long_values() {
        let q = quoted(&"z".repeat(10_000));
        assert!(q.len() < 80 && q.ends_with("..."));
    }
}
