//! Unit tests of the clerk's retry policy and outcome classification.

use super::*;

const MS: Duration = Duration::from_millis(1);

fn config() -> ClerkConfig {
    ClerkConfig {
        attempt_timeout: 100 * MS,
        op_timeout: Some(1000 * MS),
        backoff_min: 10 * MS,
        backoff_max: 80 * MS,
    }
}

fn clerk() -> Clerk {
    Clerk::new(77, vec![1, 2, 3], config(), 5)
}

fn put() -> Op {
    Op::Put {
        key: "k".into(),
        value: "v".into(),
    }
}

fn expect_send(step: Step) -> Send {
    match step {
        Step::Send(send) => send,
        other => panic!("expected a send, got {other:?}"),
    }
}

#[test]
fn sequence_numbers_increase_and_retries_reuse_them() {
    let mut clerk = clerk();
    let first = clerk.begin(put(), Duration::ZERO).unwrap();
    assert_eq!(
        (first.request.client_id, first.request.seq, first.attempt),
        (77, 1, 1)
    );
    assert_eq!(first.timeout_at, 100 * MS);
    let retry = expect_send(clerk.on_timeout(1, 1, 100 * MS));
    assert_eq!((retry.request.seq, retry.attempt), (1, 2));
    assert_eq!(retry.to, 2);
    let done = clerk.on_response(1, 2, 2, KvResponse::Ok(OpResult::Done), 120 * MS);
    assert_eq!(done, Step::Done(Outcome::Ok(OpResult::Done)));
    let second = clerk.begin(put(), 130 * MS).unwrap();
    assert_eq!(second.request.seq, 2);
    // The clerk remembers who answered.
    assert_eq!(second.to, 2);
}

#[test]
fn one_operation_at_a_time() {
    let mut clerk = clerk();
    clerk.begin(put(), Duration::ZERO).unwrap();
    assert_eq!(
        clerk.begin(put(), Duration::ZERO),
        Err(ClerkBusy { seq: 1 })
    );
}

#[test]
fn follows_leader_hint() {
    let mut clerk = clerk();
    let first = clerk.begin(put(), Duration::ZERO).unwrap();
    assert_eq!(first.to, 1);
    let step = clerk.on_response(
        1,
        1,
        1,
        KvResponse::WrongLeader {
            leader_hint: Some(3),
        },
        MS,
    );
    let send = expect_send(step);
    assert_eq!(send.to, 3);
    assert_eq!(send.send_at, MS, "a hint is followed at once");
    assert_eq!(clerk.counters().redirects, 1);
}

#[test]
fn hint_outside_the_server_list_falls_back_to_round_robin() {
    let mut clerk = clerk();
    clerk.begin(put(), Duration::ZERO).unwrap();
    let step = clerk.on_response(
        1,
        1,
        1,
        KvResponse::WrongLeader {
            leader_hint: Some(9),
        },
        MS,
    );
    assert_eq!(expect_send(step).to, 2);
}

#[test]
fn backs_off_after_a_full_round_of_refusals() {
    let mut clerk = clerk();
    clerk.begin(put(), Duration::ZERO).unwrap();
    let refusal = KvResponse::WrongLeader { leader_hint: None };
    let second = expect_send(clerk.on_response(1, 1, 1, refusal.clone(), MS));
    let third = expect_send(clerk.on_response(1, 2, 2, refusal.clone(), 2 * MS));
    assert_eq!((second.send_at, third.send_at), (MS, 2 * MS));
    let fourth = expect_send(clerk.on_response(1, 3, 3, refusal, 3 * MS));
    assert_eq!(fourth.to, 1);
    // Backoff of 10 ms: half fixed, half jitter.
    assert!(
        fourth.send_at >= 3 * MS + 5 * MS,
        "send_at {:?}",
        fourth.send_at
    );
    assert!(
        fourth.send_at <= 3 * MS + 10 * MS,
        "send_at {:?}",
        fourth.send_at
    );
}

#[test]
fn gives_up_as_fail_when_every_attempt_was_refused() {
    let mut clerk = clerk();
    clerk.begin(put(), Duration::ZERO).unwrap();
    let mut now = Duration::ZERO;
    let mut attempt = 1;
    let mut from = 1;
    loop {
        now += 50 * MS;
        match clerk.on_response(
            1,
            attempt,
            from,
            KvResponse::WrongLeader { leader_hint: None },
            now,
        ) {
            Step::Send(send) => {
                attempt = send.attempt;
                from = send.to;
                now = now.max(send.send_at);
            }
            Step::Done(outcome) => {
                assert_eq!(outcome, Outcome::Fail(FailReason::GaveUp));
                break;
            }
            Step::Ignored => panic!("current attempt ignored"),
        }
        assert!(now < 2000 * MS, "never gave up");
    }
}

#[test]
fn gives_up_as_unknown_after_a_timeout_never_as_fail() {
    let mut clerk = clerk();
    clerk.begin(put(), Duration::ZERO).unwrap();
    // Attempt 1 timed out: it may have been applied.
    let send = expect_send(clerk.on_timeout(1, 1, 100 * MS));
    let mut attempt = send.attempt;
    let mut from = send.to;
    let mut now = 100 * MS;
    loop {
        now += 50 * MS;
        match clerk.on_response(
            1,
            attempt,
            from,
            KvResponse::WrongLeader { leader_hint: None },
            now,
        ) {
            Step::Send(send) => {
                attempt = send.attempt;
                from = send.to;
                now = now.max(send.send_at);
            }
            Step::Done(outcome) => {
                assert_eq!(outcome, Outcome::Unknown(UnknownReason::GaveUp));
                break;
            }
            Step::Ignored => panic!("current attempt ignored"),
        }
        assert!(now < 2000 * MS, "never gave up");
    }
}

#[test]
fn leadership_lost_makes_the_outcome_indefinite() {
    let mut clerk = Clerk::new(
        1,
        vec![1],
        ClerkConfig {
            op_timeout: Some(150 * MS),
            ..config()
        },
        0,
    );
    clerk.begin(put(), Duration::ZERO).unwrap();
    let send = expect_send(clerk.on_response(
        1,
        1,
        1,
        KvResponse::LeadershipLost { leader_hint: None },
        MS,
    ));
    assert_eq!(
        clerk.on_timeout(1, send.attempt, 150 * MS),
        Step::Done(Outcome::Unknown(UnknownReason::GaveUp))
    );
}

#[test]
fn attempt_timeouts_never_pass_the_operation_deadline() {
    let mut clerk = clerk();
    let send = clerk.begin(put(), 950 * MS).unwrap();
    assert_eq!(send.timeout_at, 1050 * MS);
    let mut clerk = Clerk::new(
        1,
        vec![1],
        ClerkConfig {
            op_timeout: Some(30 * MS),
            ..config()
        },
        0,
    );
    assert_eq!(
        clerk.begin(put(), Duration::ZERO).unwrap().timeout_at,
        30 * MS
    );
}

#[test]
fn cas_mismatch_is_fail_and_cas_success_is_ok() {
    let mut clerk = clerk();
    let cas = Op::Cas {
        key: "k".into(),
        expected: "a".into(),
        new: "b".into(),
    };
    clerk.begin(cas.clone(), Duration::ZERO).unwrap();
    assert_eq!(
        clerk.on_response(
            1,
            1,
            1,
            KvResponse::Ok(OpResult::Cas { swapped: false }),
            MS
        ),
        Step::Done(Outcome::Fail(FailReason::CasMismatch))
    );
    clerk.begin(cas, Duration::ZERO).unwrap();
    assert_eq!(
        clerk.on_response(2, 1, 1, KvResponse::Ok(OpResult::Cas { swapped: true }), MS),
        Step::Done(Outcome::Ok(OpResult::Cas { swapped: true }))
    );
}

#[test]
fn late_answer_from_an_earlier_attempt_completes_the_operation() {
    let mut clerk = clerk();
    clerk.begin(put(), Duration::ZERO).unwrap();
    expect_send(clerk.on_timeout(1, 1, 100 * MS));
    // Attempt 1's reply arrives after all; same seq, so it is the answer.
    assert_eq!(
        clerk.on_response(1, 1, 1, KvResponse::Ok(OpResult::Done), 110 * MS),
        Step::Done(Outcome::Ok(OpResult::Done))
    );
}

#[test]
fn stale_inputs_are_ignored() {
    let mut clerk = clerk();
    clerk.begin(put(), Duration::ZERO).unwrap();
    expect_send(clerk.on_timeout(1, 1, 100 * MS));
    // A refusal of the replaced attempt, a timeout of it, and anything about another seq.
    assert_eq!(
        clerk.on_response(
            1,
            1,
            1,
            KvResponse::WrongLeader { leader_hint: None },
            101 * MS
        ),
        Step::Ignored
    );
    assert_eq!(clerk.on_timeout(1, 1, 102 * MS), Step::Ignored);
    assert_eq!(
        clerk.on_response(7, 2, 2, KvResponse::Ok(OpResult::Done), 103 * MS),
        Step::Ignored
    );
    assert!(clerk.in_flight().is_some());
}

#[test]
fn no_deadline_retries_forever() {
    let mut clerk = Clerk::new(
        1,
        vec![1, 2],
        ClerkConfig {
            op_timeout: None,
            ..config()
        },
        3,
    );
    clerk.begin(put(), Duration::ZERO).unwrap();
    let mut attempt = 1;
    let mut now = Duration::ZERO;
    for _ in 0..1000 {
        now += 100 * MS;
        let send = expect_send(clerk.on_timeout(1, attempt, now));
        assert!(
            send.send_at - now <= 80 * MS,
            "backoff capped at backoff_max"
        );
        attempt = send.attempt;
    }
}

#[test]
fn begin_at_asks_the_chosen_server_first_then_follows_hints() {
    let mut clerk = clerk();
    let first = clerk
        .begin_at(Op::Get { key: "k".into() }, Some(3), Duration::ZERO)
        .unwrap();
    assert_eq!(first.to, 3);
    let step = clerk.on_response(
        first.request.seq,
        first.attempt,
        3,
        KvResponse::WrongLeader {
            leader_hint: Some(2),
        },
        MS,
    );
    assert_eq!(expect_send(step).to, 2);
    // An id that is not a server falls back to the presumed leader.
    let mut clerk = Clerk::new(77, vec![1, 2, 3], config(), 5);
    let send = clerk.begin_at(put(), Some(42), Duration::ZERO).unwrap();
    assert_eq!(send.to, 1);
}
