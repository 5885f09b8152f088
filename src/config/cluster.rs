//! Cluster settings (docs/cluster.md): `REDIS_URL` turns cluster mode on, `WORKER_NODE_ID`,
//! `REDIS_KEY_PREFIX` and `REDIS_STREAM_MAXLEN` tune it.
//!
//! Invariants: cluster mode is on only when `REDIS_URL` is set, and then only with the database
//! (the leader election and the event log live there); the node id and the key prefix are
//! printable words without spaces; no error message quotes the Redis password.

use super::ConfigError;
use super::source::{Sources, Value};
use super::values::{int_in, quoted};
use crate::cluster::{ClusterConfig, RedisUrl, default_node_id};

/// Longest node id and key prefix.
const MAX_NAME: usize = 200;

/// Reads and validates the cluster variables; `Ok(None)` means cluster mode is off.
pub(crate) fn cluster(
    s: &Sources,
    has_database: bool,
    worker_port: u16,
) -> Result<Option<ClusterConfig>, ConfigError> {
    let prefix = word(&s.get_or_default("REDIS_KEY_PREFIX"))?;
    let maxlen = int_in(&s.get_or_default("REDIS_STREAM_MAXLEN"), 100, 100_000_000)?;
    let node_id = s.get("WORKER_NODE_ID").map(|v| word(&v)).transpose()?;
    let Some(url) = s.get("REDIS_URL") else {
        return Ok(None);
    };
    let redis = RedisUrl::parse(url.text.trim())
        .map_err(|e| ConfigError::new(&url.source, format!("not a valid Redis URL: {e}")))?;
    if !has_database {
        return Err(ConfigError::new(
            &url.source,
            "cluster mode needs the database: set DATABASE_URL (or POSTGRES_DB) too",
        ));
    }
    Ok(Some(ClusterConfig {
        redis,
        node_id: node_id.unwrap_or_else(|| default_node_id(worker_port)),
        key_prefix: prefix,
        stream_maxlen: maxlen,
    }))
}

/// A non-empty printable word of at most [`MAX_NAME`] characters.
fn word(v: &Value) -> Result<String, ConfigError> {
    let text = v.text.trim();
    if text.chars().count() > MAX_NAME {
        return Err(ConfigError::new(
            &v.source,
            format!("is longer than {MAX_NAME} characters"),
        ));
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ConfigError::new(
            &v.source,
            format!(
                "{} must not contain spaces or control characters",
                quoted(text)
            ),
        ));
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    fn parse(vars: &[(&str, &str)]) -> Result<Config, super::ConfigError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let env = move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        Config::from_env_and_args(&env, &[])
    }

    const DB: (&str, &str) = ("DATABASE_URL", "postgres://u@127.0.0.1/test");

    #[test]
    fn cluster_mode_is_off_without_redis_url() {
        assert_eq!(parse(&[DB]).unwrap().cluster, None);
        assert_eq!(parse(&[("WORKER_NODE_ID", "n1")]).unwrap().cluster, None);
    }

    #[test]
    fn defaults_and_overrides() {
        let c = parse(&[
            DB,
            ("REDIS_URL", "redis://127.0.0.1:6379/0"),
            ("WORKER_PORT", "9001"),
        ])
        .unwrap()
        .cluster
        .unwrap();
        assert!(c.node_id.ends_with(":9001"), "{}", c.node_id);
        assert_eq!(
            (c.key_prefix.as_str(), c.stream_maxlen),
            ("cryptoworker:", 100_000)
        );
        assert_eq!((c.redis.port, c.redis.db), (6379, 0));
        let c = parse(&[
            DB,
            ("REDIS_URL", "redis://r/2"),
            ("WORKER_NODE_ID", "node-a"),
            ("REDIS_KEY_PREFIX", "shop1:"),
            ("REDIS_STREAM_MAXLEN", "5000"),
        ])
        .unwrap()
        .cluster
        .unwrap();
        assert_eq!(
            (
                c.node_id.as_str(),
                c.key_prefix.as_str(),
                c.stream_maxlen,
                c.redis.db
            ),
            ("node-a", "shop1:", 5000, 2)
        );
    }

    #[test]
    fn refusals_name_the_variable() {
        /// Variables, the variable the error names, a part of its message.
        type Case = (
            &'static [(&'static str, &'static str)],
            &'static str,
            &'static str,
        );
        let cases: &[Case] = &[
            (
                &[("REDIS_URL", "redis://h")],
                "REDIS_URL",
                "needs the database",
            ),
            (&[DB, ("REDIS_URL", "http://h")], "REDIS_URL", "redis://"),
            (
                &[DB, ("REDIS_URL", "redis://:hunter2@h:0")],
                "REDIS_URL",
                "port",
            ),
            (&[DB, ("WORKER_NODE_ID", "a b")], "WORKER_NODE_ID", "spaces"),
            (
                &[DB, ("REDIS_KEY_PREFIX", "x\ty")],
                "REDIS_KEY_PREFIX",
                "spaces",
            ),
            (
                &[DB, ("REDIS_STREAM_MAXLEN", "10")],
                "REDIS_STREAM_MAXLEN",
                "out of range",
            ),
        ];
        for (vars, variable, text) in cases {
            let e = parse(vars).expect_err(variable);
            assert_eq!(e.variable, *variable, "{e}");
            assert!(e.message.contains(text), "{e}");
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
    }
}
