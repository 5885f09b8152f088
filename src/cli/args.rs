//! The one argument grammar every `cryptoworker` command accepts, driven by a declared table of
//! options per command.
//!
//! Grammar: `--name VALUE` or `--name=VALUE` for an option that takes a value, `--name` for a
//! switch, `--` ends the options (everything after it is positional), `-h`/`--help` anywhere
//! before `--` asks for the command's help. Option names are case-insensitive. A repeated option
//! keeps every occurrence: [`Parsed::last`] reads single-valued options (the last one wins),
//! [`Parsed::all`] repeatable ones.
//!
//! Invariants: parsing never panics and never guesses; an unknown option, a missing value, a value
//! given to a switch, an unexpected positional and a bad number are all refused with an
//! [`ArgError`] naming the command and the option as typed (shortened when long). A value that
//! starts with `--` must be written `--name=VALUE`; one starting with a single `-` (`--rate -1`)
//! is taken as the value.

use std::fmt;

/// Whether an option takes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arity {
    /// `--name` alone.
    Switch,
    /// `--name VALUE` or `--name=VALUE`.
    Value,
}

/// One declared option: its name (without `--`), the placeholder of its value (`None` for a
/// switch), its default and meaning as shown by `--help`.
#[derive(Debug, Clone, Copy)]
pub struct OptSpec {
    /// Long name without the dashes, lower-case, e.g. `port`.
    pub name: &'static str,
    /// Placeholder of the value in `--help`, e.g. `N`; `None` for a switch.
    pub value: Option<&'static str>,
    /// Default shown by `--help`, if any.
    pub default: Option<&'static str>,
    /// Meaning shown by `--help`; may span lines.
    pub help: &'static str,
}

/// An option taking a value.
pub const fn value(
    name: &'static str,
    placeholder: &'static str,
    default: Option<&'static str>,
    help: &'static str,
) -> OptSpec {
    OptSpec {
        name,
        value: Some(placeholder),
        default,
        help,
    }
}

/// A switch (no value).
pub const fn switch(name: &'static str, help: &'static str) -> OptSpec {
    OptSpec {
        name,
        value: None,
        default: None,
        help,
    }
}

/// The options a command knows: a fixed table, or a lookup for families of names (the worker's
/// per-coin settings).
#[derive(Clone, Copy)]
pub enum Options<'a> {
    /// A declared table.
    Table(&'a [OptSpec]),
    /// A function answering for a lower-case name without dashes.
    Lookup(fn(&str) -> Option<Arity>),
}

impl Options<'_> {
    fn arity(&self, name: &str) -> Option<Arity> {
        match self {
            Options::Table(specs) => specs
                .iter()
                .find(|s| s.name == name)
                .map(|s| match s.value {
                    Some(_) => Arity::Value,
                    None => Arity::Switch,
                }),
            Options::Lookup(find) => find(name),
        }
    }
}

/// What one command accepts.
#[derive(Clone, Copy)]
pub struct Grammar<'a> {
    /// The command's name, for error messages (`demo`).
    pub command: &'a str,
    /// Its options.
    pub options: Options<'a>,
    /// Whether it takes positional arguments.
    pub positionals: bool,
}

impl<'a> Grammar<'a> {
    /// A command with a fixed option table and no positional arguments.
    pub fn table(command: &'a str, specs: &'a [OptSpec]) -> Grammar<'a> {
        Grammar {
            command,
            options: Options::Table(specs),
            positionals: false,
        }
    }
}

/// Parses `args` for a command; on `--help` prints `help()` and returns `None`.
pub fn parse_or_help(
    grammar: &Grammar,
    args: &[String],
    help: impl FnOnce() -> String,
) -> Result<Option<Parsed>, ArgError> {
    let parsed = parse(grammar, args)?;
    if parsed.help {
        print!("{}", help());
        return Ok(None);
    }
    Ok(Some(parsed))
}

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parsed {
    command: String,
    /// `--help` or `-h` was given: nothing else was checked.
    pub help: bool,
    /// Every option in order: lower-case name without dashes, and its value (`None` = switch).
    pub options: Vec<(String, Option<String>)>,
    /// The positional arguments.
    pub positionals: Vec<String>,
}

/// What is wrong with a command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The option is not one of the command's.
    Unknown,
    /// The option needs a value and has none.
    MissingValue,
    /// The option is a switch but was given a value.
    UnexpectedValue,
    /// A positional argument to a command that takes none.
    Positional,
    /// The value is refused, and why.
    Invalid(String),
}

/// A refused command line: the command, the option (as typed) or argument, and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgError {
    /// The command, e.g. `demo`.
    pub command: String,
    /// The option as typed (`--port`), or the positional argument, shortened.
    pub flag: String,
    /// What is wrong.
    pub problem: Problem,
}

impl ArgError {
    /// An error about `flag` of `command`.
    pub fn new(command: &str, flag: &str, problem: Problem) -> ArgError {
        ArgError {
            command: command.to_string(),
            flag: crate::util::shorten(flag),
            problem,
        }
    }

    /// The problem without the command's name, for errors that carry the flag separately.
    pub fn reason(&self) -> String {
        let see = format!("see `cryptoworker {} --help`", self.command);
        match &self.problem {
            Problem::Unknown => format!("unknown option; {see}"),
            Problem::MissingValue => {
                format!(
                    "needs a value (write {}=VALUE for one starting with --)",
                    self.flag
                )
            }
            Problem::UnexpectedValue => format!("takes no value; {see}"),
            Problem::Positional => format!("unexpected argument; options are --name VALUE; {see}"),
            Problem::Invalid(why) => why.clone(),
        }
    }
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (cmd, flag) = (&self.command, &self.flag);
        let see = format!("see `cryptoworker {cmd} --help`");
        match &self.problem {
            Problem::Unknown => write!(f, "unknown option {flag} for `cryptoworker {cmd}`; {see}"),
            Problem::MissingValue => write!(
                f,
                "option {flag} of `cryptoworker {cmd}` needs a value \
                 (write {flag}=VALUE for one starting with --)"
            ),
            Problem::UnexpectedValue => {
                write!(
                    f,
                    "option {flag} of `cryptoworker {cmd}` takes no value; {see}"
                )
            }
            Problem::Positional => {
                write!(
                    f,
                    "unexpected argument {flag:?} for `cryptoworker {cmd}`; {see}"
                )
            }
            Problem::Invalid(why) => write!(f, "invalid {flag} for `cryptoworker {cmd}`: {why}"),
        }
    }
}

impl std::error::Error for ArgError {}

/// Parses `args` (the arguments after the command's name) by `grammar`.
pub fn parse(grammar: &Grammar, args: &[String]) -> Result<Parsed, ArgError> {
    let mut parsed = Parsed {
        command: grammar.command.to_string(),
        ..Parsed::default()
    };
    let mut before_end = args.iter().take_while(|a| *a != "--");
    if before_end.any(|a| a == "--help" || a == "-h") {
        parsed.help = true;
        return Ok(parsed);
    }
    let mut it = args.iter().peekable();
    while let Some(arg) = it.next() {
        if arg == "--" {
            parsed.positionals.extend(it.by_ref().cloned());
            break;
        }
        match arg.strip_prefix("--") {
            Some(body) => parsed.options.push(option(grammar, body, &mut it)?),
            None if arg.starts_with('-') && arg.len() > 1 => {
                return Err(ArgError::new(grammar.command, arg, Problem::Unknown));
            }
            None => parsed.positionals.push(arg.clone()),
        }
    }
    match parsed.positionals.first() {
        Some(first) if !grammar.positionals => {
            Err(ArgError::new(grammar.command, first, Problem::Positional))
        }
        _ => Ok(parsed),
    }
}

/// One option from `body` (an argument without its `--`), taking its value from `rest` when it
/// needs one and has no `=VALUE`.
fn option<'a>(
    grammar: &Grammar,
    body: &str,
    rest: &mut std::iter::Peekable<impl Iterator<Item = &'a String>>,
) -> Result<(String, Option<String>), ArgError> {
    let (name, inline) = match body.split_once('=') {
        Some((name, value)) => (name.to_ascii_lowercase(), Some(value.to_string())),
        None => (body.to_ascii_lowercase(), None),
    };
    let error = |problem| {
        Err(ArgError::new(
            grammar.command,
            &format!("--{name}"),
            problem,
        ))
    };
    let value = match (grammar.options.arity(&name), inline) {
        (None, _) => return error(Problem::Unknown),
        (Some(Arity::Switch), Some(_)) => return error(Problem::UnexpectedValue),
        (Some(Arity::Switch), None) => None,
        (Some(Arity::Value), Some(v)) => Some(v),
        (Some(Arity::Value), None) => match rest.next_if(|next| !next.starts_with("--")) {
            Some(v) => Some(v.clone()),
            None => return error(Problem::MissingValue),
        },
    };
    Ok((name, value))
}

impl Parsed {
    /// The value of the last occurrence of option `name` (a switch has none).
    pub fn last(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// Every value given to option `name`, in order.
    pub fn all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> {
        self.options
            .iter()
            .filter(move |(n, _)| n == name)
            .filter_map(|(_, v)| v.as_deref())
    }

    /// Whether option (or switch) `name` was given.
    pub fn has(&self, name: &str) -> bool {
        self.options.iter().any(|(n, _)| n == name)
    }

    /// The last value of `name` parsed as a number; `Ok(None)` when not given.
    pub fn number<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, ArgError> {
        let Some(text) = self.last(name) else {
            return Ok(None);
        };
        match text.trim().parse() {
            Ok(n) => Ok(Some(n)),
            Err(_) => Err(self.invalid(
                name,
                format!("{:?} is not a valid number", crate::util::shorten(text)),
            )),
        }
    }

    /// An error refusing the value of option `name` (without dashes) for `why`.
    pub fn invalid(&self, name: &str, why: impl Into<String>) -> ArgError {
        let flag = format!("--{name}");
        ArgError::new(&self.command, &flag, Problem::Invalid(why.into()))
    }
}

/// The `--help` lines of `specs`: one option per entry, its meaning and default indented under
/// or beside it, then `-h, --help`.
pub fn options_help(specs: &[OptSpec]) -> String {
    const WIDTH: usize = 26;
    let mut out = String::from("Options:\n");
    for spec in specs {
        let mut left = format!("  --{}", spec.name);
        if let Some(placeholder) = spec.value {
            left = format!("{left} {placeholder}");
        }
        let mut help = spec.help.to_string();
        if let Some(default) = spec.default {
            help = format!("{help} (default: {default})");
        }
        let indent = " ".repeat(WIDTH + 1);
        let help = help.replace('\n', &format!("\n{indent}"));
        match left.len() < WIDTH {
            true => out.push_str(&format!("{left:<WIDTH$} {help}\n")),
            false => out.push_str(&format!("{left}\n{indent}{help}\n")),
        }
    }
    out.push_str(&format!(
        "{:<WIDTH$} {}\n",
        "  -h, --help", "print this help"
    ));
    out
}

#[cfg(test)]
mod tests;
