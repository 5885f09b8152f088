//! Foundations the worker and its simulated daemon share, so neither copies the other's:
//!
//! - [`coins`]: Bitcart's known coins (symbol, default daemon port, protocol family);
//! - [`rng`]: the one random generator (seeded from the OS, or reproducibly from a number).

pub mod coins;
pub mod rng;
