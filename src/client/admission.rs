//! Who may connect: the checks at the door (`accept`), at the WebSocket upgrade (per-address
//! limit, API key offered with the request) and once the session is counted (client limit), as
//! pure functions, plus the counts they read ([`Admission`]).
//!
//! Invariants: a connection is counted (open clients and its address) exactly while its session
//! is open — [`Admission::count`] when the upgrade completes, [`Admission::release`] once when it
//! stops being open — so counts never drift; the per-address map gives its memory back after a
//! burst (see [`Admission::release`]).

use std::collections::HashMap;
use std::net::IpAddr;

/// Slots the per-address map always keeps (a shrink never goes below this).
const KEEP_CAPACITY: usize = 1024;

/// Whether a new TCP connection may be taken at all, with `connections` already held (open
/// sessions and unfinished handshakes). Far beyond the client limit the worker refuses at the
/// door, before spending a read on it.
pub fn door_open(connections: usize, max_clients: usize) -> bool {
    connections < max_clients + max_clients / 10 + 100
}

/// Why an upgrade is refused with a plain HTTP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The address already holds `WORKER_MAX_CONNECTIONS_PER_IP` sessions.
    PerIp,
    /// The key offered with the upgrade is not one of `WORKER_API_KEYS`.
    BadKey,
}

impl Refusal {
    /// The HTTP status of the refusal.
    pub fn status(self) -> u16 {
        match self {
            Refusal::PerIp => 429,
            Refusal::BadKey => 401,
        }
    }

    /// The plain-text body of the refusal.
    pub fn body(self) -> &'static [u8] {
        match self {
            Refusal::PerIp => b"too many connections from this address\n",
            Refusal::BadKey => b"invalid API key\n",
        }
    }
}

/// The upgrade checks: `per_ip` sessions already open from the address, the limit (0 =
/// unlimited), the configured keys and the key offered (Bearer header or `?token=`).
/// `Ok(authed)`: whether the session starts authenticated (no keys configured, or a right key
/// offered); without a key it must send `auth` in time.
pub fn check_upgrade(
    per_ip: usize,
    max_per_ip: usize,
    keys: &[String],
    offered: Option<&str>,
) -> Result<bool, Refusal> {
    if max_per_ip > 0 && per_ip >= max_per_ip {
        return Err(Refusal::PerIp);
    }
    match offered {
        _ if keys.is_empty() => Ok(true),
        Some(k) if crate::auth::key_matches(keys, k) => Ok(true),
        Some(_) => Err(Refusal::BadKey),
        None => Ok(false),
    }
}

/// Whether a session just counted (`open` includes it) is over the client limit (close 1013).
pub fn over_capacity(open: usize, max_clients: usize) -> bool {
    open > max_clients
}

/// Open sessions, in total and per address.
#[derive(Debug, Default)]
pub struct Admission {
    per_ip: HashMap<IpAddr, u32>,
    open: usize,
}

impl Admission {
    /// Sessions open now.
    pub fn open_clients(&self) -> usize {
        self.open
    }

    /// Sessions open now from `ip`.
    pub fn from_ip(&self, ip: IpAddr) -> usize {
        self.per_ip.get(&ip).copied().unwrap_or(0) as usize
    }

    /// Counts a session that just opened.
    pub fn count(&mut self, ip: IpAddr) {
        *self.per_ip.entry(ip).or_insert(0) += 1;
        self.open += 1;
    }

    /// Releases a session that stopped being open (call once per [`Admission::count`]).
    pub fn release(&mut self, ip: IpAddr) {
        self.open = self.open.saturating_sub(1);
        let Some(n) = self.per_ip.get_mut(&ip) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            self.per_ip.remove(&ip);
            let (len, cap) = (self.per_ip.len(), self.per_ip.capacity());
            if cap > KEEP_CAPACITY && len < cap / 4 {
                self.per_ip.shrink_to((len * 2).max(KEEP_CAPACITY));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn door_refuses_far_beyond_the_client_limit() {
        let table = [
            // (connections held, max clients, open?)
            (0, 0, true),
            (99, 0, true),
            (100, 0, false),
            (1_199, 1_000, true),
            (1_200, 1_000, false),
            (10_000, 10_000, true),
            (11_100, 10_000, false),
        ];
        for (held, max, open) in table {
            assert_eq!(door_open(held, max), open, "{held} held, max {max}");
        }
    }

    /// (open from the address, per-address limit, keys, key offered, outcome, what).
    type Case<'a> = (
        usize,
        usize,
        &'a [String],
        Option<&'a str>,
        Result<bool, Refusal>,
        &'a str,
    );

    #[test]
    fn upgrade_checks() {
        let keys = vec!["k1".to_string(), "k2".to_string()];
        let none: Vec<String> = Vec::new();
        let table: [Case<'_>; 9] = [
            (0, 0, &none, None, Ok(true), "no keys, no limit"),
            (
                5,
                0,
                &none,
                Some("x"),
                Ok(true),
                "no keys: any token is fine",
            ),
            (2, 3, &none, None, Ok(true), "under the per-address limit"),
            (
                3,
                3,
                &none,
                None,
                Err(Refusal::PerIp),
                "at the per-address limit",
            ),
            (
                3,
                3,
                &keys,
                Some("k1"),
                Err(Refusal::PerIp),
                "limit before key",
            ),
            (0, 0, &keys, Some("k2"), Ok(true), "right key"),
            (0, 0, &keys, Some("k3"), Err(Refusal::BadKey), "wrong key"),
            (0, 0, &keys, Some(""), Err(Refusal::BadKey), "empty key"),
            (
                0,
                0,
                &keys,
                None,
                Ok(false),
                "no key yet: auth message later",
            ),
        ];
        for (per_ip, max, keys, offered, want, what) in table {
            assert_eq!(check_upgrade(per_ip, max, keys, offered), want, "{what}");
        }
        assert_eq!(
            (Refusal::PerIp.status(), Refusal::BadKey.status()),
            (429, 401)
        );
        assert_eq!(Refusal::BadKey.body(), b"invalid API key\n");
    }

    #[test]
    fn capacity_counts_the_new_session() {
        let table = [
            (1, 1, false),
            (2, 1, true),
            (10_000, 10_000, false),
            (1, 0, true),
        ];
        for (open, max, over) in table {
            assert_eq!(over_capacity(open, max), over, "{open} open, max {max}");
        }
    }

    #[test]
    fn counts_follow_sessions_and_shrink_after_a_burst() {
        let mut a = Admission::default();
        let ip = |i: u32| IpAddr::from(i.to_be_bytes());
        for i in 0..5_000 {
            a.count(ip(i));
        }
        a.count(ip(0));
        assert_eq!(
            (a.open_clients(), a.from_ip(ip(0)), a.from_ip(ip(1))),
            (5_001, 2, 1)
        );
        for i in 0..5_000 {
            a.release(ip(i));
        }
        assert_eq!(
            (a.open_clients(), a.from_ip(ip(0)), a.from_ip(ip(1))),
            (1, 1, 0)
        );
        assert!(
            a.per_ip.capacity() <= 4 * KEEP_CAPACITY,
            "{}",
            a.per_ip.capacity()
        );
        a.release(ip(0));
        a.release(ip(0)); // released twice: counts stay at zero
        assert_eq!((a.open_clients(), a.from_ip(ip(0))), (0, 0));
    }
}
