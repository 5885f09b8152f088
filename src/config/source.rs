//! Where a setting's text comes from: CLI flags first, then the environment.
//!
//! Invariants: a flag always wins over the variable it names (the last occurrence of a repeated
//! flag wins); an empty value, from a flag or the environment, counts as unset (so an empty flag
//! also hides the variable); every value remembers its source (flag as typed, or variable name) so
//! that errors name what the user actually wrote.

use super::ConfigError;
use super::vars;
use crate::cli::args::Parsed;

/// One `--flag value` or `--flag=value` from the command line.
#[derive(Debug, Clone)]
struct Flag {
    /// The flag as typed, with its dashes (`--port`), for error messages.
    typed: String,
    /// The variable it sets (`WORKER_PORT`); per-coin flags are resolved once coins are known.
    var: String,
    value: String,
}

/// A setting's text and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Value {
    /// The raw text (never empty).
    pub text: String,
    /// The flag as typed or the variable name; what an error about this value must name.
    pub source: String,
}

/// The flags of one command line plus an environment lookup.
pub(crate) struct Sources<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    flags: Vec<Flag>,
}

impl<'a> Sources<'a> {
    /// The options of a parsed command line (see [`super::settings_grammar`]) over `env`. Flag
    /// names are checked later by [`Sources::check_flags`], once the coin list is known.
    pub fn new(env: &'a dyn Fn(&str) -> Option<String>, parsed: &Parsed) -> Sources<'a> {
        let flags = parsed
            .options
            .iter()
            .map(|(name, value)| Flag {
                typed: format!("--{name}"),
                var: match vars::global_for_flag(name) {
                    Some(spec) => spec.name.to_string(),
                    None => name.to_ascii_uppercase().replace('-', "_"),
                },
                value: value.clone().unwrap_or_default(),
            })
            .collect();
        Sources { env, flags }
    }

    /// The value of variable `var`: the last flag naming it, else the environment.
    pub fn get(&self, var: &str) -> Option<Value> {
        if let Some(flag) = self.flags.iter().rev().find(|f| f.var == var) {
            return non_empty(&flag.value, &flag.typed);
        }
        (self.env)(var).and_then(|text| non_empty(&text, var))
    }

    /// Like [`Sources::get`], falling back to the variable's default from the table in `vars`.
    /// Returns an empty value (which every parser refuses) for a variable without a default.
    pub fn get_or_default(&self, var: &str) -> Value {
        self.get(var).unwrap_or_else(|| Value {
            text: vars::global(var)
                .and_then(|v| v.default)
                .unwrap_or("")
                .to_string(),
            source: var.to_string(),
        })
    }

    /// The non-empty value from flags only (for the `WORKER_COINS` / `BITCART_CRYPTOS` fallback).
    pub fn flag(&self, var: &str) -> Option<Value> {
        let flag = self.flags.iter().rev().find(|f| f.var == var)?;
        non_empty(&flag.value, &flag.typed)
    }

    /// The value from the environment only.
    pub fn env(&self, var: &str) -> Option<Value> {
        (self.env)(var).and_then(|text| non_empty(&text, var))
    }

    /// Refuses every flag that names neither a global variable nor a per-coin variable of one
    /// of `coins` (upper-case symbols).
    pub fn check_flags(&self, coins: &[String]) -> Result<(), ConfigError> {
        for flag in &self.flags {
            if vars::global(&flag.var).is_some() {
                continue;
            }
            let coin_var = vars::COIN_VARS.iter().find_map(|spec| {
                let coin = flag.var.strip_suffix(spec.suffix)?.strip_suffix('_')?;
                Some(coin).filter(|c| !c.is_empty())
            });
            let message = match coin_var {
                Some(coin) if coins.iter().any(|c| c == coin) => continue,
                Some(coin) => format!("unknown flag: {coin} is not in WORKER_COINS"),
                None => "unknown flag (see --help for the flags)".to_string(),
            };
            return Err(ConfigError::new(crate::util::shorten(&flag.typed), message));
        }
        Ok(())
    }
}

fn non_empty(text: &str, source: &str) -> Option<Value> {
    if text.trim().is_empty() {
        return None;
    }
    Some(Value {
        text: text.to_string(),
        source: source.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn env(name: &str) -> Option<String> {
        match name {
            "WORKER_PORT" => Some("9000".into()),
            "LOG_LEVEL" => Some(String::new()),
            _ => None,
        }
    }

    /// The sources of a command line, or the error naming the flag at fault.
    fn sources(list: &[&str]) -> Result<Sources<'static>, ConfigError> {
        let parsed = super::super::parse_settings(&args(list))?;
        Ok(Sources::new(&env, &parsed))
    }

    #[test]
    fn flag_forms_and_aliases_map_to_variables() {
        let s = sources(&["--port", "1", "--worker-max-clients=5", "--BTC-HOST", "h"]).unwrap();
        let port = s.get("WORKER_PORT").unwrap();
        assert_eq!((port.text.as_str(), port.source.as_str()), ("1", "--port"));
        assert_eq!(s.get("WORKER_MAX_CLIENTS").unwrap().text, "5");
        assert_eq!(s.get("BTC_HOST").unwrap().source, "--btc-host");
    }

    #[test]
    fn env_is_used_without_flag_and_empty_counts_as_unset() {
        let s = sources(&[]).unwrap();
        assert_eq!(s.get("WORKER_PORT").unwrap().source, "WORKER_PORT");
        assert_eq!(s.get("LOG_LEVEL"), None);
        let s = sources(&["--port="]).unwrap();
        assert_eq!(
            s.get("WORKER_PORT"),
            None,
            "an empty flag hides the variable"
        );
    }

    #[test]
    fn last_repeated_flag_wins() {
        let s = sources(&["--port=1", "--worker-port", "2"]).unwrap();
        assert_eq!(s.get("WORKER_PORT").unwrap().text, "2");
    }

    #[test]
    fn value_with_equals_sign_is_kept_whole() {
        let s = sources(&["--database-url=postgres://u:p=q@h/db"]).unwrap();
        assert_eq!(s.get("DATABASE_URL").unwrap().text, "postgres://u:p=q@h/db");
    }

    #[test]
    fn missing_value_and_positional_are_refused() {
        let refused = |list: &[&str]| sources(list).err().map(|e| e.variable);
        assert_eq!(refused(&["--port"]), Some("--port".into()));
        assert_eq!(refused(&["--port", "--host", "x"]), Some("--port".into()));
        assert_eq!(refused(&["stray"]), Some("stray".into()));
        assert_eq!(refused(&["-p", "1"]), Some("-p".into()));
        assert_eq!(refused(&["--", "x"]), Some("x".into()));
        assert_eq!(refused(&["--help"]), Some("--help".into()));
        assert!(sources(&["--"]).is_ok(), "`--` alone ends no options");
    }

    #[test]
    fn check_flags_accepts_known_and_configured_coin_flags() {
        let s = sources(&["--coins", "btc", "--btc-port=1", "--db-pool-size=3"]).unwrap();
        assert!(s.check_flags(&["BTC".into()]).is_ok());
    }

    #[test]
    fn unknown_flags_and_unconfigured_coins_are_named() {
        let e = sources(&["--bogus=1"]).err().unwrap();
        assert_eq!(e.variable, "--bogus");
        assert!(
            e.message.contains("cryptoworker run --help"),
            "{}",
            e.message
        );
        assert_eq!(sources(&["--port-x=1"]).err().unwrap().variable, "--port-x");
        let s = sources(&["--eth-port=1"]).unwrap();
        let e = s.check_flags(&["BTC".into()]).unwrap_err();
        assert_eq!(e.variable, "--eth-port");
        assert!(
            e.message.contains("ETH is not in WORKER_COINS"),
            "{}",
            e.message
        );
    }

    #[test]
    fn long_arguments_are_shortened_in_errors() {
        let long = format!("x{}", "y".repeat(1000));
        let e = sources(&[&long]).err().unwrap();
        assert!(e.variable.len() < 80);
    }
}
