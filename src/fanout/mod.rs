//! Fan-out: deciding who receives an event and keeping recent events for resume.
//!
//! - [`index`]: the subscription index that finds matching filters without scanning all;
//! - [`groups`]: connections grouped by identical filter, and the events staged per group
//!   between drains (several events become one contiguous batch shared by the group);
//! - [`ring`]: the bounded in-memory history that `subscribe` with `since` replays from.
//!
//! The subscription filters themselves (`crate::client::filter`) belong to the client protocol
//! layer below; fan-out only reads them.
//!
//! Each event is serialised once (`crate::event::Published`) and the same bytes are shared by
//! every receiver; nothing here copies an event per client.

pub mod groups;
pub mod index;
pub mod ring;
