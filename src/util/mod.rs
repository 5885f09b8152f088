//! Small shared helpers: a seeded random generator, reconnect backoff, and quoting outside input
//! in error messages.

pub mod backoff;
pub use cryptoworker_base::rng;

/// Most characters of outside input quoted in an error message.
const MAX_QUOTED: usize = 64;

/// `text` cut to 64 characters (`MAX_QUOTED`), and whether it was cut.
pub fn clip(text: &str) -> (&str, bool) {
    match text.char_indices().nth(MAX_QUOTED) {
        Some((i, _)) => (&text[..i], true),
        None => (text, false),
    }
}

/// An argument shortened for an error message (arguments may be long or hostile): at most 64
/// characters, then `...`.
pub fn shorten(arg: &str) -> String {
    match clip(arg) {
        (head, true) => format!("{head}..."),
        (all, false) => all.to_string(),
    }
}
