//! Fault injection: the switches that make the simulated daemon misbehave on purpose (the failures
//! docs/daemon.md describes, and a network's), settable by `--fault` flags, `sim_set_fault` or
//! [`SimHandle::set_faults`](super::SimHandle::set_faults).
//!
//! The live switches sit in atomics ([`FaultCell`]) so every connection thread reads them on
//! each turn without locking; `reset` is an action (forget loaded wallets), not a state.

use serde_json::{Map, Value, json};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Faults to inject. `Default` is a well-behaved daemon.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// Answer every request as bad credentials (admin `sim_*` calls with good credentials
    /// excepted, so a test can switch it off again).
    pub refuse_auth: bool,
    /// Close each WebSocket without a close frame once it has been sent this many events
    /// (`Some(0)`: right after the upgrade).
    pub drop_after: Option<u64>,
    /// Stop sending events and answering pings on open sockets, keeping them open (half-open).
    pub stall: bool,
    /// Delay every JSON-RPC answer (admin calls excepted).
    pub rpc_delay: Duration,
    /// Forget every loaded wallet, as a daemon restart would (applied once when set).
    pub reset: bool,
}

/// Why a fault setting was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultError(pub String);

impl std::fmt::Display for FaultError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FaultError {}

impl Faults {
    /// Applies one `--fault name[=value]` flag: `refuse_auth`, `stall`, `reset`,
    /// `drop_after=N`, `rpc_delay_ms=N` (booleans also take `=true`/`=false`).
    pub fn apply_flag(&mut self, spec: &str) -> Result<(), FaultError> {
        let (name, value) = match spec.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (spec.trim(), None),
        };
        let value = match value {
            None => Value::Bool(true),
            Some(v) => match v.parse::<u64>() {
                Ok(n) => json!(n),
                Err(_) => match v {
                    "true" => json!(true),
                    "false" => json!(false),
                    "none" | "null" => Value::Null,
                    _ => return Err(FaultError(format!("bad value '{v}' for fault {name}"))),
                },
            },
        };
        let mut obj = Map::new();
        obj.insert(name.to_string(), value);
        self.apply_json(&Value::Object(obj))
    }

    /// Applies a `sim_set_fault` object: only the keys present change.
    pub fn apply_json(&mut self, value: &Value) -> Result<(), FaultError> {
        let Value::Object(obj) = value else {
            return Err(FaultError("faults must be an object".into()));
        };
        for (key, v) in obj {
            match key.as_str() {
                "refuse_auth" => self.refuse_auth = as_bool(key, v)?,
                "stall" => self.stall = as_bool(key, v)?,
                "reset" => self.reset = as_bool(key, v)?,
                "drop_after" => {
                    self.drop_after = match v {
                        Value::Null | Value::Bool(false) => None,
                        _ => Some(as_u64(key, v)?),
                    }
                }
                "rpc_delay_ms" => self.rpc_delay = Duration::from_millis(as_u64(key, v)?),
                _ => return Err(FaultError(format!("unknown fault '{key}'"))),
            }
        }
        Ok(())
    }

    /// The faults as JSON (`sim_state`, `sim_set_fault` answers).
    pub fn to_json(&self) -> Value {
        json!({
            "refuse_auth": self.refuse_auth,
            "drop_after": self.drop_after,
            "stall": self.stall,
            "rpc_delay_ms": self.rpc_delay.as_millis() as u64,
        })
    }
}

fn as_bool(key: &str, v: &Value) -> Result<bool, FaultError> {
    v.as_bool()
        .ok_or_else(|| FaultError(format!("fault {key} takes true or false")))
}

fn as_u64(key: &str, v: &Value) -> Result<u64, FaultError> {
    v.as_u64()
        .ok_or_else(|| FaultError(format!("fault {key} takes a non-negative integer")))
}

/// `drop_after` value meaning "no limit".
const NO_DROP: u64 = u64::MAX;

/// The live fault switches, readable from any thread without locking.
#[derive(Debug, Default)]
pub(crate) struct FaultCell {
    refuse_auth: AtomicBool,
    stall: AtomicBool,
    drop_after: AtomicU64,
    rpc_delay_ms: AtomicU64,
}

impl FaultCell {
    /// Switches holding `f` (its `reset` is the caller's to act on).
    pub(crate) fn new(f: &Faults) -> FaultCell {
        let cell = FaultCell::default();
        cell.store(f);
        cell
    }

    /// Replaces every switch.
    pub(crate) fn store(&self, f: &Faults) {
        self.refuse_auth.store(f.refuse_auth, Ordering::Relaxed);
        self.stall.store(f.stall, Ordering::Relaxed);
        self.drop_after
            .store(f.drop_after.unwrap_or(NO_DROP), Ordering::Relaxed);
        let ms = u64::try_from(f.rpc_delay.as_millis()).unwrap_or(u64::MAX);
        self.rpc_delay_ms.store(ms, Ordering::Relaxed);
    }

    /// The current switches (`reset` always false).
    pub(crate) fn load(&self) -> Faults {
        Faults {
            refuse_auth: self.refuse_auth(),
            drop_after: self.drop_after(),
            stall: self.stall(),
            rpc_delay: self.rpc_delay(),
            reset: false,
        }
    }

    pub(crate) fn refuse_auth(&self) -> bool {
        self.refuse_auth.load(Ordering::Relaxed)
    }

    pub(crate) fn stall(&self) -> bool {
        self.stall.load(Ordering::Relaxed)
    }

    pub(crate) fn drop_after(&self) -> Option<u64> {
        Some(self.drop_after.load(Ordering::Relaxed)).filter(|&n| n != NO_DROP)
    }

    pub(crate) fn rpc_delay(&self) -> Duration {
        Duration::from_millis(self.rpc_delay_ms.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_names_and_values() {
        let mut f = Faults::default();
        f.apply_flag("refuse_auth").unwrap();
        f.apply_flag("drop_after=3").unwrap();
        f.apply_flag("rpc_delay_ms=250").unwrap();
        f.apply_flag("stall=false").unwrap();
        assert!(f.refuse_auth && !f.stall && !f.reset);
        assert_eq!(f.drop_after, Some(3));
        assert_eq!(f.rpc_delay, Duration::from_millis(250));
        f.apply_flag("drop_after=none").unwrap();
        assert_eq!(f.drop_after, None);
    }

    #[test]
    fn bad_flags_are_refused_with_the_name() {
        let mut f = Faults::default();
        assert!(f.apply_flag("explode").unwrap_err().0.contains("explode"));
        assert!(
            f.apply_flag("drop_after=-1")
                .unwrap_err()
                .0
                .contains("drop_after")
        );
        assert!(f.apply_flag("stall=7").unwrap_err().0.contains("stall"));
        assert!(f.apply_json(&json!([1])).is_err());
    }

    #[test]
    fn json_changes_only_given_keys() {
        let mut f = Faults {
            stall: true,
            ..Default::default()
        };
        f.apply_json(&json!({"drop_after": 0, "rpc_delay_ms": 5}))
            .unwrap();
        assert!(f.stall);
        assert_eq!(f.drop_after, Some(0));
        assert_eq!(f.to_json()["rpc_delay_ms"], 5);
        f.apply_json(&json!({"drop_after": null, "stall": false}))
            .unwrap();
        assert_eq!(
            f.to_json(),
            json!({"refuse_auth": false, "drop_after": null, "stall": false, "rpc_delay_ms": 5})
        );
    }

    #[test]
    fn cell_round_trips_switches() {
        let f = Faults {
            refuse_auth: true,
            drop_after: Some(2),
            stall: true,
            rpc_delay: Duration::from_millis(9),
            reset: true,
        };
        let cell = FaultCell::new(&f);
        assert_eq!(cell.load(), Faults { reset: false, ..f });
        cell.store(&Faults::default());
        assert_eq!(cell.drop_after(), None);
        assert!(!cell.refuse_auth() && !cell.stall());
    }
}
