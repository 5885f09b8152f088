//! Database settings (docs/configuration.md, "Database"): `DATABASE_URL`, or
//! `DB_HOST`/`DB_PORT`/`DB_USER`/`DB_PASS`/ `POSTGRES_DB` assembled into a libpq key/value string,
//! plus pool, batch and spool settings.
//!
//! Invariants: persistence is on only when `DATABASE_URL` or `POSTGRES_DB` is set; the resulting
//! [`DbConfig::url`] is always accepted by `postgres::Config::from_str`; no error message and no
//! `Debug` output contains a password.

use std::fmt;
use std::str::FromStr;

use super::source::{Sources, Value};
use super::values::{port, quoted, usize_in};
use super::{ConfigError, DbConfig};

/// Reads and validates every database variable; `Ok(None)` means persistence is off.
pub(crate) fn database(s: &Sources) -> Result<Option<DbConfig>, ConfigError> {
    let pool_size = usize_in(&s.get_or_default("DB_POOL_SIZE"), 1, 64)?;
    let batch_size = usize_in(&s.get_or_default("DB_BATCH_SIZE"), 1, 10_000)?;
    let spool_dir = s.get_or_default("DB_SPOOL_DIR").text.trim().into();
    let discrete = discrete_url(s)?;
    let url = match s.get("DATABASE_URL") {
        Some(v) => check_url(&v)?,
        None => match discrete {
            Some(url) => url,
            None => return Ok(None),
        },
    };
    Ok(Some(DbConfig {
        url,
        pool_size,
        batch_size,
        spool_dir,
    }))
}

/// The key/value string from `DB_*` and `POSTGRES_DB`; `None` when `POSTGRES_DB` is unset. The
/// `DB_*` values are validated either way.
fn discrete_url(s: &Sources) -> Result<Option<String>, ConfigError> {
    let host = s.get_or_default("DB_HOST");
    let port = port(&s.get_or_default("DB_PORT"), false)?;
    let user = s.get_or_default("DB_USER");
    let password = s.get("DB_PASS");
    let Some(dbname) = s.get("POSTGRES_DB") else {
        return Ok(None);
    };
    let mut url = format!(
        "host={} port={port} user={} dbname={}",
        quote(host.text.trim()),
        quote(user.text.trim()),
        quote(dbname.text.trim())
    );
    if let Some(password) = password {
        url.push_str(&format!(" password={}", quote(&password.text)));
    }
    if postgres::Config::from_str(&url).is_err() {
        return Err(ConfigError::new(
            &dbname.source,
            "DB_HOST, DB_USER, DB_PASS and POSTGRES_DB do not form a valid connection string",
        ));
    }
    Ok(Some(url))
}

/// A libpq key/value value in single quotes, with `\` and `'` escaped.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Validates a `postgres://` or `postgresql://` URL and returns it with a lower-case scheme.
fn check_url(v: &Value) -> Result<String, ConfigError> {
    const FORM: &str = "postgres://user:password@host:port/dbname";
    let text = v.text.trim();
    let fail = |message: String| ConfigError::new(&v.source, message);
    let Some((scheme, rest)) = text.split_once("://") else {
        return Err(fail(format!("must be a URL of the form {FORM}")));
    };
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "postgres" && scheme != "postgresql" {
        let shown = if scheme.len() <= 32 && scheme.chars().all(|c| c.is_ascii_graphic()) {
            format!("scheme {} is not supported", quoted(&scheme))
        } else {
            "the scheme is not supported".to_string()
        };
        return Err(fail(format!("{shown}; use {FORM} (or postgresql://)")));
    }
    let url = format!("{scheme}://{rest}");
    let config = postgres::Config::from_str(&url).map_err(|e| {
        let detail = std::error::Error::source(&e).map_or_else(|| e.to_string(), |c| c.to_string());
        let secret = secrets(&url).iter().any(|s| detail.contains(s.as_str()));
        match secret {
            true => fail(format!("is not a valid PostgreSQL URL ({FORM})")),
            false => fail(format!(
                "is not a valid PostgreSQL URL ({detail}); use {FORM}"
            )),
        }
    })?;
    if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
        return Err(fail(format!("names no host; use {FORM}")));
    }
    if config.get_ssl_mode() == postgres::config::SslMode::Require {
        return Err(fail(
            "sslmode=require needs TLS, which this build does not include; \
             use sslmode=prefer or sslmode=disable"
                .to_string(),
        ));
    }
    Ok(url)
}

/// Every spelling of the passwords in a URL (user-info and `password=` parameter, raw and
/// percent-decoded), non-empty ones only.
fn secrets(url: &str) -> Vec<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let mut raw = Vec::new();
    if let Some((_, pw)) = rest
        .split_once('@')
        .and_then(|(creds, _)| creds.split_once(':'))
    {
        raw.push(pw);
    }
    if let Some((_, query)) = rest.split_once('?') {
        let pairs = query.split('&').filter_map(|p| p.split_once('='));
        raw.extend(pairs.filter(|(k, _)| *k == "password").map(|(_, v)| v));
    }
    let mut out: Vec<String> = raw.iter().map(|s| s.to_string()).collect();
    out.extend(raw.iter().map(|s| percent_decode(s)));
    out.retain(|s| !s.is_empty());
    out
}

/// `%XX` decoding (invalid escapes are kept as typed).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl DbConfig {
    /// The connection target without secrets, for logs and status, e.g.
    /// `host=db port=5432 user=postgres dbname=bitcart`.
    pub fn describe(&self) -> String {
        let Ok(config) = postgres::Config::from_str(&self.url) else {
            return "an unparsable connection string".to_string();
        };
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .map(|h| match h {
                postgres::config::Host::Tcp(name) => name.clone(),
                #[cfg(unix)]
                postgres::config::Host::Unix(path) => path.display().to_string(),
            })
            .collect();
        let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
        format!(
            "host={} port={} user={} dbname={}",
            hosts.join(","),
            if ports.is_empty() {
                "5432".to_string()
            } else {
                ports.join(",")
            },
            config.get_user().unwrap_or("(default)"),
            config.get_dbname().unwrap_or("(default)")
        )
    }
}

impl fmt::Debug for DbConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbConfig")
            .field("url", &self.describe())
            .field("pool_size", &self.pool_size)
            .field("batch_size", &self.batch_size)
            .field("spool_dir", &self.spool_dir)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn val(text: &str) -> Value {
        Value {
            text: text.into(),
            source: "DATABASE_URL".into(),
        }
    }

    #[test]
    fn both_schemes_are_accepted_and_lower_cased() {
        assert!(check_url(&val("postgres://u:p@db:5433/x")).is_ok());
        assert!(check_url(&val("postgresql://u@db/x")).is_ok());
        assert_eq!(
            check_url(&val(" POSTGRES://u@db/x ")).unwrap(),
            "postgres://u@db/x"
        );
    }

    #[test]
    fn other_schemes_and_non_urls_are_refused_without_password() {
        let e = check_url(&val("mysql://u:hunter2@db/x")).unwrap_err();
        assert_eq!(e.variable, "DATABASE_URL");
        assert!(e.message.contains("\"mysql\""), "{}", e.message);
        assert!(!e.to_string().contains("hunter2"));
        let e = check_url(&val("host=db password=hunter2")).unwrap_err();
        assert!(!e.to_string().contains("hunter2"));
    }

    #[test]
    fn malformed_url_error_never_shows_the_password() {
        for url in [
            "postgres://u:hunter2@db:notaport/x",
            "postgres://u:hunter2@db/x?hunter2=1",
            "postgres://u:hunt%65r2@db/x?hunter2=1",
            "postgres://u@db/x?password=hunter2&bogus=hunter2",
        ] {
            let e = check_url(&val(url)).unwrap_err();
            assert!(!e.to_string().contains("hunter2"), "{url}: {e}");
            assert!(e.message.contains("not a valid PostgreSQL URL"), "{e}");
        }
    }

    #[test]
    fn url_error_detail_is_kept_when_safe() {
        let e = check_url(&val("postgres://u:pw@db/x?bogus=1")).unwrap_err();
        assert!(e.message.contains("bogus"), "{e}");
    }

    #[test]
    fn url_without_host_or_with_required_tls_is_refused() {
        assert!(
            check_url(&val("postgres:///x"))
                .unwrap_err()
                .message
                .contains("no host")
        );
        assert!(check_url(&val("postgres:///x?host=/run/postgresql")).is_ok());
        let e = check_url(&val("postgres://db/x?sslmode=require")).unwrap_err();
        assert!(e.message.contains("TLS"));
    }

    #[test]
    fn quoting_round_trips_through_the_postgres_parser() {
        let pw = r"it's a \ pass word";
        let url = format!(
            "host={} password={} dbname={}",
            quote("db"),
            quote(pw),
            quote("a b")
        );
        let c = postgres::Config::from_str(&url).unwrap();
        assert_eq!(c.get_password(), Some(pw.as_bytes()));
        assert_eq!(c.get_dbname(), Some("a b"));
    }

    #[test]
    fn percent_decode_handles_valid_and_invalid_escapes() {
        assert_eq!(percent_decode("a%40b%2"), "a@b%2");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }

    #[test]
    fn describe_and_debug_hide_the_password() {
        let db = DbConfig {
            url: "postgres://me:hunter2@db:6000/app".into(),
            pool_size: 2,
            batch_size: 500,
            spool_dir: "./spool".into(),
        };
        assert_eq!(db.describe(), "host=db port=6000 user=me dbname=app");
        assert!(!format!("{db:?}").contains("hunter2"));
    }
}
