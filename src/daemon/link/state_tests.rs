//! The link's state machine without sockets: a host name that needs the resolver keeps every
//! step (attempt, resolve, time out, back off, close) off the network.

use super::*;

/// One thing that happens to the link.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// The reactor's timer fires at the link's deadline (or now, if that is earlier).
    Due,
    /// The reactor's timer fires this long after the previous step.
    After(Duration),
    /// The resolver answers with an error.
    Unresolved,
    /// The worker shuts down.
    Close,
}

fn link(now: Instant) -> DaemonLink {
    let config = CoinConfig::test_btc(&[]);
    DaemonLink::new(config, Duration::from_secs(20), now)
}

fn state_name(state: &LinkState) -> &'static str {
    match state {
        LinkState::Backoff { .. } => "backoff",
        LinkState::Resolving { .. } => "resolving",
        LinkState::Connecting { .. } => "connecting",
        LinkState::Handshaking { .. } => "handshaking",
        LinkState::Open { .. } => "open",
    }
}

fn render(o: &LinkOutput) -> String {
    match o {
        LinkOutput::Register => "register".into(),
        LinkOutput::Resolve(host, port) => format!("resolve {host}:{port}"),
        LinkOutput::Connected => "connected".into(),
        LinkOutput::Disconnected(why) => format!("down: {why}"),
        LinkOutput::Frame(_) => "frame".into(),
        LinkOutput::More => "more".into(),
    }
}

const RESOLVE: &str = "resolve btc.invalid:5000";
const UNRESOLVED: &str = "down: cannot resolve btc.invalid: nope";
const TIMED_OUT: &str = "down: connect timed out";

/// What it shows, then each step with the outputs and the state it must lead to.
type Case = (
    &'static str,
    Vec<(Step, &'static [&'static str], &'static str)>,
);

#[test]
fn the_link_state_machine_without_sockets() {
    let cases: Vec<Case> = vec![
        (
            "the first attempt asks the resolver (never resolves on the reactor)",
            vec![(Step::Due, &[RESOLVE], "resolving")],
        ),
        (
            "an unreachable daemon is reported down once per outage",
            vec![
                (Step::Due, &[RESOLVE], "resolving"),
                (Step::Unresolved, &[UNRESOLVED], "backoff"),
                (Step::Due, &[RESOLVE], "resolving"),
                (Step::Unresolved, &[], "backoff"),
            ],
        ),
        (
            "a resolver that never answers times the attempt out",
            vec![
                (Step::Due, &[RESOLVE], "resolving"),
                (Step::After(Duration::from_secs(1)), &[], "resolving"),
                (Step::After(CONNECT_TIMEOUT), &[TIMED_OUT], "backoff"),
            ],
        ),
        (
            "a late resolver answer is ignored",
            vec![
                (Step::Due, &[RESOLVE], "resolving"),
                (Step::After(CONNECT_TIMEOUT), &[TIMED_OUT], "backoff"),
                (Step::Unresolved, &[], "backoff"),
            ],
        ),
        (
            "a closing link makes no more attempts",
            vec![(Step::Close, &[], "backoff"), (Step::Due, &[], "backoff")],
        ),
        (
            "a failure while closing is not reported",
            vec![
                (Step::Due, &[RESOLVE], "resolving"),
                (Step::Close, &[], "resolving"),
                (Step::After(CONNECT_TIMEOUT), &[], "backoff"),
                (Step::Due, &[], "backoff"),
            ],
        ),
    ];
    for (what, steps) in cases {
        let mut now = Instant::now();
        let mut l = link(now);
        for (n, (step, want, state)) in steps.into_iter().enumerate() {
            let mut out = Vec::new();
            match step {
                Step::Due => {
                    now = now.max(l.deadline());
                    l.on_timer(now, &mut out);
                }
                Step::After(d) => {
                    now += d;
                    l.on_timer(now, &mut out);
                }
                Step::Unresolved => l.resolved(Err(io::Error::other("nope")), now, &mut out),
                Step::Close => l.close(),
            }
            let got: Vec<String> = out.iter().map(render).collect();
            assert_eq!(got, want, "{what}: step {n} ({step:?})");
            assert_eq!(state_name(&l.state), state, "{what}: step {n} ({step:?})");
            assert!(!l.stats.connected, "{what}: never connected");
            assert!(l.stream().is_none(), "{what}: no socket without a connect");
        }
    }
}

#[test]
fn the_deadline_follows_the_state() {
    let start = Instant::now();
    let mut l = link(start);
    assert_eq!(l.deadline(), start, "the first attempt is due at once");
    let mut out = Vec::new();
    l.on_timer(start, &mut out);
    assert_eq!(l.deadline(), start + CONNECT_TIMEOUT, "resolving");
    let mut ceilings = Vec::new();
    let mut now = start;
    for _ in 0..6 {
        let ceiling = l.backoff.ceiling();
        l.resolved(Err(io::Error::other("nope")), now, &mut out);
        let wait = l.deadline().duration_since(now);
        assert!(
            wait <= ceiling,
            "{wait:?} within the backoff ceiling {ceiling:?}"
        );
        ceilings.push(ceiling);
        now = l.deadline();
        l.on_timer(now, &mut out);
    }
    assert!(
        ceilings.windows(2).all(|w| w[0] < w[1]),
        "backoff grows while the failures go on: {ceilings:?}"
    );
    assert_eq!(l.url(), "ws://btc.invalid:5000/ws");
    assert_eq!(l.stats.reconnects, 0, "only a lost open link counts");
}
