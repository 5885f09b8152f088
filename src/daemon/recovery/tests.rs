use super::*;

fn req(wallet: &str) -> OpenRequest {
    OpenRequest {
        wallet: wallet.into(),
        status: 0,
        sent_amount: "0".into(),
    }
}

fn requests(ids: &[&str]) -> HashMap<String, OpenRequest> {
    ids.iter().map(|id| (id.to_string(), req("w"))).collect()
}

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("r{i}")).collect()
}

/// Answers every call the planner hands out (successfully) until it is done; returns the
/// purposes in the order they were issued and the largest number outstanding at once.
fn run(p: &mut Planner, reqs: &HashMap<String, OpenRequest>) -> (Vec<Purpose>, usize) {
    let mut issued = Vec::new();
    let mut outstanding: VecDeque<Purpose> = VecDeque::new();
    let mut max = 0;
    loop {
        for (_, _, purpose) in p.next_calls(reqs) {
            outstanding.push_back(purpose.clone());
            issued.push(purpose);
        }
        max = max.max(outstanding.len());
        let Some(done) = outstanding.pop_front() else {
            break;
        };
        match done {
            Purpose::LoadWallet(w) => p.loaded(&w, Ok(())),
            Purpose::Drain(w) => p.drained(&w, Ok(1)),
            Purpose::Reconcile(id) => p.reconciled(&id, Outcome::Reconciled { moved: false }),
            other => panic!("unexpected {other:?}"),
        }
    }
    (issued, max)
}

#[test]
fn requests_known_only_after_the_connect_are_reconciled_in_that_connection() {
    // The startup race: the link came up before the database's first read of open requests.
    let mut p = Planner::new(Family::Eth, 2);
    p.connected(&Vec::new(), &Vec::new(), Instant::now());
    let reqs = requests(&["a", "b", "c", "d"]);
    assert!(p.next_calls(&reqs).is_empty());
    assert!(
        p.finished(Instant::now()).is_some(),
        "the connect's (empty) catch-up is done"
    );
    let known: Vec<String> = reqs.keys().cloned().collect();
    p.add_requests(&known);
    let (issued, _) = run(&mut p, &reqs);
    assert_eq!(issued.len(), 4, "{issued:?}");
    let (summary, _, after_connect) = p.finished(Instant::now()).expect("a summary");
    assert_eq!(summary.requests_reconciled, 4);
    assert!(
        !after_connect,
        "learned after the connect's own catch-up finished"
    );
}

#[test]
fn a_request_row_inserted_after_its_payment_is_reconciled_at_once() {
    let mut p = Planner::new(Family::Btc, 2);
    let mut reqs = requests(&["old"]);
    let known: Vec<String> = reqs.keys().cloned().collect();
    p.connected(&Vec::new(), &known, Instant::now());
    run(&mut p, &reqs);
    assert!(p.finished(Instant::now()).is_some());
    reqs.insert("new".into(), req("w"));
    let all: Vec<String> = reqs.keys().cloned().collect();
    p.add_requests(&all);
    let (issued, _) = run(&mut p, &reqs);
    assert_eq!(
        issued,
        [Purpose::Reconcile("new".into())],
        "only the new one, once per connection"
    );
}

#[test]
fn every_request_is_asked_once_per_connect_and_never_more_than_the_window_at_once() {
    let all = ids(12_000);
    let reqs: HashMap<String, OpenRequest> = all.iter().map(|id| (id.clone(), req("w"))).collect();
    let mut p = Planner::new(Family::Btc, CATCHUP_WINDOW);
    for round in 0..2 {
        p.connected(&Vec::new(), &all, Instant::now());
        let (issued, max) = run(&mut p, &reqs);
        assert_eq!(issued.len(), 12_000, "round {round}");
        assert!(
            max <= CATCHUP_WINDOW,
            "at most the window outstanding: {max}"
        );
        let (s, _, after_connect) = p.finished(Instant::now()).expect("finished");
        assert_eq!(s.requests_reconciled, 12_000);
        assert!(after_connect);
        assert!(p.disconnected().is_none(), "nothing left when finished");
    }
}

#[test]
fn wallets_are_loaded_then_drained() {
    let mut p = Planner::new(Family::Btc, 1);
    let wallets = vec!["w1".to_string(), "w2".to_string()];
    p.connected(&wallets, &Vec::new(), Instant::now());
    let (issued, _) = run(&mut p, &HashMap::new());
    assert_eq!(
        issued,
        [
            Purpose::LoadWallet("w1".into()),
            Purpose::LoadWallet("w2".into()),
            Purpose::Drain("w1".into()),
            Purpose::Drain("w2".into()),
        ]
    );
    let (s, _, _) = p.finished(Instant::now()).expect("finished");
    assert_eq!(
        (s.wallets_loaded, s.wallets_drained, s.events_recovered),
        (2, 2, 2)
    );
}

#[test]
fn failures_are_retried_then_counted_once_in_the_summary() {
    let mut p = Planner::new(Family::Btc, 2);
    let reqs = requests(&["a"]);
    let known: Vec<String> = reqs.keys().cloned().collect();
    p.connected(&Vec::new(), &known, Instant::now());
    for attempt in 1..=MAX_ATTEMPTS {
        let calls = p.next_calls(&reqs);
        assert_eq!(calls.len(), 1, "attempt {attempt}");
        p.reconciled("a", Outcome::Failed("timed out".into()));
    }
    assert!(
        p.next_calls(&reqs).is_empty(),
        "given up after the attempts"
    );
    let (s, _, _) = p.finished(Instant::now()).expect("finished");
    assert_eq!(s.failed, 1);
    assert_eq!(s.first_error.as_deref(), Some("timed out"));
}

#[test]
fn a_wallet_whose_load_or_drain_keeps_failing_is_retried_then_given_up() {
    let mut p = Planner::new(Family::Btc, 1);
    let wallets = vec!["w1".to_string(), "w2".to_string()];
    p.connected(&wallets, &Vec::new(), Instant::now());
    let none = HashMap::new();
    let mut issued = Vec::new();
    let (mut w1_loads, mut w2_drains) = (0, 0);
    while let Some((_, _, purpose)) = p.next_calls(&none).pop() {
        issued.push(purpose.clone());
        match purpose {
            Purpose::LoadWallet(w) if w == "w1" => {
                w1_loads += 1;
                p.loaded(&w, Err(CallError::Timeout));
            }
            Purpose::LoadWallet(w) => p.loaded(&w, Ok(())),
            Purpose::Drain(w) => {
                w2_drains += 1;
                p.drained(&w, Err(CallError::Transport("connection reset".into())));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        (w1_loads, w2_drains),
        (MAX_ATTEMPTS, MAX_ATTEMPTS),
        "{issued:?}"
    );
    assert!(
        !issued.contains(&Purpose::Drain("w1".into())),
        "a wallet that never loaded is not drained"
    );
    let (s, _, _) = p.finished(Instant::now()).expect("finished");
    assert_eq!((s.wallets_loaded, s.wallets_drained, s.failed), (1, 0, 2));
    assert_eq!(s.first_error.as_deref(), Some("timed out"));
}

#[test]
fn a_disconnect_mid_catch_up_reports_what_was_left_and_plans_nothing() {
    let all = ids(10);
    let reqs: HashMap<String, OpenRequest> = all.iter().map(|id| (id.clone(), req("w"))).collect();
    let mut p = Planner::new(Family::Btc, 2);
    p.connected(&Vec::new(), &all, Instant::now());
    let calls = p.next_calls(&reqs);
    assert_eq!(calls.len(), 2);
    let (_, left) = p.disconnected().expect("unfinished");
    assert_eq!(left, 10);
    // Answers of the abandoned calls arrive after the disconnect: ignored, nothing re-planned.
    p.reconciled("r0", Outcome::Failed("link down".into()));
    assert!(p.next_calls(&reqs).is_empty());
    p.add_requests(&all);
    assert!(
        p.next_calls(&reqs).is_empty(),
        "nothing planned while disconnected"
    );
}

#[test]
fn a_request_closed_before_its_turn_is_skipped() {
    let mut p = Planner::new(Family::Btc, 2);
    let known = vec!["gone".to_string(), "open".to_string()];
    p.connected(&Vec::new(), &known, Instant::now());
    let reqs = requests(&["open"]);
    let calls = p.next_calls(&reqs);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].2, Purpose::Reconcile("open".into()));
}
