//! The ledger's gauges in the Prometheus text format, written afresh at every scrape from
//! [`crate::ledger::LedgerGauges`]. They are not kept in the recorder: a recorder's gauge keeps
//! its last value for as long as the process lives, so an account removed from the ledger, or
//! a lease released, would go on showing what it last was.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use crate::domain::PaymentState;
use crate::ledger::LedgerGauges;

use super::{ACCOUNT_PAUSED, DISCREPANCIES_OPEN, LANE_HEARTBEAT_AGE, OLDEST_OPEN_AGE};
use super::{PAYMENTS, PAYMENTS_DUE};

/// One gauge family: its HELP and TYPE lines, then one line per series.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &'static str, help: &str) -> Self {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        Self { out, name }
    }

    fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        let _ = writeln!(self.out, "{}{{{}}} {value}", self.name, labels.join(","));
    }
}

/// A label value as the text format wants it: backslash, double quote and newline escaped.
fn escape(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn age_seconds(now: DateTime<Utc>, since: DateTime<Utc>) -> f64 {
    (now - since).num_milliseconds().max(0) as f64 / 1000.0
}

/// Appends the ledger's gauges at `now` to `out`.
pub(super) fn write(out: &mut String, g: &LedgerGauges, now: DateTime<Utc>) {
    let mut f = Family::new(
        out,
        PAYMENTS,
        "Payments in the ledger per account and state (every state of an account the ledger knows, 0 when none).",
    );
    let mut accounts: Vec<&str> = g.payments.iter().map(|(a, _, _)| a.as_str()).collect();
    accounts.dedup();
    for account in accounts {
        for state in PaymentState::ALL {
            let n = g
                .payments
                .iter()
                .find(|(a, s, _)| a == account && s == state.as_str())
                .map_or(0, |(_, _, n)| *n);
            f.sample(&[("account", account), ("state", state.as_str())], n as f64);
        }
    }

    let mut f = Family::new(
        out,
        OLDEST_OPEN_AGE,
        "Age in seconds of the account's oldest open (pending, in_progress, reversing) payment, by its creation time; absent when none is open.",
    );
    for (account, created) in &g.oldest_open {
        f.sample(&[("account", account)], age_seconds(now, *created));
    }

    let mut f = Family::new(
        out,
        DISCREPANCIES_OPEN,
        "Open (unresolved) discrepancies per account and kind.",
    );
    for (account, kind, n) in &g.open_discrepancies {
        f.sample(&[("account", account), ("kind", kind)], *n as f64);
    }

    let mut f = Family::new(
        out,
        PAYMENTS_DUE,
        "Payments of the account whose next check is due now (the lane's backlog).",
    );
    for lane in &g.lanes {
        f.sample(&[("account", &lane.account)], lane.due as f64);
    }

    let mut f = Family::new(
        out,
        ACCOUNT_PAUSED,
        "1 while the account is paused after an account error or a rate limit (account_pauses), else 0.",
    );
    for lane in &g.lanes {
        let paused = lane.paused_until.is_some();
        f.sample(&[("account", &lane.account)], f64::from(u8::from(paused)));
    }

    let mut f = Family::new(
        out,
        LANE_HEARTBEAT_AGE,
        "Seconds since the last heartbeat of the account's live lease; absent when no process holds the account.",
    );
    for lane in &g.lanes {
        // Counted by the ledger on the clock leases are timed on: this host's may be off.
        if let Some(ms) = lane.heartbeat_age_ms {
            f.sample(&[("account", &lane.account)], ms as f64 / 1000.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::LaneRow;

    fn lane(account: &str, holder: Option<&str>, paused: bool) -> LaneRow {
        LaneRow {
            account: account.into(),
            provider: Some("qfpay".into()),
            holder: holder.map(Into::into),
            token: 1,
            heartbeat_at: Some("2026-11-10T02:00:00.000Z".into()),
            expires_at: Some("2026-11-10T02:01:00.000Z".into()),
            pace_per_minute: Some(400),
            due: 7,
            paused_until: paused.then(|| "2026-11-10T02:15:00.000Z".into()),
            heartbeat_age_ms: holder.map(|_| 12_500),
        }
    }

    #[test]
    fn every_state_of_a_known_account_is_written_and_only_held_lanes_have_a_heartbeat_age() {
        let now = crate::ledger::time::from_db("2026-11-10T02:00:12.500Z").unwrap();
        let g = LedgerGauges {
            payments: vec![
                ("hk".into(), "pending".into(), 3),
                ("hk".into(), "succeeded".into(), 0),
                ("tw".into(), "needs_review".into(), 1),
            ],
            open_discrepancies: vec![("hk".into(), "amount_mismatch".into(), 2)],
            oldest_open: vec![(
                "hk".into(),
                crate::ledger::time::from_db("2026-11-10T01:59:00.000Z").unwrap(),
            )],
            lanes: vec![lane("hk", Some("host:1:ab"), true), lane("tw", None, false)],
        };
        let mut out = String::new();
        write(&mut out, &g, now);
        let lines: Vec<&str> = out.lines().collect();
        for want in [
            r#"payrecon_payments{account="hk",state="pending"} 3"#,
            r#"payrecon_payments{account="hk",state="needs_review"} 0"#,
            r#"payrecon_payments{account="tw",state="needs_review"} 1"#,
            r#"payrecon_oldest_open_payment_age_seconds{account="hk"} 72.5"#,
            r#"payrecon_discrepancies_open{account="hk",kind="amount_mismatch"} 2"#,
            r#"payrecon_payments_due{account="tw"} 7"#,
            r#"payrecon_account_paused{account="hk"} 1"#,
            r#"payrecon_account_paused{account="tw"} 0"#,
            r#"payrecon_lane_heartbeat_age_seconds{account="hk"} 12.5"#,
            "# TYPE payrecon_lane_heartbeat_age_seconds gauge",
        ] {
            assert!(lines.contains(&want), "{want} missing from\n{out}");
        }
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.starts_with("payrecon_payments{"))
                .count(),
            2 * PaymentState::ALL.len()
        );
        assert!(!out.contains(r#"heartbeat_age_seconds{account="tw"}"#));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), r#"a\"b\\c\nd"#);
    }
}
