//! The command line as a user types it: every command answers `--help` with its options and
//! exit 0, refuses an unknown option with exit 2 naming the command, and accepts both
//! `--flag value` and `--flag=value` (`demo` included).

mod common;

use common::deadline;
use common::process::Proc;
use std::collections::BTreeMap;

/// Runs `cryptoworker args...` to its end with an empty environment; returns the exit code and
/// its output once every needle appeared in it (the pipes are drained by threads, so the output
/// may trail the exit), or as it is when one never does.
fn run_to_end(args: &[&str], needles: &[&str]) -> (i32, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let mut proc = Proc::spawn(&args.join(" "), &args, &BTreeMap::new());
    let until = deadline(20.0);
    let status = proc.wait_exit(until).expect("exits within 20 s");
    for needle in needles {
        if proc.output.wait_for(needle, until).is_none() {
            break;
        }
    }
    (status.code().expect("an exit code"), proc.output.tail(400))
}

/// Each command with options its `--help` must list.
const HELP_MENTIONS: &[(&str, &[&str])] = &[
    (
        "run",
        &["--worker-port, --port", "--database-url", "--{coin}-port"],
    ),
    (
        "check",
        &["Usage: cryptoworker check", "DAEMON_RPC_TIMEOUT_S"],
    ),
    (
        "migrate",
        &["Usage: cryptoworker migrate", "--db-pool-size"],
    ),
    ("demo", &["--port N", "--rate EVENTS_PER_S"]),
    (
        "client",
        &[
            "--url URL",
            "--events",
            "--since N",
            "--token KEY",
            "--count N",
        ],
    ),
    (
        "simulate",
        &["--coin SYMBOL", "--fault NAME[=VALUE]", "--preload-wallets"],
    ),
    ("help", &["Commands:", "simulate"]),
    ("version", &["Commands:"]),
];

#[test]
fn every_command_help_lists_its_options_and_exits_0() {
    for (command, mentions) in HELP_MENTIONS {
        let (code, out) = run_to_end(&[command, "--help"], mentions);
        assert_eq!(code, 0, "{command} --help: {out}");
        for needle in *mentions {
            assert!(
                out.contains(needle),
                "{command} --help lacks {needle:?}:\n{out}"
            );
        }
        assert!(
            out.contains("-h, --help") || out.contains("Commands:"),
            "{out}"
        );
    }
}

#[test]
fn every_command_refuses_an_unknown_option_with_exit_2() {
    for (command, _) in HELP_MENTIONS {
        let want = format!(
            "unknown option --nope for `cryptoworker {command}`; see `cryptoworker {command} --help`"
        );
        let (code, out) = run_to_end(&[command, "--nope=1"], &[&want]);
        assert_eq!(code, 2, "{command}: {out}");
        assert!(out.contains(&want), "{command}: {out}");
    }
}

#[test]
fn bad_values_exit_2_naming_the_option() {
    let cases: &[(&[&str], &str)] = &[
        (&["demo", "--rate=0"], "--rate"),
        (&["demo", "--port", "x"], "--port"),
        (&["client", "--since=x"], "--since"),
        (&["simulate", "--port="], "--port"),
        (&["run", "--port=x"], "--port"),
        (
            &["demo", "--port"],
            "--port of `cryptoworker demo` needs a value",
        ),
        (&["demo", "stray"], "unexpected argument \"stray\""),
    ];
    for (args, needle) in cases {
        let (code, out) = run_to_end(args, &[needle]);
        assert_eq!(code, 2, "{args:?}: {out}");
        assert!(out.contains(needle), "{args:?}: {out}");
    }
}

#[test]
fn demo_accepts_flag_equals_value() {
    let args: Vec<String> = ["demo", "--port=0", "--rate=5"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut proc = Proc::spawn("demo", &args, &BTreeMap::new());
    let running = proc
        .output
        .wait_for("cryptoworker demo is running.", deadline(20.0));
    assert!(running.is_some(), "{}", proc.output.tail(40));
    proc.sigterm();
    let status = proc
        .wait_exit(deadline(15.0))
        .expect("demo exits after SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", proc.output.tail(40));
}
