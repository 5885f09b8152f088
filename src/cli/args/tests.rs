//! Table tests of the argument grammar: accepted command lines and what they parse to, refused
//! ones and the error each gets.

use super::*;

const SPECS: &[OptSpec] = &[
    value("port", "N", Some("8082"), "the port"),
    value("fault", "NAME", None, "a fault\n(repeatable)"),
    switch("bench", "bench mode"),
];

fn grammar(positionals: bool) -> Grammar<'static> {
    Grammar {
        command: "demo",
        options: Options::Table(SPECS),
        positionals,
    }
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

type Opts<'a> = &'a [(&'a str, Option<&'a str>)];

#[test]
fn accepted_command_lines() {
    let cases: &[(&[&str], bool, Opts, &[&str])] = &[
        (&[], false, &[], &[]),
        (&["--port", "1"], false, &[("port", Some("1"))], &[]),
        (&["--port=1"], false, &[("port", Some("1"))], &[]),
        (&["--PORT=1"], false, &[("port", Some("1"))], &[]),
        (&["--port="], false, &[("port", Some(""))], &[]),
        (&["--port=a=b"], false, &[("port", Some("a=b"))], &[]),
        (&["--port", "-1"], false, &[("port", Some("-1"))], &[]),
        (&["--port=--x"], false, &[("port", Some("--x"))], &[]),
        (&["--bench"], false, &[("bench", None)], &[]),
        (
            &["--fault", "a", "--bench", "--fault=b"],
            false,
            &[("fault", Some("a")), ("bench", None), ("fault", Some("b"))],
            &[],
        ),
        (&["--"], false, &[], &[]),
        (
            &["x", "--", "--port", "-h"],
            true,
            &[],
            &["x", "--port", "-h"],
        ),
        (
            &["--bench", "-", "y"],
            true,
            &[("bench", None)],
            &["-", "y"],
        ),
    ];
    for (args, positionals, options, rest) in cases {
        let parsed = parse(&grammar(*positionals), &strings(args))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        let want: Vec<(String, Option<String>)> = options
            .iter()
            .map(|(n, v)| (n.to_string(), v.map(String::from)))
            .collect();
        assert_eq!(parsed.options, want, "{args:?}");
        assert_eq!(parsed.positionals, strings(rest), "{args:?}");
        assert!(!parsed.help, "{args:?}");
    }
}

#[test]
fn help_anywhere_before_the_end_of_options_wins() {
    for args in [
        &["--help"][..],
        &["-h"],
        &["--nope", "-h"],
        &["--port", "--help"],
    ] {
        assert!(
            parse(&grammar(false), &strings(args)).unwrap().help,
            "{args:?}"
        );
    }
    assert!(parse(&grammar(false), &strings(&["--", "--help"])).is_err());
}

#[test]
fn refused_command_lines() {
    let cases: &[(&[&str], &str, Problem)] = &[
        (&["--foo"], "--foo", Problem::Unknown),
        (&["--foo=1"], "--foo", Problem::Unknown),
        (&["--=1"], "--", Problem::Unknown),
        (&["-p", "1"], "-p", Problem::Unknown),
        (&["---port", "1"], "---port", Problem::Unknown),
        (&["--port"], "--port", Problem::MissingValue),
        (&["--port", "--bench"], "--port", Problem::MissingValue),
        (&["--bench=yes"], "--bench", Problem::UnexpectedValue),
        (&["stray"], "stray", Problem::Positional),
        (&["--bench", "--", "x"], "x", Problem::Positional),
    ];
    for (args, flag, problem) in cases {
        let e = parse(&grammar(false), &strings(args)).unwrap_err();
        assert_eq!((e.flag.as_str(), &e.problem), (*flag, problem), "{args:?}");
        assert_eq!(e.command, "demo");
    }
}

#[test]
fn error_messages_name_the_command_and_its_help() {
    let e = parse(&grammar(false), &strings(&["--foo"])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown option --foo for `cryptoworker demo`; see `cryptoworker demo --help`"
    );
    let e = parse(&grammar(false), &strings(&["--port"])).unwrap_err();
    assert!(
        e.to_string()
            .contains("--port of `cryptoworker demo` needs a value"),
        "{e}"
    );
    let long = format!("--{}", "x".repeat(10_000));
    let e = parse(&grammar(false), &[long]).unwrap_err();
    assert!(e.to_string().len() < 200, "{e}");
}

#[test]
fn typed_accessors_and_numbers() {
    let args = strings(&["--port", "1", "--fault=a", "--port= 7 ", "--fault", "b"]);
    let p = parse(&grammar(false), &args).unwrap();
    assert_eq!(p.last("port"), Some(" 7 "));
    assert_eq!(p.number::<u16>("port"), Ok(Some(7)));
    assert_eq!(p.all("fault").collect::<Vec<_>>(), ["a", "b"]);
    assert!(p.has("fault") && !p.has("bench"));
    assert_eq!(p.number::<u16>("bench"), Ok(None));
    let p = parse(&grammar(false), &strings(&["--port", "70000"])).unwrap();
    let e = p.number::<u16>("port").unwrap_err();
    assert_eq!((e.flag.as_str(), e.command.as_str()), ("--port", "demo"));
    assert!(
        e.to_string().contains("\"70000\" is not a valid number"),
        "{e}"
    );
}

#[test]
fn lookup_options_answer_for_families_of_names() {
    fn lookup(name: &str) -> Option<Arity> {
        name.ends_with("-port").then_some(Arity::Value)
    }
    let g = Grammar {
        command: "run",
        options: Options::Lookup(lookup),
        positionals: false,
    };
    let p = parse(&g, &strings(&["--btc-port", "1", "--ETH-PORT=2"])).unwrap();
    assert_eq!(p.last("eth-port"), Some("2"));
    let e = parse(&g, &strings(&["--btc-host=x"])).unwrap_err();
    assert_eq!(
        (e.flag.as_str(), e.problem),
        ("--btc-host", Problem::Unknown)
    );
}

#[test]
fn help_lists_every_option_with_its_default() {
    let text = options_help(SPECS);
    assert!(text.contains("--port N"), "{text}");
    assert!(text.contains("the port (default: 8082)"), "{text}");
    assert!(text.contains("--fault NAME"), "{text}");
    assert!(
        text.contains("\n                           (repeatable)"),
        "{text}"
    );
    assert!(text.contains("--bench "), "{text}");
    assert!(text.contains("-h, --help"), "{text}");
}
