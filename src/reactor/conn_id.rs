//! Generation-checked connection ids.
//!
//! Slab slots are reused. Anything that outlives a readiness event (timers, subscriptions,
//! pending RPC answers) holds a [`ConnId`]; the slab keeps a generation per slot, bumped when the
//! slot is freed, so an id for a closed connection never reaches its successor.

/// A slab key plus the generation of the slot when the id was issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    /// Slab key, also the mio token.
    pub key: u32,
    /// Generation of the slot.
    pub generation: u32,
}

/// The generation of every slot ever used.
#[derive(Debug, Default)]
pub struct Generations {
    slots: Vec<u32>,
}

impl Generations {
    /// The id of the connection now living at `key`.
    pub fn id(&mut self, key: usize) -> ConnId {
        if key >= self.slots.len() {
            self.slots.resize(key + 1, 0);
        }
        ConnId {
            key: key as u32,
            generation: self.slots[key],
        }
    }

    /// Whether `id` still names the connection at its slot.
    pub fn is_current(&self, id: ConnId) -> bool {
        self.slots.get(id.key as usize) == Some(&id.generation)
    }

    /// Invalidates every id issued for `key` (call when the slot is freed).
    pub fn retire(&mut self, key: usize) {
        if let Some(g) = self.slots.get_mut(key) {
            *g = g.wrapping_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retired_ids_are_not_current() {
        let mut g = Generations::default();
        let a = g.id(3);
        assert!(g.is_current(a));
        g.retire(3);
        assert!(!g.is_current(a));
        let b = g.id(3);
        assert!(g.is_current(b));
        assert_ne!(a, b);
        assert!(!g.is_current(ConnId {
            key: 99,
            generation: 0
        }));
    }
}
