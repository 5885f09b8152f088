//! The top-level command split for `main.rs` (README.md, "Command line"): the first argument names
//! the command, the rest are that command's flags.
//!
//! Invariants: no arguments, or flags without a command, mean `run`; `--help`/`-h` and
//! `--version`/`-V` in first position are the top-level help and version; anything else in
//! first position that is not a command is refused with the list of commands.

/// A top-level command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Run the worker from the environment and flags.
    Run,
    /// Run the worker against built-in simulated daemons.
    Demo,
    /// Run one simulated Bitcart daemon.
    Simulate,
    /// Check the database and every configured daemon.
    Check,
    /// Connect to a worker and print its events.
    Client,
    /// Apply the database migrations and exit.
    Migrate,
    /// Print the top-level usage.
    Help,
    /// Print the version.
    Version,
}

/// Every command with its name and one-line description, in usage order.
const COMMANDS: &[(Command, &str, &str)] = &[
    (
        Command::Run,
        "run",
        "run the worker from the environment and flags (the default)",
    ),
    (
        Command::Demo,
        "demo",
        "run the worker against built-in simulated daemons, no services needed",
    ),
    (
        Command::Simulate,
        "simulate",
        "run one simulated Bitcart daemon, e.g. simulate --coin BTC --port 5000",
    ),
    (
        Command::Check,
        "check",
        "check the database and every configured daemon; non-zero exit on failure",
    ),
    (
        Command::Client,
        "client",
        "connect to a worker, subscribe and print its events",
    ),
    (
        Command::Migrate,
        "migrate",
        "apply the database migrations and exit",
    ),
    (Command::Help, "help", "print this help"),
    (Command::Version, "version", "print the version"),
];

impl Command {
    /// The command's name on the command line.
    pub fn name(self) -> &'static str {
        COMMANDS
            .iter()
            .find(|(c, _, _)| *c == self)
            .map_or("run", |(_, name, _)| name)
    }
}

/// Splits `argv[1..]` into the command and its remaining args (`cryptoworker` alone and flags
/// without a command = Run). Unknown command -> Err(message listing the commands).
pub fn split(args: &[String]) -> Result<(Command, Vec<String>), String> {
    let Some(first) = args.first() else {
        return Ok((Command::Run, Vec::new()));
    };
    let rest = args[1..].to_vec();
    match first.as_str() {
        "--help" | "-h" => return Ok((Command::Help, rest)),
        "--version" | "-V" => return Ok((Command::Version, rest)),
        flag if flag.starts_with('-') => return Ok((Command::Run, args.to_vec())),
        _ => {}
    }
    match COMMANDS.iter().find(|(_, name, _)| *name == first) {
        Some((command, _, _)) => Ok((*command, rest)),
        None => {
            let names: Vec<&str> = COMMANDS.iter().map(|(_, name, _)| *name).collect();
            let shown: String = first.chars().take(64).collect();
            Err(format!(
                "unknown command {shown:?}; commands: {} (see cryptoworker --help)",
                names.join(", ")
            ))
        }
    }
}

/// True when a command's args ask for its help (`--help` or `-h` anywhere), so `main` can print
/// it before parsing the other flags.
pub fn wants_help(args: &[String]) -> bool {
    args.iter().any(|a| a == "--help" || a == "-h")
}

/// The top-level `--help`: the commands of README.md, "Command line", one line each.
pub fn usage() -> String {
    let mut out = format!(
        "cryptoworker {}: Bitcart coin daemon events in, one clean WebSocket stream out.\n\n\
         Usage: cryptoworker [COMMAND] [FLAGS]\n\nCommands:\n",
        env!("CARGO_PKG_VERSION")
    );
    for (_, name, about) in COMMANDS {
        out.push_str(&format!("  {name:<10} {about}\n"));
    }
    out.push_str(
        "\nWithout a command, cryptoworker runs the worker. Every setting is an environment\n\
         variable with a matching flag; see `cryptoworker run --help` for the full list.\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn no_arguments_and_bare_flags_mean_run() {
        assert_eq!(split(&[]).unwrap(), (Command::Run, vec![]));
        let a = args(&["--port", "1"]);
        assert_eq!(split(&a).unwrap(), (Command::Run, a.clone()));
    }

    #[test]
    fn each_command_is_recognised_and_keeps_its_args() {
        for (command, name, _) in COMMANDS {
            let (got, rest) = split(&args(&[name, "--coin", "BTC"])).unwrap();
            assert_eq!(got, *command);
            assert_eq!(rest, args(&["--coin", "BTC"]));
            assert_eq!(command.name(), *name);
        }
    }

    #[test]
    fn top_level_help_and_version_flags() {
        assert_eq!(split(&args(&["--help"])).unwrap().0, Command::Help);
        assert_eq!(split(&args(&["-h"])).unwrap().0, Command::Help);
        assert_eq!(split(&args(&["--version"])).unwrap().0, Command::Version);
        assert_eq!(split(&args(&["-V"])).unwrap().0, Command::Version);
    }

    #[test]
    fn unknown_command_lists_the_commands() {
        let e = split(&args(&["serve"])).unwrap_err();
        assert!(e.contains("\"serve\""), "{e}");
        for (_, name, _) in COMMANDS {
            assert!(e.contains(name), "{name} missing from {e}");
        }
        let e = split(&args(&[&"x".repeat(10_000)])).unwrap_err();
        assert!(e.len() < 300);
    }

    #[test]
    fn wants_help_finds_help_anywhere() {
        assert!(wants_help(&args(&["--port", "1", "-h"])));
        assert!(!wants_help(&args(&["--port", "1"])));
    }

    #[test]
    fn usage_lists_every_command() {
        let text = usage();
        for (_, name, about) in COMMANDS {
            assert!(text.contains(&format!("  {name:<10} {about}")), "{name}");
        }
    }
}
