//! Configuration: environment variables (docs/configuration.md) overridden by CLI flags, validated
//! into one [`Config`]. Invalid values are refused with a [`ConfigError`] naming the variable, or
//! the flag when a flag was the source.
//!
//! Invariants: a `Config` returned by [`Config::from_env_and_args`] is fully validated (ports,
//! ranges, URLs), so the rest of the crate trusts it; flags override variables and empty values
//! count as unset; no error message and no `Debug` output contains a password or an API key.
//! The variable table in `vars` is the one source of flag names, defaults and `--help` text.

use std::fmt;
use std::time::Duration;

mod cluster;
mod db;
mod source;
#[cfg(test)]
mod tests;
mod values;
mod vars;

use crate::cli::args::{self, ArgError, Grammar, Parsed};
pub use cryptoworker_base::coins::{Family, default_family, default_port};
use source::Sources;
pub use vars::help_text;

/// The grammar of the worker's settings as the options of `command` (`run`, `check`,
/// `migrate`): one flag per variable of the table in `vars`, see [`Config::from_env_and_args`].
pub fn settings_grammar(command: &str) -> Grammar<'_> {
    Grammar {
        command,
        options: args::Options::Lookup(vars::flag_arity),
        positionals: false,
    }
}

/// Parses `args` as settings flags; a refused command line names the flag at fault.
fn parse_settings(args: &[String]) -> Result<Parsed, ConfigError> {
    let parsed = args::parse(&settings_grammar("run"), args).map_err(ConfigError::from)?;
    match parsed.help {
        true => Err(ConfigError::new(
            "--help",
            "is a command's flag, not a setting",
        )),
        false => Ok(parsed),
    }
}

impl From<ArgError> for ConfigError {
    fn from(e: ArgError) -> ConfigError {
        ConfigError::new(&e.flag, e.reason())
    }
}

/// One coin daemon to connect to. `Debug` hides the password.
#[derive(Clone, PartialEq)]
pub struct CoinConfig {
    /// Upper-case symbol.
    pub coin: String,
    /// Protocol family (`{COIN}_FAMILY`, default from the coin table).
    pub family: Family,
    /// Daemon host name or IP address, IPv6 without brackets (`{COIN}_HOST`).
    pub host: String,
    /// Daemon port, never 0 (`{COIN}_PORT`, default from the coin table).
    pub port: u16,
    /// Basic auth user (`{COIN}_LOGIN`).
    pub login: String,
    /// Basic auth password (`{COIN}_PASSWORD`); never log it.
    pub password: String,
    /// Network name reported in status (`{COIN}_NETWORK`).
    pub network: String,
    /// Wallet keys to watch without a database (`{COIN}_WALLETS`).
    pub wallets: Vec<String>,
}

#[cfg(test)]
impl CoinConfig {
    /// A BTC daemon at an address no resolver knows, for unit tests of the state machines.
    pub(crate) fn test_btc(wallets: &[&str]) -> CoinConfig {
        CoinConfig {
            coin: "BTC".into(),
            family: Family::Btc,
            host: "btc.invalid".into(),
            port: 5000,
            login: "l".into(),
            password: "p".into(),
            network: "mainnet".into(),
            wallets: wallets.iter().map(|w| w.to_string()).collect(),
        }
    }
}

/// PostgreSQL settings; `None` in [`Config::db`] means persistence is off. `Debug` shows
/// [`DbConfig::describe`] instead of the URL, so it never shows the password.
#[derive(Clone, PartialEq)]
pub struct DbConfig {
    /// A libpq-style connection string or URL accepted by `postgres::Config::from_str`.
    /// Contains the password: log [`DbConfig::describe`] instead.
    pub url: String,
    /// Writer threads, 1..=64 (`DB_POOL_SIZE`).
    pub pool_size: usize,
    /// Rows per transaction at most, 1..=10000 (`DB_BATCH_SIZE`).
    pub batch_size: usize,
    /// Where writes wait while PostgreSQL is unreachable (`DB_SPOOL_DIR`).
    pub spool_dir: std::path::PathBuf,
}

/// Client-side limits (docs/configuration.md, "Client limits and timeouts").
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Clients beyond this get close 1013 (`WORKER_MAX_CLIENTS`).
    pub max_clients: usize,
    /// 0 = unlimited; beyond it the upgrade gets HTTP 429 (`WORKER_MAX_CONNECTIONS_PER_IP`).
    pub max_connections_per_ip: usize,
    /// Larger client messages close with 1009 (`WORKER_MAX_MESSAGE_BYTES`).
    pub max_message_bytes: usize,
    /// Outbound bytes queued per client before close 4008 (`WORKER_CLIENT_QUEUE_BYTES`).
    pub client_queue_bytes: usize,
    /// Kernel send buffer per client socket, bytes; 0 leaves the kernel's autotuning
    /// (`WORKER_CLIENT_SNDBUF`).
    pub client_sndbuf: usize,
    /// Token bucket refill, messages per second, > 0 (`WORKER_RATE_LIMIT`).
    pub rate_limit: f64,
    /// Token bucket size, >= 1 (`WORKER_RATE_BURST`).
    pub rate_burst: f64,
    /// Time to finish the HTTP upgrade (`WORKER_HANDSHAKE_TIMEOUT_S`).
    pub handshake_timeout: Duration,
    /// Time to authenticate when API keys are set (`WORKER_AUTH_TIMEOUT_S`).
    pub auth_timeout: Duration,
    /// Idle clients are pinged this often; two silent intervals close (`WORKER_PING_INTERVAL_S`).
    pub ping_interval: Duration,
    /// Events kept in memory for resume, >= 1 (`WORKER_RING_SIZE`).
    pub ring_size: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_clients: 10_000,
            max_connections_per_ip: 1000,
            max_message_bytes: 65_536,
            client_queue_bytes: 1_048_576,
            client_sndbuf: 262_144,
            rate_limit: 20.0,
            rate_burst: 40.0,
            handshake_timeout: Duration::from_secs(10),
            auth_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(30),
            ring_size: 100_000,
        }
    }
}

/// Everything the worker needs to run. `Debug` shows the number of API keys, not the keys.
#[derive(Clone, PartialEq)]
pub struct Config {
    /// The daemons, in `WORKER_COINS` order, one per coin.
    pub coins: Vec<CoinConfig>,
    /// `None` = persistence off (memory only).
    pub db: Option<DbConfig>,
    /// `None` = a single worker; `Some` = cluster mode (`REDIS_URL`, docs/cluster.md).
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// Listener address, IPv6 without brackets (`WORKER_HOST`).
    pub worker_host: String,
    /// Listener port, 0 = ephemeral (`WORKER_PORT`).
    pub worker_port: u16,
    /// Empty = no authentication (`WORKER_API_KEYS`); never log them.
    pub api_keys: Vec<String>,
    /// `LOG_LEVEL`.
    pub log_level: log::LevelFilter,
    /// Client-side limits and timeouts.
    pub limits: Limits,
    /// Pings to daemons; three silent intervals mean the link is dead (`DAEMON_PING_INTERVAL_S`).
    pub daemon_ping_interval: Duration,
    /// JSON-RPC call timeout (`DAEMON_RPC_TIMEOUT_S`).
    pub daemon_rpc_timeout: Duration,
    /// Whether transactions are looked up to fill amounts and confirmations (`DAEMON_ENRICH`).
    pub daemon_enrich: bool,
    /// Lookups in flight at once per daemon (`DAEMON_LOOKUP_WINDOW`): spread over at most
    /// `rpc::MAX_LOOKUP_CONNECTIONS` keep-alive connections, pipelined beyond that.
    pub daemon_lookup_window: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            coins: Vec::new(),
            db: None,
            cluster: None,
            worker_host: "127.0.0.1".into(),
            worker_port: 8082,
            api_keys: Vec::new(),
            log_level: log::LevelFilter::Info,
            limits: Limits::default(),
            daemon_ping_interval: Duration::from_secs(20),
            daemon_rpc_timeout: Duration::from_secs(5),
            daemon_enrich: true,
            daemon_lookup_window: 256,
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

impl ConfigError {
    /// An error about `variable` (a variable name or a flag as typed).
    pub fn new(variable: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            variable: variable.into(),
            message: message.into(),
        }
    }
}

impl Config {
    /// Reads the variables of docs/configuration.md through `env` (a lookup, so tests need no
    /// process env) and applies CLI flags in `args` on top. Every variable NAME has a flag
    /// `--name-in-kebab-case`, given as `--flag value` or `--flag=value`; aliases: `--coins`,
    /// `--host`, `--port`, `--api-keys`. The first invalid setting is refused with an error naming
    /// it.
    pub fn from_env_and_args(
        env: &dyn Fn(&str) -> Option<String>,
        args: &[String],
    ) -> Result<Config, ConfigError> {
        Config::from_env_and_flags(env, &parse_settings(args)?)
    }

    /// Like [`Config::from_env_and_args`], with the flags already parsed by
    /// [`settings_grammar`].
    pub fn from_env_and_flags(
        env: &dyn Fn(&str) -> Option<String>,
        flags: &Parsed,
    ) -> Result<Config, ConfigError> {
        let s = Sources::new(env, flags);
        let names = coin_names(&s)?;
        s.check_flags(&names)?;
        let coins = names
            .iter()
            .map(|name| coin(&s, name))
            .collect::<Result<Vec<_>, _>>()?;
        let api_keys = match s.get("WORKER_API_KEYS") {
            Some(v) => values::api_keys(&v)?,
            None => Vec::new(),
        };
        let db = db::database(&s)?;
        let worker_port = values::port(&s.get_or_default("WORKER_PORT"), true)?;
        Ok(Config {
            coins,
            cluster: cluster::cluster(&s, db.is_some(), worker_port)?,
            db,
            worker_host: values::host(&s.get_or_default("WORKER_HOST"))?,
            worker_port,
            api_keys,
            log_level: values::log_level(&s.get_or_default("LOG_LEVEL"))?,
            limits: limits(&s)?,
            daemon_ping_interval: values::seconds(&s.get_or_default("DAEMON_PING_INTERVAL_S"))?,
            daemon_rpc_timeout: values::seconds(&s.get_or_default("DAEMON_RPC_TIMEOUT_S"))?,
            daemon_enrich: values::switch(&s.get_or_default("DAEMON_ENRICH"))?,
            daemon_lookup_window: values::usize_in(
                &s.get_or_default("DAEMON_LOOKUP_WINDOW"),
                crate::daemon::rpc::MIN_WINDOW,
                crate::daemon::rpc::MAX_WINDOW,
            )?,
        })
    }

    /// [`Config::from_env_and_args`] over the process environment. A variable the worker reads
    /// whose value is not UTF-8 is refused by name.
    pub fn from_process(args: &[String]) -> Result<Config, ConfigError> {
        Config::from_process_flags(&parse_settings(args)?)
    }

    /// [`Config::from_env_and_flags`] over the process environment.
    pub fn from_process_flags(flags: &Parsed) -> Result<Config, ConfigError> {
        let not_utf8 = std::cell::RefCell::new(None::<String>);
        let env = |name: &str| match std::env::var(name) {
            Ok(value) => Some(value),
            Err(std::env::VarError::NotPresent) => None,
            Err(std::env::VarError::NotUnicode(_)) => {
                not_utf8
                    .borrow_mut()
                    .get_or_insert_with(|| name.to_string());
                None
            }
        };
        let result = Config::from_env_and_flags(&env, flags);
        match not_utf8.into_inner() {
            Some(name) => Err(ConfigError::new(name, "is not valid UTF-8")),
            None => result,
        }
    }
}

/// The coin list: flags (`--worker-coins`/`--coins`, then `--bitcart-cryptos`) over the
/// variables (`WORKER_COINS`, then `BITCART_CRYPTOS`), default `BTC`.
fn coin_names(s: &Sources) -> Result<Vec<String>, ConfigError> {
    let v = s
        .flag("WORKER_COINS")
        .or_else(|| s.flag("BITCART_CRYPTOS"))
        .or_else(|| s.env("WORKER_COINS"))
        .or_else(|| s.env("BITCART_CRYPTOS"))
        .unwrap_or_else(|| s.get_or_default("WORKER_COINS"));
    let coins = values::coins(&v)?;
    for coin in &coins {
        let clash = vars::COIN_VARS
            .iter()
            .map(|spec| format!("{coin}_{}", spec.suffix))
            .find(|name| vars::global(name).is_some());
        if let Some(name) = clash {
            let message = format!("coin {coin} cannot be used: its {name} is a worker setting");
            return Err(ConfigError::new(&v.source, message));
        }
    }
    Ok(coins)
}

/// One coin's daemon settings from `{COIN}_*`.
fn coin(s: &Sources, coin: &str) -> Result<CoinConfig, ConfigError> {
    let var = |suffix: &str| format!("{coin}_{suffix}");
    let get = |suffix: &str| s.get(&var(suffix));
    let unknown = |suffix: &str, what: &str| {
        let message = format!("missing; {coin} is not a known coin, so set its daemon {what}");
        ConfigError::new(var(suffix), message)
    };
    let port = match get("PORT") {
        Some(v) => values::port(&v, false)?,
        None => default_port(coin).ok_or_else(|| unknown("PORT", "port"))?,
    };
    let family = match get("FAMILY") {
        Some(v) => values::family(&v)?,
        None => default_family(coin).ok_or_else(|| unknown("FAMILY", "family (btc, eth, xmr)"))?,
    };
    let host = match get("HOST") {
        Some(v) => values::host(&v)?,
        None => "localhost".to_string(),
    };
    let wallets = match get("WALLETS") {
        Some(v) => values::wallets(&v)?,
        None => Vec::new(),
    };
    let login = match get("LOGIN") {
        Some(v) => values::login(&v)?,
        None => "electrum".to_string(),
    };
    let text = |suffix: &str, default: &str| get(suffix).map_or(default.to_string(), |v| v.text);
    Ok(CoinConfig {
        coin: coin.to_string(),
        family,
        host,
        port,
        login,
        password: text("PASSWORD", "electrumz"),
        network: text("NETWORK", "mainnet").trim().to_string(),
        wallets,
    })
}

/// The limits of docs/configuration.md, "Client limits and timeouts".
fn limits(s: &Sources) -> Result<Limits, ConfigError> {
    let n =
        |name: &str, min: usize, max: usize| values::usize_in(&s.get_or_default(name), min, max);
    let secs = |name: &str| values::seconds(&s.get_or_default(name));
    let rate = |name: &str, min: f64| values::number_in(&s.get_or_default(name), min, 1e6);
    Ok(Limits {
        max_clients: n("WORKER_MAX_CLIENTS", 1, 1_000_000)?,
        max_connections_per_ip: n("WORKER_MAX_CONNECTIONS_PER_IP", 0, 1_000_000)?,
        max_message_bytes: n("WORKER_MAX_MESSAGE_BYTES", 1, 1 << 30)?,
        client_queue_bytes: n("WORKER_CLIENT_QUEUE_BYTES", 1, 1 << 30)?,
        client_sndbuf: n("WORKER_CLIENT_SNDBUF", 0, 1 << 30)?,
        rate_limit: rate("WORKER_RATE_LIMIT", 0.001)?,
        rate_burst: rate("WORKER_RATE_BURST", 1.0)?,
        handshake_timeout: secs("WORKER_HANDSHAKE_TIMEOUT_S")?,
        auth_timeout: secs("WORKER_AUTH_TIMEOUT_S")?,
        ping_interval: secs("WORKER_PING_INTERVAL_S")?,
        ring_size: n("WORKER_RING_SIZE", 1, 10_000_000)?,
    })
}

impl CoinConfig {
    /// The daemon's base URL, `http://host:port` (IPv6 hosts in brackets), for RPC and status.
    pub fn base_url(&self) -> String {
        match self.host.contains(':') {
            true => format!("http://[{}]:{}", self.host, self.port),
            false => format!("http://{}:{}", self.host, self.port),
        }
    }
}

impl fmt::Debug for CoinConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoinConfig")
            .field("coin", &self.coin)
            .field("family", &self.family)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("login", &self.login)
            .field("password", &"***")
            .field("network", &self.network)
            .field("wallets", &self.wallets)
            .finish()
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("coins", &self.coins)
            .field("db", &self.db)
            .field("cluster", &self.cluster)
            .field("worker_host", &self.worker_host)
            .field("worker_port", &self.worker_port)
            .field("api_keys", &format_args!("{} key(s)", self.api_keys.len()))
            .field("log_level", &self.log_level)
            .field("limits", &self.limits)
            .field("daemon_ping_interval", &self.daemon_ping_interval)
            .field("daemon_rpc_timeout", &self.daemon_rpc_timeout)
            .field("daemon_enrich", &self.daemon_enrich)
            .field("daemon_lookup_window", &self.daemon_lookup_window)
            .finish()
    }
}
