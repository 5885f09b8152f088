//! Small shared helpers: a seeded random generator and reconnect backoff.

pub mod backoff;
pub mod rng;
