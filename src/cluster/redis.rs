//! A minimal blocking Redis client over `std::net::TcpStream`: [`RedisUrl`] parsing, connect
//! with `AUTH` and `SELECT`, one command at a time or a pipeline, every read and write bounded by
//! a timeout. Only the cluster threads use it, never the reactor.
//!
//! Invariants: a [`Connection`] that returned [`RedisError::Io`] or [`RedisError::Protocol`] is
//! out of step with the server and must be dropped (callers reconnect); a
//! [`RedisError::Server`] (`-ERR ...`) leaves it usable. No error text and no `Debug` output
//! contains the password.

use super::resp::{self, ProtocolError, Reply};
use std::fmt;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Timeout of a connect, and of each read and write unless a command asks for more.
pub const IO_TIMEOUT: Duration = Duration::from_secs(3);

/// A parsed `redis://[[user]:password@]host[:port][/db]` URL.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<String>,
    pub db: u32,
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl RedisUrl {
    /// Parses a URL; the error says what is wrong and never quotes the URL (nor its password).
    pub fn parse(url: &str) -> Result<RedisUrl, &'static str> {
        let rest = url
            .strip_prefix("redis://")
            .ok_or("must start with redis:// (TLS rediss:// is not supported)")?;
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((auth, rest)) => (Some(auth), rest),
            None => (None, rest),
        };
        let (hostport, db) = match rest.split_once('/') {
            Some((hp, "")) => (hp, 0),
            Some((hp, db)) => (hp, db.parse().map_err(|_| "database must be a number")?),
            None => (rest, 0),
        };
        let (host, port) = split_host_port(hostport)?;
        let (user, password) = match auth.map(|a| a.split_once(':')) {
            None => (None, None),
            Some(None) => (None, auth),
            Some(Some((u, p))) => (Some(u).filter(|u| !u.is_empty()), Some(p)),
        };
        Ok(RedisUrl {
            host,
            port,
            user: user.map(str::to_string),
            password: password.map(str::to_string).filter(|p| !p.is_empty()),
            db,
        })
    }

    /// `redis://host:port/db`, with `***` for a password: safe to log.
    pub fn describe(&self) -> String {
        let auth = match (&self.user, &self.password) {
            (Some(u), Some(_)) => format!("{u}:***@"),
            (None, Some(_)) => ":***@".into(),
            (Some(u), None) => format!("{u}@"),
            (None, None) => String::new(),
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("redis://{auth}{host}:{}/{}", self.port, self.db)
    }
}

fn split_host_port(hostport: &str) -> Result<(String, u16), &'static str> {
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or("unclosed [ in host")?;
        (host, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err("host is missing");
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or("port must be 1-65535")?,
        None => 6379,
    };
    Ok((host.to_string(), port))
}

/// Why a command failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisError {
    /// Connect, read, write or timeout failure: drop the connection.
    Io(String),
    /// The server's bytes were not RESP2: drop the connection.
    Protocol(String),
    /// The server refused the command (`-ERR ...`); the connection stays usable.
    Server(String),
}

impl fmt::Display for RedisError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedisError::Io(e) => write!(f, "Redis I/O error: {e}"),
            RedisError::Protocol(e) => write!(f, "{e}"),
            RedisError::Server(e) => write!(f, "Redis refused: {e}"),
        }
    }
}

impl From<std::io::Error> for RedisError {
    fn from(e: std::io::Error) -> RedisError {
        RedisError::Io(e.to_string())
    }
}

impl From<ProtocolError> for RedisError {
    fn from(e: ProtocolError) -> RedisError {
        RedisError::Protocol(e.0)
    }
}

/// One open, authenticated connection with its database selected.
pub struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Connection {
    /// Connects (trying each address), then `AUTH` and `SELECT` as the URL says.
    pub fn open(url: &RedisUrl) -> Result<Connection, RedisError> {
        let addrs = (url.host.as_str(), url.port).to_socket_addrs()?;
        let mut last = RedisError::Io(format!("{} resolves to no address", url.host));
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, IO_TIMEOUT) {
                Ok(stream) => return Connection::handshake(stream, url),
                Err(e) => last = e.into(),
            }
        }
        Err(last)
    }

    fn handshake(stream: TcpStream, url: &RedisUrl) -> Result<Connection, RedisError> {
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let mut conn = Connection {
            stream,
            buf: Vec::with_capacity(16 * 1024),
        };
        if let Some(password) = &url.password {
            let reply = match &url.user {
                Some(user) => conn.command(&["AUTH", user, password]),
                None => conn.command(&["AUTH", password]),
            };
            reply.map_err(|e| match e {
                RedisError::Server(_) => RedisError::Server("AUTH refused".into()),
                other => other,
            })?;
        }
        if url.db != 0 {
            conn.command(&["SELECT", &url.db.to_string()])?;
        }
        Ok(conn)
    }

    /// Sends one command and waits up to [`IO_TIMEOUT`] for its reply.
    pub fn command<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Reply, RedisError> {
        self.command_timeout(args, IO_TIMEOUT)
    }

    /// Sends one command and waits up to `timeout` for its reply (a blocking `XREAD` passes its
    /// block time plus [`IO_TIMEOUT`]). A `-ERR` reply is [`RedisError::Server`].
    pub fn command_timeout<A: AsRef<[u8]>>(
        &mut self,
        args: &[A],
        timeout: Duration,
    ) -> Result<Reply, RedisError> {
        let mut out = Vec::new();
        resp::encode(args, &mut out);
        self.stream.write_all(&out)?;
        match self.read_reply(timeout)? {
            Reply::Error(e) => Err(RedisError::Server(e)),
            reply => Ok(reply),
        }
    }

    /// Sends every command in one write and reads one reply per command, in order. A `-ERR`
    /// reply stays a [`Reply::Error`] in its place (it does not end the pipeline).
    pub fn pipeline(&mut self, commands: &[Vec<Vec<u8>>]) -> Result<Vec<Reply>, RedisError> {
        let mut out = Vec::new();
        for args in commands {
            resp::encode(args, &mut out);
        }
        self.stream.write_all(&out)?;
        commands
            .iter()
            .map(|_| self.read_reply(IO_TIMEOUT))
            .collect()
    }

    fn read_reply(&mut self, timeout: Duration) -> Result<Reply, RedisError> {
        self.stream.set_read_timeout(Some(timeout))?;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some((reply, used)) = resp::decode(&self.buf)? {
                self.buf.drain(..used);
                return Ok(reply);
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(RedisError::Io("connection closed by Redis".into()));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let ok = |u: &str| RedisUrl::parse(u).unwrap_or_else(|e| panic!("{u}: {e}"));
        let u = ok("redis://127.0.0.1:6379/0");
        assert_eq!((u.host.as_str(), u.port, u.db), ("127.0.0.1", 6379, 0));
        assert_eq!((u.user, u.password), (None, None));
        let u = ok("redis://:s3cret@cache/2");
        assert_eq!((u.host.as_str(), u.port, u.db), ("cache", 6379, 2));
        assert_eq!(u.password.as_deref(), Some("s3cret"));
        assert_eq!(u.user, None);
        let u = ok("redis://app:p@w@[::1]:7000");
        assert_eq!((u.host.as_str(), u.port), ("::1", 7000));
        assert_eq!(
            (u.user.as_deref(), u.password.as_deref()),
            (Some("app"), Some("p@w"))
        );
        assert_eq!(ok("redis://h/").db, 0);
        assert_eq!(
            ok("redis://onlypass@h").password.as_deref(),
            Some("onlypass")
        );
    }

    #[test]
    fn refuses_bad_urls_without_quoting_the_password() {
        for bad in [
            "http://h",
            "rediss://h",
            "redis://",
            "redis://h:0",
            "redis://h:99999",
            "redis://h/x",
            "redis://[::1",
            "redis://u:topsecret@:1",
        ] {
            let e = RedisUrl::parse(bad).expect_err(bad);
            assert!(!e.contains("topsecret"), "{bad}: {e}");
        }
    }

    #[test]
    fn describe_hides_the_password() {
        let u = RedisUrl::parse("redis://app:topsecret@[::1]:7000/3").unwrap();
        assert_eq!(u.describe(), "redis://app:***@[::1]:7000/3");
        assert!(!format!("{u:?}").contains("topsecret"));
        let u = RedisUrl::parse("redis://:topsecret@h").unwrap();
        assert_eq!(u.describe(), "redis://:***@h:6379/0");
    }
}
