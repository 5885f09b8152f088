//! Small helpers for the simulated daemon: the crate's seeded generator ([`Rng`]), alphabets of
//! the identifier shapes real daemons use, decimal amounts in smallest units, and coin decimals.
//!
//! Amounts are integers of the coin's smallest unit (`u128`) everywhere inside the simulator and
//! become decimal strings only at the edge, so no float ever touches money.

use cryptoworker_base::coins::Family;
pub(crate) use cryptoworker_base::rng::Rng;
use std::time::{SystemTime, UNIX_EPOCH};

/// Characters of `secrets.token_urlsafe()` output.
pub(crate) const URLSAFE: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
/// Characters of bech32 data parts.
pub(crate) const BECH32: &[u8] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";
/// Characters of base58 (Tron, Monero addresses).
pub(crate) const BASE58: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

/// Decimals of the coin's native unit (8 for Electrum coins, 18 for EVM coins, 6 for TRX, 12 for
/// XMR). Token wallets (`xpub_contract`) use 6, like USDT.
pub(crate) fn decimals_of(coin: &str, family: Family, token: bool) -> u32 {
    match (family, coin.to_ascii_uppercase().as_str()) {
        (Family::Eth, _) if token => 6,
        (Family::Eth, "TRX") => 6,
        (Family::Eth, _) => 18,
        (Family::Xmr, _) => 12,
        (Family::Btc, _) => 8,
    }
}

/// Why a decimal amount was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AmountError {
    /// Not `digits[.digits]`.
    Syntax,
    /// More fractional digits than the unit has, or too large.
    Range,
}

/// Parses a non-negative decimal string (`"0.00018"`, `"12"`) into smallest units.
pub(crate) fn parse_amount(text: &str, decimals: u32) -> Result<u128, AmountError> {
    let text = text.trim();
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits_ok = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits_ok(int) || !digits_ok(frac) {
        return Err(AmountError::Syntax);
    }
    if frac.len() > decimals as usize || int.len() > 20 {
        return Err(AmountError::Range);
    }
    let scale = 10u128.pow(decimals);
    let int_part: u128 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| AmountError::Range)?
    };
    let mut frac_part: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().map_err(|_| AmountError::Range)?
    };
    frac_part *= 10u128.pow(decimals - frac.len() as u32);
    int_part
        .checked_mul(scale)
        .and_then(|v| v.checked_add(frac_part))
        .ok_or(AmountError::Range)
}

/// Formats smallest units as a decimal string with exactly `decimals` fractional digits.
pub(crate) fn format_amount(units: u128, decimals: u32) -> String {
    if decimals == 0 {
        return units.to_string();
    }
    let scale = 10u128.pow(decimals);
    format!(
        "{}.{:0width$}",
        units / scale,
        units % scale,
        width = decimals as usize
    )
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Microseconds since the Unix epoch.
pub(crate) fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_round_trip_in_smallest_units() {
        assert_eq!(parse_amount("0.00018", 8), Ok(18_000));
        assert_eq!(parse_amount("12", 8), Ok(1_200_000_000));
        assert_eq!(parse_amount(".5", 2), Ok(50));
        assert_eq!(format_amount(18_000, 8), "0.00018000");
        assert_eq!(
            format_amount(100_000_000_000_000_000, 18),
            "0.100000000000000000"
        );
        assert_eq!(format_amount(7, 0), "7");
    }

    #[test]
    fn bad_amounts_are_refused() {
        assert_eq!(parse_amount("", 8), Err(AmountError::Syntax));
        assert_eq!(parse_amount("1e-5", 8), Err(AmountError::Syntax));
        assert_eq!(parse_amount("-1", 8), Err(AmountError::Syntax));
        assert_eq!(parse_amount("0.123456789", 8), Err(AmountError::Range));
        assert_eq!(
            parse_amount("999999999999999999999999", 8),
            Err(AmountError::Range)
        );
    }

    #[test]
    fn coin_decimals() {
        assert_eq!(decimals_of("TRX", Family::Eth, false), 6);
        assert_eq!(decimals_of("ETH", Family::Eth, false), 18);
        assert_eq!(decimals_of("ETH", Family::Eth, true), 6);
    }
}
