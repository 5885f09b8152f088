//! End-to-end tests of [`Config::from_env_and_args`]: defaults, fallbacks, precedence, and that
//! every refusal names its variable or flag. Parsers have their own tests beside them.

use std::collections::HashMap;
use std::time::Duration;

use super::*;

/// Builds a config from `vars` (as the environment) and `args`.
fn build(vars: &[(&str, &str)], args: &[&str]) -> Result<Config, ConfigError> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let env = move |name: &str| map.get(name).cloned();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    Config::from_env_and_args(&env, &args)
}

fn ok(vars: &[(&str, &str)], args: &[&str]) -> Config {
    build(vars, args).unwrap()
}

fn err(vars: &[(&str, &str)], args: &[&str]) -> ConfigError {
    build(vars, args).unwrap_err()
}

#[test]
fn empty_environment_gives_the_spec_defaults() {
    let c = ok(&[], &[]);
    let btc = &c.coins[0];
    assert_eq!(c.coins.len(), 1);
    assert_eq!(
        (btc.coin.as_str(), btc.family, btc.port),
        ("BTC", Family::Btc, 5000)
    );
    assert_eq!(
        (btc.host.as_str(), btc.login.as_str()),
        ("localhost", "electrum")
    );
    assert_eq!(
        (btc.password.as_str(), btc.network.as_str()),
        ("electrumz", "mainnet")
    );
    assert!(btc.wallets.is_empty());
    let expected = Config {
        coins: c.coins.clone(),
        ..Config::default()
    };
    assert_eq!(
        c, expected,
        "the table defaults agree with Config::default()"
    );
    assert_eq!(c.limits, Limits::default());
    assert_eq!(c.db, None);
}

#[test]
fn coins_are_case_insensitive_trimmed_and_deduplicated() {
    let c = ok(&[("WORKER_COINS", " eth, btc ,ETH,xmr")], &[]);
    let names: Vec<_> = c.coins.iter().map(|c| c.coin.as_str()).collect();
    assert_eq!(names, ["ETH", "BTC", "XMR"]);
    assert_eq!(c.coins[0].port, 5002);
    assert_eq!(c.coins[2].family, Family::Xmr);
}

#[test]
fn bitcart_cryptos_is_the_fallback_and_empty_counts_as_unset() {
    let c = ok(&[("BITCART_CRYPTOS", "ltc")], &[]);
    assert_eq!(c.coins[0].coin, "LTC");
    let c = ok(&[("WORKER_COINS", ""), ("BITCART_CRYPTOS", "bch")], &[]);
    assert_eq!(c.coins[0].coin, "BCH");
    let c = ok(&[("WORKER_COINS", "grs"), ("BITCART_CRYPTOS", "bch")], &[]);
    assert_eq!(c.coins[0].coin, "GRS");
    let c = ok(&[("WORKER_COINS", "grs")], &["--bitcart-cryptos", "trx"]);
    assert_eq!(c.coins[0].coin, "TRX", "a flag beats a variable");
}

#[test]
fn empty_coin_entries_are_refused_naming_the_source() {
    let e = err(&[("WORKER_COINS", "btc,,eth")], &[]);
    assert_eq!(e.variable, "WORKER_COINS");
    let e = err(&[("BITCART_CRYPTOS", "btc,")], &[]);
    assert_eq!(e.variable, "BITCART_CRYPTOS");
    let e = err(&[], &["--coins=btc,"]);
    assert_eq!(e.variable, "--coins");
}

#[test]
fn coin_names_that_clash_with_worker_settings_are_refused() {
    let e = err(&[("WORKER_COINS", "btc,db")], &[]);
    assert_eq!(e.variable, "WORKER_COINS");
    assert!(e.message.contains("DB_HOST"), "{e}");
    assert!(build(&[("WORKER_COINS", "worker"), ("WORKER_FAMILY", "btc")], &[]).is_err());
}

#[test]
fn per_coin_variables_are_read() {
    let vars = [
        ("WORKER_COINS", "btc,eth"),
        ("ETH_HOST", "eth.internal"),
        ("ETH_PORT", "7002"),
        ("ETH_LOGIN", "u"),
        ("ETH_PASSWORD", "p w"),
        ("ETH_NETWORK", "testnet"),
        ("ETH_WALLETS", "x1, x2_0xabc,,x1"),
        ("ETH_FAMILY", "xmr"),
    ];
    let eth = &ok(&vars, &[]).coins[1];
    assert_eq!((eth.host.as_str(), eth.port), ("eth.internal", 7002));
    assert_eq!((eth.login.as_str(), eth.password.as_str()), ("u", "p w"));
    assert_eq!(eth.network, "testnet");
    assert_eq!(eth.wallets, ["x1", "x2_0xabc"]);
    assert_eq!(eth.family, Family::Xmr);
    assert_eq!(eth.base_url(), "http://eth.internal:7002");
}

#[test]
fn a_coin_outside_the_table_needs_port_and_family() {
    let e = err(&[("WORKER_COINS", "doge"), ("DOGE_FAMILY", "btc")], &[]);
    assert_eq!(e.variable, "DOGE_PORT");
    let e = err(&[("WORKER_COINS", "doge"), ("DOGE_PORT", "6000")], &[]);
    assert_eq!(e.variable, "DOGE_FAMILY");
    let vars = [
        ("WORKER_COINS", "doge"),
        ("DOGE_PORT", "6000"),
        ("DOGE_FAMILY", "ETH"),
    ];
    let doge = &ok(&vars, &[]).coins[0];
    assert_eq!((doge.port, doge.family), (6000, Family::Eth));
    let c = ok(
        &[],
        &[
            "--coins",
            "doge",
            "--doge-port",
            "6001",
            "--doge-family=btc",
        ],
    );
    assert_eq!((c.coins[0].port, c.coins[0].family), (6001, Family::Btc));
}

#[test]
fn bad_coin_values_name_their_variable() {
    let cases: &[(&str, &str)] = &[
        ("BTC_PORT", "80a"),
        ("BTC_PORT", "0"),
        ("BTC_FAMILY", "sol"),
        ("BTC_HOST", "http://x:1"),
        ("BTC_WALLETS", "a b"),
        ("BTC_HOST", "localhost:5000"),
        ("BTC_LOGIN", "a:b"),
    ];
    for (name, value) in cases {
        let e = err(&[(name, value)], &[]);
        assert_eq!(e.variable, *name, "{name}={value}: {e}");
    }
}

#[test]
fn the_port_message_matches_the_brief() {
    let e = err(&[("WORKER_PORT", "80a")], &[]);
    assert_eq!(
        e.to_string(),
        r#"invalid WORKER_PORT: "80a" is not a port number (0-65535)"#
    );
    assert_eq!(ok(&[("WORKER_PORT", "0")], &[]).worker_port, 0);
}

#[test]
fn flags_override_variables_in_both_syntaxes() {
    let vars = [
        ("WORKER_PORT", "9000"),
        ("WORKER_MAX_CLIENTS", "5"),
        ("BTC_HOST", "a"),
    ];
    let c = ok(
        &vars,
        &["--port", "9001", "--worker-max-clients=7", "--btc-host=b"],
    );
    assert_eq!((c.worker_port, c.limits.max_clients), (9001, 7));
    assert_eq!(c.coins[0].host, "b");
    let c = ok(
        &vars,
        &[
            "--worker-port=9002",
            "--host",
            "0.0.0.0",
            "--log-level",
            "TRACE",
        ],
    );
    assert_eq!(c.worker_port, 9002);
    assert_eq!(c.worker_host, "0.0.0.0");
    assert_eq!(c.log_level, log::LevelFilter::Trace);
}

#[test]
fn errors_from_flags_name_the_flag() {
    let e = err(&[("WORKER_PORT", "9000")], &["--port=x"]);
    assert_eq!(e.variable, "--port");
    let e = err(&[], &["--btc-port", "70000"]);
    assert_eq!(e.variable, "--btc-port");
    let e = err(&[], &["--db-pool-size=0"]);
    assert_eq!(e.variable, "--db-pool-size");
}

#[test]
fn unknown_flags_are_refused_by_name() {
    assert_eq!(err(&[], &["--bogus", "1"]).variable, "--bogus");
    let e = err(&[], &["--eth-port=1"]);
    assert_eq!(e.variable, "--eth-port");
    assert_eq!(err(&[], &["run"]).variable, "run");
    assert_eq!(err(&[], &["--port"]).variable, "--port");
}

#[test]
fn api_keys_and_log_level() {
    let c = ok(&[("WORKER_API_KEYS", "k1, ,k2,")], &[]);
    assert_eq!(c.api_keys, ["k1", "k2"]);
    let c = ok(&[("WORKER_API_KEYS", "k1")], &["--api-keys=k3"]);
    assert_eq!(c.api_keys, ["k3"]);
    assert!(ok(&[("WORKER_API_KEYS", " , ")], &[]).api_keys.is_empty());
    assert_eq!(
        ok(&[("LOG_LEVEL", "Debug")], &[]).log_level,
        log::LevelFilter::Debug
    );
    assert_eq!(err(&[("LOG_LEVEL", "loud")], &[]).variable, "LOG_LEVEL");
    assert!(!format!("{:?}", ok(&[("WORKER_API_KEYS", "sekrit")], &[])).contains("sekrit"));
}

#[test]
fn every_limit_is_read_and_validated_by_name() {
    let vars = [
        ("WORKER_MAX_CLIENTS", "1"),
        ("WORKER_MAX_CONNECTIONS_PER_IP", "0"),
        ("WORKER_MAX_MESSAGE_BYTES", "2"),
        ("WORKER_CLIENT_QUEUE_BYTES", "3"),
        ("WORKER_CLIENT_SNDBUF", "0"),
        ("WORKER_RATE_LIMIT", "0.5"),
        ("WORKER_RATE_BURST", "1.5"),
        ("WORKER_HANDSHAKE_TIMEOUT_S", "4"),
        ("WORKER_AUTH_TIMEOUT_S", "5"),
        ("WORKER_PING_INTERVAL_S", "6"),
        ("WORKER_RING_SIZE", "1"),
        ("DAEMON_PING_INTERVAL_S", "7"),
        ("DAEMON_RPC_TIMEOUT_S", "8"),
    ];
    let c = ok(&vars, &[]);
    let l = &c.limits;
    assert_eq!((l.max_clients, l.max_connections_per_ip), (1, 0));
    assert_eq!((l.max_message_bytes, l.client_queue_bytes), (2, 3));
    assert_eq!(l.client_sndbuf, 0);
    assert_eq!((l.rate_limit, l.rate_burst), (0.5, 1.5));
    assert_eq!(l.handshake_timeout, Duration::from_secs(4));
    assert_eq!(l.auth_timeout, Duration::from_secs(5));
    assert_eq!(l.ping_interval, Duration::from_secs(6));
    assert_eq!(l.ring_size, 1);
    assert_eq!(c.daemon_ping_interval, Duration::from_secs(7));
    assert_eq!(c.daemon_rpc_timeout, Duration::from_secs(8));
    let bad = [
        "0", "0", "0", "0", "-1", "0", "0.5", "0", "1.5", "-1", "0", "0", "abc",
    ];
    for ((name, _), value) in vars.iter().zip(bad) {
        if *name == "WORKER_MAX_CONNECTIONS_PER_IP" {
            let e = err(&[(name, "-1")], &[]);
            assert_eq!(e.variable, *name);
            continue;
        }
        let e = err(&[(name, value)], &[]);
        assert_eq!(e.variable, *name, "{name}={value}: {e}");
    }
}

#[test]
fn database_is_off_without_url_or_dbname() {
    assert_eq!(ok(&[("DB_HOST", "db"), ("DB_PASS", "x")], &[]).db, None);
}

#[test]
fn database_url_turns_persistence_on_with_pool_settings() {
    let vars = [
        ("DATABASE_URL", "postgresql://u:p@db:5433/app"),
        ("DB_POOL_SIZE", "64"),
        ("DB_BATCH_SIZE", "10000"),
        ("DB_SPOOL_DIR", "/var/spool/cw"),
        ("POSTGRES_DB", "ignored"),
    ];
    let db = ok(&vars, &[]).db.unwrap();
    assert_eq!(db.url, "postgresql://u:p@db:5433/app");
    assert_eq!((db.pool_size, db.batch_size), (64, 10000));
    assert_eq!(db.spool_dir, std::path::PathBuf::from("/var/spool/cw"));
    let db = ok(&[("DATABASE_URL", "postgres://db/app")], &[])
        .db
        .unwrap();
    assert_eq!((db.pool_size, db.batch_size), (2, 500));
    assert_eq!(db.spool_dir, std::path::PathBuf::from("./spool"));
}

#[test]
fn database_pool_and_batch_bounds() {
    assert_eq!(err(&[("DB_POOL_SIZE", "65")], &[]).variable, "DB_POOL_SIZE");
    assert_eq!(
        err(&[("DB_BATCH_SIZE", "10001")], &[]).variable,
        "DB_BATCH_SIZE"
    );
    assert_eq!(
        err(&[("DB_BATCH_SIZE", "0")], &[]).variable,
        "DB_BATCH_SIZE"
    );
}

#[test]
fn lookup_window_defaults_to_256_and_is_bounded() {
    assert_eq!(ok(&[], &[]).daemon_lookup_window, 256);
    let c = ok(&[("DAEMON_LOOKUP_WINDOW", "1024")], &[]);
    assert_eq!(c.daemon_lookup_window, 1024);
    let c = ok(&[], &["--daemon-lookup-window", "1"]);
    assert_eq!(c.daemon_lookup_window, 1);
    for bad in ["0", "1025", "-1", "many"] {
        let e = err(&[("DAEMON_LOOKUP_WINDOW", bad)], &[]);
        assert_eq!(e.variable, "DAEMON_LOOKUP_WINDOW", "{bad}: {e}");
    }
    assert!(help_text().contains("DAEMON_LOOKUP_WINDOW"));
}

#[test]
fn postgres_db_builds_a_quoted_connection_string() {
    let vars = [
        ("POSTGRES_DB", "bitcart"),
        ("DB_HOST", "database"),
        ("DB_PORT", "6543"),
        ("DB_USER", "o'neil"),
        ("DB_PASS", r"p\ 'x"),
    ];
    let db = ok(&vars, &[]).db.unwrap();
    let pg: postgres::Config = db.url.parse().unwrap();
    assert_eq!(pg.get_dbname(), Some("bitcart"));
    assert_eq!(pg.get_user(), Some("o'neil"));
    assert_eq!(pg.get_password(), Some(br"p\ 'x".as_slice()));
    assert_eq!(pg.get_ports(), [6543]);
    assert_eq!(
        db.describe(),
        "host=database port=6543 user=o'neil dbname=bitcart"
    );
    let db = ok(&[("POSTGRES_DB", "x")], &[]).db.unwrap();
    let pg: postgres::Config = db.url.parse().unwrap();
    assert_eq!((pg.get_user(), pg.get_password()), (Some("postgres"), None));
    assert_eq!(
        db.describe(),
        "host=localhost port=5432 user=postgres dbname=x"
    );
}

#[test]
fn database_errors_name_the_variable_and_hide_the_password() {
    let e = err(&[("DATABASE_URL", "mysql://root:hunter2@db/x")], &[]);
    assert_eq!(e.variable, "DATABASE_URL");
    assert!(!e.to_string().contains("hunter2"));
    let e = err(&[("DATABASE_URL", "postgres://u:hunter2@db:port/x")], &[]);
    assert_eq!(e.variable, "DATABASE_URL");
    assert!(!e.to_string().contains("hunter2"));
    let e = err(&[], &["--database-url=nonsense"]);
    assert_eq!(e.variable, "--database-url");
    let e = err(&[("POSTGRES_DB", "x"), ("DB_PORT", "x")], &[]);
    assert_eq!(e.variable, "DB_PORT");
    let c = ok(&[("DATABASE_URL", "postgres://u:hunter2@db/x")], &[]);
    assert!(!format!("{c:?}").contains("hunter2"));
}

#[test]
fn an_empty_flag_unsets_the_variable() {
    let c = ok(&[("DATABASE_URL", "postgres://db/x")], &["--database-url="]);
    assert_eq!(c.db, None);
}

#[test]
fn debug_hides_daemon_passwords() {
    let c = ok(&[("BTC_PASSWORD", "hunter2")], &[]);
    assert!(!format!("{c:?}").contains("hunter2"));
}

#[test]
fn ipv6_hosts_are_bare_and_urls_bracket_them() {
    let c = ok(&[("BTC_HOST", "[::1]"), ("WORKER_HOST", "::")], &[]);
    assert_eq!(c.coins[0].host, "::1");
    assert_eq!(c.coins[0].base_url(), "http://[::1]:5000");
    assert_eq!(c.worker_host, "::");
}

#[test]
fn help_lists_every_variable_flag_and_default() {
    let help = help_text();
    for spec in vars::GLOBAL_VARS {
        assert!(help.contains(spec.name), "{}", spec.name);
        assert!(help.contains(&format!("--{}", vars::kebab(spec.name))));
        if let Some(default) = spec.default {
            assert!(
                help.contains(&format!("(default: {default})")),
                "{}",
                spec.name
            );
        }
    }
    for flag in [
        "--coins",
        "--host",
        "--port",
        "--log-level",
        "--database-url",
        "--api-keys",
    ] {
        assert!(help.contains(flag), "{flag}");
    }
    assert!(help.contains("{COIN}_WALLETS") && help.contains("XMR 5011"));
}

#[test]
fn from_process_reads_the_real_environment() {
    // Only flags, so the result does not depend on the test machine's environment beyond the
    // variables the flags override; an unknown flag must still be refused.
    let args = vec!["--coins=btc".to_string(), "--bogus=1".to_string()];
    assert_eq!(Config::from_process(&args).unwrap_err().variable, "--bogus");
}
