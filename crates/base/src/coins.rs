//! Bitcart's coin daemons as both sides of the link know them: each known coin's symbol, default
//! port and protocol family (docs/daemon.md, "Coin families"). The worker's configuration reads
//! its defaults here; the simulated daemon imitates the family's wire shapes.

/// The protocol family of a coin daemon (docs/daemon.md, "Coin families").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Electrum / Electron Cash: BTC, LTC, GRS, BCH, XRG. `new_transaction` carries only the
    /// hash and is enriched with `get_transaction`.
    Btc,
    /// Block-processor daemons: ETH, BNB, MATIC, TRX. Events carry their fields.
    Eth,
    /// Monero: like `Eth` with fewer fields; enriched with `gettransaction`.
    Xmr,
}

impl Family {
    /// Parses `btc`, `eth` or `xmr`, case-insensitive.
    pub fn from_name(name: &str) -> Option<Family> {
        match name.to_ascii_lowercase().as_str() {
            "btc" => Some(Family::Btc),
            "eth" => Some(Family::Eth),
            "xmr" => Some(Family::Xmr),
            _ => None,
        }
    }

    /// The lower-case name accepted by [`Family::from_name`].
    pub fn name(self) -> &'static str {
        match self {
            Family::Btc => "btc",
            Family::Eth => "eth",
            Family::Xmr => "xmr",
        }
    }
}

/// Known coins: symbol, default daemon port, family (docs/daemon.md, "Coin families").
pub const KNOWN_COINS: &[(&str, u16, Family)] = &[
    ("BTC", 5000, Family::Btc),
    ("LTC", 5001, Family::Btc),
    ("ETH", 5002, Family::Eth),
    ("BCH", 5004, Family::Btc),
    ("XRG", 5005, Family::Btc),
    ("BNB", 5006, Family::Eth),
    ("MATIC", 5008, Family::Eth),
    ("TRX", 5009, Family::Eth),
    ("GRS", 5010, Family::Btc),
    ("XMR", 5011, Family::Xmr),
];

/// The default daemon port of a known coin (docs/configuration.md), case-insensitive; `None`
/// outside the table.
pub fn default_port(coin: &str) -> Option<u16> {
    KNOWN_COINS
        .iter()
        .find(|(c, _, _)| c.eq_ignore_ascii_case(coin))
        .map(|(_, port, _)| *port)
}

/// The family of a known coin (docs/configuration.md), case-insensitive; `None` outside the table.
pub fn default_family(coin: &str) -> Option<Family> {
    KNOWN_COINS
        .iter()
        .find(|(c, _, _)| c.eq_ignore_ascii_case(coin))
        .map(|(_, _, family)| *family)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coin_table_ports_and_families() {
        assert_eq!(default_port("btc"), Some(5000));
        assert_eq!(default_port("MATIC"), Some(5008));
        assert_eq!(default_port("XMR"), Some(5011));
        assert_eq!(default_port("DOGE"), None);
        assert_eq!(default_family("grs"), Some(Family::Btc));
        assert_eq!(default_family("TRX"), Some(Family::Eth));
        assert_eq!(default_family("xmr"), Some(Family::Xmr));
        assert_eq!(default_family("DOGE"), None);
    }

    #[test]
    fn family_names_round_trip() {
        for f in [Family::Btc, Family::Eth, Family::Xmr] {
            assert_eq!(Family::from_name(f.name()), Some(f));
            assert_eq!(Family::from_name(&f.name().to_ascii_uppercase()), Some(f));
        }
        assert_eq!(Family::from_name("doge"), None);
    }
}
