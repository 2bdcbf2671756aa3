//! Property tests of the state machine (issue 8 item 4): whatever a gateway says, in whatever
//! order, a final state never becomes open again, an unrecognised answer never fails a payment,
//! and a call that produced no answer (transport faults are not observations, so `decide` never
//! sees them) leaves the payment exactly as it was, only scheduled again.

use chrono::{TimeZone, Utc};
use payrecon::domain::{
    AccountName, Currency, DiscrepancyKind, LedgerView, Observation, OutTradeNo, Outcome,
    PaymentId, PaymentState, Provider, RecordKind, RetrySchedule, decide,
};
use payrecon::gateway::GatewayError;
use payrecon::ledger::Claimed;
use payrecon::reconcile::update::{from_call_error, from_observation};
use proptest::prelude::*;

fn state() -> impl Strategy<Value = PaymentState> {
    proptest::sample::select(PaymentState::ALL.to_vec())
}

fn observation() -> impl Strategy<Value = Observation> {
    (
        proptest::sample::select(Outcome::ALL.to_vec()),
        any::<bool>(),
        proptest::option::of(1i64..100_000),
        proptest::option::of(proptest::sample::select(vec!["HKD", "TWD", "USD"])),
        "[0-9A-Za-z_]{0,8}",
    )
        .prop_map(|(outcome, refund, amount, currency, code)| {
            let kind = if refund {
                RecordKind::Refund
            } else {
                RecordKind::Payment
            };
            let mut o = Observation::new(kind, outcome, code);
            o.amount_minor = amount;
            o.currency = currency.map(|c| Currency::parse(c).unwrap());
            o
        })
}

fn view(state: PaymentState) -> LedgerView {
    LedgerView {
        state,
        amount_minor: 1_000,
        currency: Currency::parse("HKD").unwrap(),
    }
}

fn error() -> impl Strategy<Value = (u8, String, u16)> {
    (0u8..7, "[ -~]{0,30}", 100u16..600)
}

fn make_error((which, text, status): (u8, String, u16)) -> GatewayError {
    match which {
        0 => GatewayError::Transport {
            gateway: "qfpay",
            detail: text,
            timed_out: status % 2 == 0,
        },
        1 => GatewayError::HttpStatus {
            gateway: "ecpay",
            status,
        },
        2 => GatewayError::RateLimited {
            gateway: "qfpay",
            status: 429,
            retry_after: None,
        },
        3 => GatewayError::BadSignature { gateway: "qfpay" },
        4 => GatewayError::Malformed {
            gateway: "ecpay",
            detail: text,
        },
        5 => GatewayError::Account {
            gateway: "qfpay",
            code: text,
            detail: String::new(),
        },
        _ => GatewayError::Rejected {
            gateway: "qfpay",
            code: text,
            detail: String::new(),
        },
    }
}

fn claimed(state: PaymentState, provider: Provider) -> Claimed {
    let t = Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap();
    Claimed {
        id: PaymentId(1),
        account: AccountName::parse("hk").unwrap(),
        provider,
        kind: RecordKind::Payment,
        out_trade_no: OutTradeNo::parse("O1", provider).unwrap(),
        provider_ref: None,
        pay_type: None,
        amount_minor: 1_000,
        currency: Currency::parse("HKD").unwrap(),
        state,
        attempts: 3,
        retry_reason: None,
        retry_repeats: 0,
        created_at: t,
        registered_at: t,
        in_progress_since: None,
        expires_at: None,
        reversal_requested_at: None,
        notified_at: None,
        nudged_at: None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn a_final_state_never_becomes_open(s in state(), obs in observation()) {
        let d = decide(view(s), &obs);
        if s.is_final() {
            prop_assert!(d.next.is_final(), "{s} + {:?} -> {}", obs.outcome, d.next);
        }
        // Open next states say why to check again; final ones are never checked again.
        prop_assert_eq!(d.retry.is_some(), !d.next.is_final(), "{} + {:?} -> {}", s, obs.outcome, d.next);
    }

    #[test]
    fn any_sequence_of_answers_keeps_final_states_final(start in state(), answers in proptest::collection::vec(observation(), 1..30)) {
        let mut s = start;
        let mut was_final = s.is_final();
        for obs in &answers {
            s = decide(view(s), obs).next;
            prop_assert!(!was_final || s.is_final(), "reopened to {s}");
            was_final |= s.is_final();
        }
    }

    #[test]
    fn an_unclassifiable_answer_never_fails_or_cancels_a_payment(s in state(), code in "[ -~]{0,10}") {
        for outcome in [Outcome::Unrecognised, Outcome::NotFound, Outcome::InProgress] {
            let d = decide(view(s), &Observation::new(RecordKind::Payment, outcome, code.clone()));
            if !s.is_final() {
                prop_assert!(
                    !matches!(d.next, PaymentState::Failed | PaymentState::Cancelled | PaymentState::Reversed),
                    "{s} + {outcome:?} -> {}", d.next
                );
            }
        }
    }

    #[test]
    fn a_different_gateway_amount_is_always_reported(s in state(), amount in 1i64..100_000) {
        let mut obs = Observation::new(RecordKind::Payment, Outcome::Succeeded, "0000");
        obs.amount_minor = Some(amount);
        let d = decide(view(s), &obs);
        prop_assert_eq!(d.discrepancies.contains(&DiscrepancyKind::AmountMismatch), amount != 1_000);
    }

    #[test]
    fn a_failed_call_keeps_the_state_and_only_reschedules(s in state(), e in error(), ecpay in any::<bool>(), jitter in 0.0f64..1.0) {
        let provider = if ecpay { Provider::Ecpay } else { Provider::Qfpay };
        let c = claimed(s, provider);
        let now = c.created_at + chrono::Duration::minutes(30);
        let u = from_call_error(&c, &make_error(e), &RetrySchedule::default_for(provider), now, jitter);
        prop_assert_eq!(u.state, s);
        prop_assert!(!u.checked);
        prop_assert!(u.provider_code.is_none() && u.provider_ref.is_none() && u.discrepancies.is_empty());
        prop_assert!(u.next_check_at.is_some_and(|t| t > now));
        prop_assert!(u.events.iter().all(|ev| ev.from_state == Some(s) && ev.to_state == Some(s)));
    }

    #[test]
    fn an_observation_update_agrees_with_decide(s in state(), obs in observation(), jitter in 0.0f64..1.0) {
        let c = claimed(s, Provider::Qfpay);
        let u = from_observation(&c, &obs, &RetrySchedule::default_for(Provider::Qfpay), c.created_at, jitter);
        let d = decide(view(s), &obs);
        // One deliberate difference: right after a reversal, a record that still says paid is
        // read again before it is believed (`update::PAID_READS_TO_CONCLUDE`).
        let expected = if s == PaymentState::Reversing && obs.outcome == Outcome::Succeeded {
            PaymentState::Reversing
        } else {
            d.next
        };
        prop_assert_eq!(u.state, expected);
        prop_assert_eq!(u.next_check_at.is_none(), expected.is_final());
        prop_assert!(u.checked);
    }
}
