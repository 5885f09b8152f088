//! Loopback tests (filled below).
