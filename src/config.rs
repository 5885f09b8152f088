//! Configuration: environment variables (SPEC §3) overridden by CLI flags, validated into one
//! [`Config`]. Invalid values are refused with a [`ConfigError`] naming the variable.

use std::time::Duration;

/// The protocol family of a coin daemon (SPEC §2).
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

/// One coin daemon to connect to.
#[derive(Debug, Clone, PartialEq)]
pub struct CoinConfig {
    /// Upper-case symbol.
    pub coin: String,
    pub family: Family,
    pub host: String,
    pub port: u16,
    pub login: String,
    pub password: String,
    pub network: String,
    /// Wallet keys to watch without a database (`{COIN}_WALLETS`).
    pub wallets: Vec<String>,
}

/// PostgreSQL settings; `None` in [`Config::db`] means persistence is off.
#[derive(Debug, Clone, PartialEq)]
pub struct DbConfig {
    /// A libpq-style connection string or URL accepted by `postgres::Config::from_str`.
    pub url: String,
    pub pool_size: usize,
    pub batch_size: usize,
    pub spool_dir: std::path::PathBuf,
}

/// Client-side limits (SPEC §3, second table).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub max_clients: usize,
    /// 0 = unlimited.
    pub max_connections_per_ip: usize,
    pub max_message_bytes: usize,
    pub client_queue_bytes: usize,
    pub rate_limit: f64,
    pub rate_burst: f64,
    pub handshake_timeout: Duration,
    pub auth_timeout: Duration,
    pub ping_interval: Duration,
    pub ring_size: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_clients: 10_000,
            max_connections_per_ip: 1000,
            max_message_bytes: 65_536,
            client_queue_bytes: 1_048_576,
            rate_limit: 20.0,
            rate_burst: 40.0,
            handshake_timeout: Duration::from_secs(10),
            auth_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(30),
            ring_size: 100_000,
        }
    }
}

/// Everything the worker needs to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub coins: Vec<CoinConfig>,
    pub db: Option<DbConfig>,
    pub worker_host: String,
    pub worker_port: u16,
    /// Empty = no authentication.
    pub api_keys: Vec<String>,
    pub log_level: log::LevelFilter,
    pub limits: Limits,
    pub daemon_ping_interval: Duration,
    pub daemon_rpc_timeout: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            coins: Vec::new(),
            db: None,
            worker_host: "127.0.0.1".into(),
            worker_port: 8082,
            api_keys: Vec::new(),
            log_level: log::LevelFilter::Info,
            limits: Limits::default(),
            daemon_ping_interval: Duration::from_secs(20),
            daemon_rpc_timeout: Duration::from_secs(5),
        }
    }
}

/// A refused configuration value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The variable (or flag) at fault, e.g. `BTC_PORT`.
    pub variable: String,
    /// What is wrong with it.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid {}: {}", self.variable, self.message)
    }
}

impl std::error::Error for ConfigError {}
