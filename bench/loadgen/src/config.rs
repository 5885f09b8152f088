//! Command-line options of the load generator, parsed and checked.

use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};

/// What one load process does.
#[derive(Clone, Debug)]
pub struct Config {
    /// Server address.
    pub dst: SocketAddr,
    /// `host:port` for the Host header.
    pub host: String,
    /// Request path (`/` or `/ws`).
    pub path: String,
    /// Clients of this process.
    pub clients: u32,
    /// Global index of this process's first client (to spread several processes over sources).
    pub offset: u32,
    /// First source address.
    pub src_base: Ipv4Addr,
    /// Clients per source address.
    pub per_src: u32,
    /// Connections in flight (connecting, upgrading or subscribing) at most.
    pub max_outstanding: usize,
    /// Subscribe request sent by every client.
    pub subscribe: String,
    /// Give up an attempt after this long (µs).
    pub connect_timeout_us: u64,
    /// Attempts per client in a connect phase.
    pub retries: u32,
    /// A step with no event at all for this long (µs) is reported as such.
    pub no_event_timeout_us: u64,
}

/// Usage text.
pub const USAGE: &str = "loadgen --url ws://HOST:PORT/PATH [--clients N] [--offset I] [--src-base 127.0.0.2]
        [--per-src 4000] [--max-outstanding 1000] [--subscribe JSON] [--connect-timeout-s 30]
        [--retries 3] [--no-event-timeout-s 15]
Connects N subscribed clients, prints a `ready` JSON line, then obeys commands on stdin:
  step <rate> <lead> <window> <grace_ms> <spans 0|1>   measure one step (prints `step_started`, then `step`)
  quiet <ms> <timeout_ms>                              wait until no event arrived for <ms> (prints `quiet`)
  reconnect                                            reconnect closed clients (prints `ready`)
  status                                               print counters (`status`)
  exit                                                 (or end of input) exit";

impl Config {
    /// Parses `args` (without the program name).
    pub fn parse(args: &[String]) -> Result<Config, String> {
        let mut url = None;
        let mut c = Config {
            dst: SocketAddr::from(([127, 0, 0, 1], 0)),
            host: String::new(),
            path: "/".into(),
            clients: 100,
            offset: 0,
            src_base: Ipv4Addr::new(127, 0, 0, 2),
            per_src: 4000,
            max_outstanding: 1000,
            subscribe: r#"{"type":"subscribe","events":["new_transaction"]}"#.into(),
            connect_timeout_us: 30_000_000,
            retries: 3,
            no_event_timeout_us: 15_000_000,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut val = || {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{flag} needs a value"))
            };
            match flag.as_str() {
                "--url" => url = Some(val()?),
                "--clients" => c.clients = num(&val()?, flag)?,
                "--offset" => c.offset = num(&val()?, flag)?,
                "--src-base" => {
                    c.src_base = val()?
                        .parse()
                        .map_err(|_| format!("{flag}: not an IPv4 address"))?
                }
                "--per-src" => c.per_src = num::<u32>(&val()?, flag)?.max(1),
                "--max-outstanding" => c.max_outstanding = num::<usize>(&val()?, flag)?.max(1),
                "--subscribe" => c.subscribe = val()?,
                "--connect-timeout-s" => {
                    c.connect_timeout_us = num::<u64>(&val()?, flag)? * 1_000_000
                }
                "--retries" => c.retries = num::<u32>(&val()?, flag)?.max(1),
                "--no-event-timeout-s" => {
                    c.no_event_timeout_us = num::<u64>(&val()?, flag)? * 1_000_000
                }
                "-h" | "--help" => return Err(USAGE.into()),
                other => return Err(format!("unknown option {other}\n{USAGE}")),
            }
        }
        let url = url.ok_or_else(|| format!("--url is required\n{USAGE}"))?;
        let (host, path) = split_url(&url)?;
        c.dst = host
            .to_socket_addrs()
            .map_err(|e| format!("--url: cannot resolve {host}: {e}"))?
            .find(SocketAddr::is_ipv4)
            .ok_or_else(|| format!("--url: no IPv4 address for {host}"))?;
        c.host = host;
        c.path = path;
        Ok(c)
    }
}

fn num<T: std::str::FromStr>(s: &str, flag: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("{flag}: not a number: {s}"))
}

/// Splits `ws://host:port/path` into `("host:port", "/path")`.
fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| format!("--url must start with ws://: {url}"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if !host.contains(':') {
        return Err(format!("--url needs an explicit port: {url}"));
    }
    Ok((host.to_string(), path.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_url_and_flags() {
        let c = Config::parse(&args(
            "--url ws://127.0.0.1:9001/ws --clients 7 --per-src 2",
        ))
        .unwrap();
        assert_eq!(c.dst, "127.0.0.1:9001".parse().unwrap());
        assert_eq!(
            (c.host.as_str(), c.path.as_str(), c.clients, c.per_src),
            ("127.0.0.1:9001", "/ws", 7, 2)
        );
        let c = Config::parse(&args("--url ws://127.0.0.1:9001")).unwrap();
        assert_eq!(c.path, "/");
    }

    #[test]
    fn rejects_bad_input() {
        assert!(
            Config::parse(&args("--clients 5"))
                .unwrap_err()
                .contains("--url")
        );
        assert!(Config::parse(&args("--url http://x:1/")).is_err());
        assert!(Config::parse(&args("--url ws://127.0.0.1/")).is_err());
        assert!(Config::parse(&args("--url ws://127.0.0.1:1 --clients x")).is_err());
        assert!(Config::parse(&args("--url ws://127.0.0.1:1 --bogus 1")).is_err());
        assert!(Config::parse(&args("--url ws://127.0.0.1:1 --clients")).is_err());
    }
}
