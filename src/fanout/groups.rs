//! Subscribers grouped by identical filter, and the events staged for each group.
//!
//! Clients with the same filter (the common case: every payment page of a shop subscribes to the
//! same events) share one *group*. The [`SubscriptionIndex`] holds groups, not clients, so an
//! event costs one filter check per distinct filter whatever the number of clients.
//!
//! Events published during one reactor dispatch are *staged* per group and handed out together
//! by [`Subscribers::drain_staged`]: a single event as its shared frame (no copy); several events
//! concatenated once per group into one contiguous buffer that every member shares. A member's
//! queue then grows by one entry per batch, not per event, and its next `writev` carries the
//! whole batch as one slice. The reactor drains once per turn and before any client request is
//! handled, so staging never reorders events against replies.
//!
//! A filter is stored once, in the index; `by_filter` maps its 64-bit hash to the group that
//! holds it (on a hash collision between different filters the newer group is simply not
//! shared — correct, only less compact).
//!
//! Memory: `of_key` and a group's member list grow with the subscribers; after a burst of
//! connections ends they are shrunk once less than a quarter full (never below
//! [`KEEP_CAPACITY`]), so a burst does not pin its peak.
//!
//! Invariants: a key is a member of at most one group, at the position `of_key` records; a
//! group id is in the index exactly while the group has members, and `by_filter` names only
//! such groups; a freed group has nothing staged.

use super::index::SubscriptionIndex;
use crate::client::filter::Filter;
use crate::event::{EventMeta, Published};
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::ops::Range;
use std::sync::Arc;

/// Entries a map or member list always keeps room for (a shrink never goes below this).
pub const KEEP_CAPACITY: usize = 256;

/// Shrinks `v` when it is less than a quarter full, keeping room for twice its length.
fn shrink_vec<T>(v: &mut Vec<T>) {
    if v.capacity() > KEEP_CAPACITY && v.len() < v.capacity() / 4 {
        v.shrink_to((v.len() * 2).max(KEEP_CAPACITY));
    }
}

/// Events staged for one group since the last drain.
#[derive(Debug, Default)]
enum Staged {
    #[default]
    Nothing,
    One(Arc<Published>),
    Many(Vec<Arc<Published>>),
}

/// What one group's members receive from one drain.
#[derive(Debug, Clone)]
pub enum Batch {
    /// One event: its frame is shared as it is.
    One(Arc<Published>),
    /// Several events' frames, concatenated in publication order.
    Many { frames: Arc<[u8]>, events: usize },
}

impl Batch {
    /// Number of events (frames) in the batch.
    pub fn events(&self) -> usize {
        match self {
            Batch::One(_) => 1,
            Batch::Many { events, .. } => *events,
        }
    }
}

#[derive(Debug, Default)]
struct Group {
    members: Vec<usize>,
    staged: Staged,
}

/// Client keys by filter group, the group index, and the staged events.
#[derive(Debug, Default)]
pub struct Subscribers {
    index: SubscriptionIndex<u32>,
    /// Filter hash -> the group holding that filter.
    by_filter: HashMap<u64, u32>,
    groups: Vec<Group>,
    free: Vec<u32>,
    /// Key -> (group, position in the group's members).
    of_key: HashMap<usize, (u32, u32)>,
    staged: Vec<u32>,
    scratch: Vec<u32>,
}

impl Subscribers {
    /// No subscribers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key`'s filter, replacing any previous one.
    pub fn insert(&mut self, key: usize, filter: Filter) {
        self.forget(key);
        let hash = filter_hash(&filter);
        let g = match self.by_filter.get(&hash) {
            Some(&g) if self.index.get(g) == Some(&filter) => g,
            _ => self.new_group(hash, filter),
        };
        let members = &mut self.groups[g as usize].members;
        self.of_key.insert(key, (g, members.len() as u32));
        members.push(key);
    }

    /// Removes `key`, returning its filter.
    pub fn remove(&mut self, key: usize) -> Option<Filter> {
        match self.detach(key)? {
            (g, true) => self.free_group(g),
            (g, false) => self.index.get(g).cloned(),
        }
    }

    /// Removes `key` (without handing its filter back).
    pub fn forget(&mut self, key: usize) {
        if let Some((g, true)) = self.detach(key) {
            self.free_group(g);
        }
    }

    /// Takes `key` out of its group; returns the group and whether it is now empty.
    fn detach(&mut self, key: usize) -> Option<(u32, bool)> {
        let (g, pos) = self.of_key.remove(&key)?;
        let members = &mut self.groups[g as usize].members;
        members.swap_remove(pos as usize);
        if let Some(&moved) = members.get(pos as usize)
            && let Some(entry) = self.of_key.get_mut(&moved)
        {
            entry.1 = pos;
        }
        shrink_vec(members);
        let empty = members.is_empty();
        if self.of_key.capacity() > KEEP_CAPACITY && self.of_key.len() < self.of_key.capacity() / 4
        {
            self.of_key
                .shrink_to((self.of_key.len() * 2).max(KEEP_CAPACITY));
        }
        Some((g, empty))
    }

    /// Frees an empty group, returning its filter.
    fn free_group(&mut self, g: u32) -> Option<Filter> {
        self.groups[g as usize].staged = Staged::Nothing;
        self.free.push(g);
        let filter = self.index.remove(g)?;
        let hash = filter_hash(&filter);
        if self.by_filter.get(&hash) == Some(&g) {
            self.by_filter.remove(&hash);
        }
        Some(filter)
    }

    /// `key`'s filter.
    pub fn get(&self, key: usize) -> Option<&Filter> {
        let &(g, _) = self.of_key.get(&key)?;
        self.index.get(g)
    }

    /// Number of subscribed keys.
    pub fn len(&self) -> usize {
        self.of_key.len()
    }

    /// Whether no key is subscribed.
    pub fn is_empty(&self) -> bool {
        self.of_key.is_empty()
    }

    /// Entries the key map and the largest member list can hold without growing (memory
    /// checks).
    pub fn capacity(&self) -> (usize, usize) {
        let members = self.groups.iter().map(|g| g.members.capacity()).max();
        (self.of_key.capacity(), members.unwrap_or(0))
    }

    /// Number of distinct filters in use.
    pub fn groups(&self) -> usize {
        self.groups.len() - self.free.len()
    }

    /// Stages `p` for every group whose filter matches; returns the number of keys it will
    /// reach.
    pub fn stage(&mut self, meta: &EventMeta, p: &Arc<Published>) -> usize {
        let mut matched = std::mem::take(&mut self.scratch);
        matched.clear();
        self.index.matching(meta, &mut matched);
        let mut reach = 0;
        for &g in &matched {
            let group = &mut self.groups[g as usize];
            reach += group.members.len();
            group.staged = match std::mem::take(&mut group.staged) {
                Staged::Nothing => {
                    self.staged.push(g);
                    Staged::One(p.clone())
                }
                Staged::One(first) => Staged::Many(vec![first, p.clone()]),
                Staged::Many(mut v) => {
                    v.push(p.clone());
                    Staged::Many(v)
                }
            };
        }
        self.scratch = matched;
        reach
    }

    /// Whether anything is staged.
    pub fn has_staged(&self) -> bool {
        !self.staged.is_empty()
    }

    /// Hands out everything staged: for each group one batch, with the range of `members` (to
    /// which the group's keys are appended) that receives it.
    pub fn drain_staged(&mut self, out: &mut Vec<(Batch, Range<usize>)>, members: &mut Vec<usize>) {
        for g in self.staged.drain(..) {
            let group = &mut self.groups[g as usize];
            let batch = match std::mem::take(&mut group.staged) {
                Staged::Nothing => continue,
                Staged::One(p) => Batch::One(p),
                Staged::Many(events) => Batch::Many {
                    frames: concat_frames(&events),
                    events: events.len(),
                },
            };
            let start = members.len();
            members.extend_from_slice(&group.members);
            out.push((batch, start..members.len()));
        }
    }

    fn new_group(&mut self, hash: u64, filter: Filter) -> u32 {
        let g = match self.free.pop() {
            Some(g) => g,
            None => {
                self.groups.push(Group::default());
                (self.groups.len() - 1) as u32
            }
        };
        self.index.insert(g, filter);
        self.by_filter.entry(hash).or_insert(g);
        g
    }
}

/// A fixed (unkeyed) hash of `filter`: a collision only costs sharing, never correctness.
fn filter_hash(filter: &Filter) -> u64 {
    let mut h = DefaultHasher::new();
    filter.hash(&mut h);
    h.finish()
}

fn concat_frames(events: &[Arc<Published>]) -> Arc<[u8]> {
    let len = events.iter().map(|p| p.frame.len()).sum();
    let mut bytes = Vec::with_capacity(len);
    for p in events {
        bytes.extend_from_slice(&p.frame);
    }
    bytes.into()
}

#[cfg(test)]
mod tests;
