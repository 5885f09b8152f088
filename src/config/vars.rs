//! The table of configuration variables (docs/configuration.md): names, flag aliases, defaults and
//! meanings.
//!
//! This table is the single source of truth for three things: which flags are known, the default
//! applied when a variable is unset (the default text is parsed by the same code as user input),
//! and the `--help` text. Adding a variable here makes its flag and its help line exist.

use cryptoworker_base::coins::KNOWN_COINS;

/// One process-wide variable.
pub(crate) struct VarSpec {
    /// Environment variable name, e.g. `WORKER_PORT`.
    pub name: &'static str,
    /// Extra flag spellings besides the kebab-case of `name` (without the leading `--`).
    pub aliases: &'static [&'static str],
    /// Default as text (parsed like user input), or `None` when unset by default.
    pub default: Option<&'static str>,
    /// One-line meaning for `--help`.
    pub meaning: &'static str,
}

const fn var(
    name: &'static str,
    aliases: &'static [&'static str],
    default: Option<&'static str>,
    meaning: &'static str,
) -> VarSpec {
    VarSpec {
        name,
        aliases,
        default,
        meaning,
    }
}

/// Every process-wide variable, in help order.
pub(crate) const GLOBAL_VARS: &[VarSpec] = &[
    var(
        "WORKER_COINS",
        &["coins"],
        Some("BTC"),
        "comma list of coins to connect to, case-insensitive",
    ),
    var(
        "BITCART_CRYPTOS",
        &[],
        None,
        "fallback for WORKER_COINS when that is unset",
    ),
    var(
        "WORKER_HOST",
        &["host"],
        Some("127.0.0.1"),
        "address of the client-facing listener",
    ),
    var(
        "WORKER_PORT",
        &["port"],
        Some("8082"),
        "port of the client-facing listener (0 = any free port)",
    ),
    var(
        "WORKER_API_KEYS",
        &["api-keys"],
        None,
        "comma list of client API keys; when set, clients must authenticate",
    ),
    var(
        "LOG_LEVEL",
        &[],
        Some("info"),
        "error, warn, info, debug or trace",
    ),
    var(
        "DATABASE_URL",
        &[],
        None,
        "postgres:// or postgresql:// URL; turns persistence on",
    ),
    var(
        "DB_HOST",
        &[],
        Some("localhost"),
        "PostgreSQL host, used when DATABASE_URL is unset",
    ),
    var(
        "DB_PORT",
        &[],
        Some("5432"),
        "PostgreSQL port, used when DATABASE_URL is unset",
    ),
    var(
        "DB_USER",
        &[],
        Some("postgres"),
        "PostgreSQL user, used when DATABASE_URL is unset",
    ),
    var(
        "DB_PASS",
        &[],
        None,
        "PostgreSQL password, used when DATABASE_URL is unset",
    ),
    var(
        "POSTGRES_DB",
        &[],
        None,
        "PostgreSQL database name; turns persistence on (with DB_HOST..DB_PASS)",
    ),
    var(
        "DB_POOL_SIZE",
        &[],
        Some("2"),
        "database writer threads (1-64)",
    ),
    var(
        "DB_BATCH_SIZE",
        &[],
        Some("500"),
        "rows per database transaction at most (1-10000)",
    ),
    var(
        "DB_SPOOL_DIR",
        &[],
        Some("./spool"),
        "where writes wait while PostgreSQL is unreachable",
    ),
    var(
        "REDIS_URL",
        &[],
        None,
        "redis://[[user]:password@]host[:port][/db]; turns cluster mode on (needs the database, see docs/cluster.md)",
    ),
    var(
        "WORKER_NODE_ID",
        &["node-id"],
        None,
        "this node's name in the cluster, unique per node (default: hostname:WORKER_PORT)",
    ),
    var(
        "REDIS_KEY_PREFIX",
        &[],
        Some("cryptoworker:"),
        "prefix of every Redis key of this cluster, so several clusters can share one Redis",
    ),
    var(
        "REDIS_STREAM_MAXLEN",
        &[],
        Some("100000"),
        "events kept in the Redis stream (approximate trim; 100-100000000)",
    ),
    var(
        "WORKER_MAX_CLIENTS",
        &[],
        Some("10000"),
        "clients beyond this get close 1013",
    ),
    var(
        "WORKER_MAX_CONNECTIONS_PER_IP",
        &[],
        Some("1000"),
        "connections per client IP (0 = unlimited); beyond it HTTP 429",
    ),
    var(
        "WORKER_MAX_MESSAGE_BYTES",
        &[],
        Some("65536"),
        "larger client messages close with 1009",
    ),
    var(
        "WORKER_CLIENT_QUEUE_BYTES",
        &[],
        Some("1048576"),
        "outbound bytes queued per client before close 4008",
    ),
    var(
        "WORKER_CLIENT_SNDBUF",
        &[],
        Some("262144"),
        "kernel send buffer per client socket in bytes (SO_SNDBUF; 0 = kernel autotuning)",
    ),
    var(
        "WORKER_RATE_LIMIT",
        &[],
        Some("20"),
        "client messages per second per connection (token bucket)",
    ),
    var(
        "WORKER_RATE_BURST",
        &[],
        Some("40"),
        "token bucket size for client messages (at least 1)",
    ),
    var(
        "WORKER_HANDSHAKE_TIMEOUT_S",
        &[],
        Some("10"),
        "seconds to finish the HTTP upgrade",
    ),
    var(
        "WORKER_AUTH_TIMEOUT_S",
        &[],
        Some("10"),
        "seconds to authenticate when API keys are set",
    ),
    var(
        "WORKER_PING_INTERVAL_S",
        &[],
        Some("30"),
        "seconds between pings to idle clients",
    ),
    var(
        "WORKER_RING_SIZE",
        &[],
        Some("100000"),
        "events kept in memory for resume",
    ),
    var(
        "DAEMON_PING_INTERVAL_S",
        &[],
        Some("20"),
        "seconds between pings to daemons; 3 silent intervals = dead link",
    ),
    var(
        "DAEMON_RPC_TIMEOUT_S",
        &[],
        Some("5"),
        "JSON-RPC call timeout in seconds",
    ),
    var(
        "DAEMON_ENRICH",
        &[],
        Some("on"),
        "on or off: look up transactions (get_transaction/gettransaction) to fill amounts, outputs and confirmations",
    ),
    var(
        "DAEMON_LOOKUP_WINDOW",
        &[],
        Some("256"),
        "lookups in flight at once per daemon (1-1024): up to 32 keep-alive RPC connections, pipelined beyond that",
    ),
];

/// One per-coin variable: the name is `{COIN}_{suffix}`.
pub(crate) struct CoinVarSpec {
    /// Suffix after `{COIN}_`, e.g. `PORT`.
    pub suffix: &'static str,
    /// Default as help text (per-coin defaults are applied in code, they may depend on the coin).
    pub default: &'static str,
    /// One-line meaning for `--help`.
    pub meaning: &'static str,
}

/// Every per-coin variable, in help order.
pub(crate) const COIN_VARS: &[CoinVarSpec] = &[
    CoinVarSpec {
        suffix: "HOST",
        default: "localhost",
        meaning: "daemon host name or IP address",
    },
    CoinVarSpec {
        suffix: "PORT",
        default: "see the port table",
        meaning: "daemon port (required for a coin outside the table)",
    },
    CoinVarSpec {
        suffix: "LOGIN",
        default: "electrum",
        meaning: "daemon Basic auth user",
    },
    CoinVarSpec {
        suffix: "PASSWORD",
        default: "electrumz",
        meaning: "daemon Basic auth password",
    },
    CoinVarSpec {
        suffix: "NETWORK",
        default: "mainnet",
        meaning: "network name reported in status",
    },
    CoinVarSpec {
        suffix: "WALLETS",
        default: "unset",
        meaning: "comma list of wallet keys (xpub or xpub_contract) to watch",
    },
    CoinVarSpec {
        suffix: "FAMILY",
        default: "see the port table",
        meaning: "btc, eth or xmr (required for a coin outside the table)",
    },
];

/// The kebab-case flag of a variable name: `WORKER_MAX_CLIENTS` -> `worker-max-clients`.
pub(crate) fn kebab(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

/// The global variable a flag (without `--`) stands for, by kebab name or alias.
pub(crate) fn global_for_flag(flag: &str) -> Option<&'static VarSpec> {
    GLOBAL_VARS
        .iter()
        .find(|v| kebab(v.name) == flag || v.aliases.contains(&flag))
}

/// Whether a flag (lower-case, without `--`) can name a setting: a global variable by kebab name
/// or alias, or `{coin}-{suffix}` for a per-coin variable (whether the coin is configured is
/// checked once the coin list is known). Every setting takes a value.
pub(crate) fn flag_arity(flag: &str) -> Option<crate::cli::args::Arity> {
    let per_coin = || {
        COIN_VARS.iter().any(|spec| {
            let suffix = format!("-{}", kebab(spec.suffix));
            flag.strip_suffix(&suffix)
                .is_some_and(|coin| !coin.is_empty())
        })
    };
    (global_for_flag(flag).is_some() || per_coin()).then_some(crate::cli::args::Arity::Value)
}

/// The spec of a global variable by name.
pub(crate) fn global(name: &str) -> Option<&'static VarSpec> {
    GLOBAL_VARS.iter().find(|v| v.name == name)
}

/// The text for `--help`: every variable and flag with its default.
pub fn help_text() -> String {
    let mut out = String::from(
        "Configuration: every setting is an environment variable and a flag (--flag VALUE or\n\
         --flag=VALUE). Flags override variables; empty values count as unset.\n\n",
    );
    for spec in GLOBAL_VARS {
        let mut flags = vec![format!("--{}", kebab(spec.name))];
        flags.extend(spec.aliases.iter().map(|a| format!("--{a}")));
        let default = spec.default.unwrap_or("unset");
        out.push_str(&format!("  {:<31} {}\n", spec.name, flags.join(", ")));
        out.push_str(&format!("      {} (default: {default})\n", spec.meaning));
    }
    out.push_str(
        "\nPer coin (COIN is each entry of WORKER_COINS; flag --coin-suffix, e.g. --btc-port):\n",
    );
    for spec in COIN_VARS {
        let name = format!("{{COIN}}_{}", spec.suffix);
        let flag = format!("--{{coin}}-{}", kebab(spec.suffix));
        out.push_str(&format!("  {name:<31} {flag}\n"));
        out.push_str(&format!(
            "      {} (default: {})\n",
            spec.meaning, spec.default
        ));
    }
    out.push_str("\nKnown coins (default port, family):");
    for (i, (coin, port, family)) in KNOWN_COINS.iter().enumerate() {
        let sep = if i % 5 == 0 { "\n  " } else { "  " };
        out.push_str(&format!("{sep}{coin} {port} {}", family.name()));
    }
    out.push('\n');
    out
}
