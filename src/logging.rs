//! Logging setup for the binary: one line per state change on stderr, `LOG_LEVEL` controls the
//! level. Library code only uses the `log` macros.

use simplelog::{ColorChoice, ConfigBuilder, LevelFilter, TermLogger, TerminalMode};

/// Installs the stderr logger (ignored if one is already installed).
pub fn init(level: LevelFilter) {
    let config = ConfigBuilder::new()
        .set_target_level(LevelFilter::Off)
        .set_thread_level(LevelFilter::Off)
        .set_location_level(LevelFilter::Off)
        .set_time_format_rfc3339()
        .add_filter_ignore_str("tungstenite")
        .add_filter_ignore_str("tokio_postgres")
        .add_filter_ignore_str("postgres")
        .build();
    let _ = TermLogger::init(level, config, TerminalMode::Stderr, ColorChoice::Never);
}

/// The level named by `LOG_LEVEL` (default `info`), for commands that do not parse a full
/// configuration.
pub fn level_from_env() -> LevelFilter {
    std::env::var("LOG_LEVEL")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(LevelFilter::Info)
}
