//! Reconciliation sweeps of closed QFPay windows (architecture.md §4, "Sweeps"): walk every
//! record of a past window page by page, with a cursor saved after each page so a crash
//! resumes where it stopped; confirm ledger payments; report gateway records the ledger does
//! not know (`missing_in_ledger`) and ledger payments the gateway never had
//! (`missing_at_gateway`).
//!
//! A sweep changes no payment state itself: an open payment it finds is made due, so the next
//! pass settles it under a lease like any other; a final payment the gateway contradicts is a
//! discrepancy for a person (the pass would follow the gateway only if it were still open).

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::accounts::Gateway;
use super::plan;
use super::{ReconcileError, Reconciler};
use crate::domain::{
    Currency, DiscrepancyKind, LedgerView, Observation, PaymentState, RecordKind, decide,
};
use crate::gateway::qfpay::WindowQuery;
use crate::ledger::{KnownPayment, NewDiscrepancy, SweepCursor};

/// Payments created this close to a window's edge may have a `sysdtm` on the other side of it,
/// so they are not reported missing.
const EDGE: chrono::Duration = chrono::Duration::minutes(15);

#[derive(Debug, Clone, Default, Serialize)]
pub struct SweepReport {
    pub records: u64,
    pub matched: u64,
    pub made_due: u64,
    pub missing_in_ledger: Vec<String>,
    pub missing_at_gateway: Vec<String>,
    pub contradictions: Vec<String>,
    pub calls: u64,
    pub resumed_pieces: u64,
    pub already_complete_pieces: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("{0:?} is not a configured QFPay account")]
    NotQfpay(String),
    #[error("the window must be closed: --to {0} is in the future")]
    Open(DateTime<Utc>),
    #[error("--from must be before --to")]
    Empty,
    #[error("sweep stopped on a gateway error (resume by running it again): {0}")]
    Gateway(#[from] crate::gateway::GatewayError),
    #[error(transparent)]
    Engine(#[from] ReconcileError),
}

impl From<crate::ledger::LedgerError> for SweepError {
    fn from(e: crate::ledger::LedgerError) -> Self {
        SweepError::Engine(e.into())
    }
}

/// Splits `[from, to)` at calendar months (account time): one cursor per piece.
fn month_pieces(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    tz: chrono::FixedOffset,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let mut out = Vec::new();
    let mut start = from;
    while start < to {
        let (_, next) = plan::month_bounds(start, tz);
        let end = next.min(to);
        out.push((start, end));
        start = end;
    }
    out
}

/// How long after a window closes before the scheduled sweep reads it (late records settle).
const SETTLE: chrono::Duration = chrono::Duration::hours(1);
/// The longest window one scheduled sweep reads; a long backlog is caught up a day per run.
const MAX_WINDOW: chrono::Duration = chrono::Duration::days(1);

fn floor_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::{DurationRound, TimeDelta};
    t.duration_trunc(TimeDelta::hours(1)).unwrap_or(t)
}

impl Reconciler {
    /// The scheduled sweep: for each QFPay account, the next closed window after the last
    /// completed one (the last day on the first run), chained by the saved cursors.
    pub async fn sweep_closed_windows(&self, now: DateTime<Utc>) {
        let closed_until = floor_hour(now - SETTLE);
        for rt in &self.accounts {
            if !matches!(rt.gateway, Gateway::Qfpay { .. }) {
                continue;
            }
            let account = rt.name.as_str();
            let last = match self.ledger.last_swept_until(account).await {
                Ok(last) => last.and_then(|s| crate::ledger::time::from_db(&s)),
                Err(e) => {
                    tracing::warn!(account, error = %e, "cannot read sweep cursors");
                    continue;
                }
            };
            let from = last.unwrap_or(closed_until - MAX_WINDOW);
            let to = (from + MAX_WINDOW).min(closed_until);
            if from >= to {
                continue;
            }
            if let Err(e) = self.sweep(account, from, to).await {
                tracing::warn!(account, error = %e, "scheduled sweep failed; it resumes at the next tick");
            }
        }
    }

    /// Sweeps `[from, to)` of a QFPay account. Running it again resumes an interrupted sweep
    /// and skips completed month pieces.
    pub async fn sweep(
        &self,
        account: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<SweepReport, SweepError> {
        let now = Utc::now();
        if to > now {
            return Err(SweepError::Open(to));
        }
        if from >= to {
            return Err(SweepError::Empty);
        }
        let Some(Gateway::Qfpay {
            client,
            account: cfg,
        }) = self
            .accounts
            .iter()
            .find(|r| r.name.as_str() == account)
            .map(|r| &r.gateway)
        else {
            return Err(SweepError::NotQfpay(account.to_string()));
        };
        let mut report = SweepReport::default();
        for (start, end) in month_pieces(from, to, cfg.timezone) {
            let cursor = self.ledger.sweep_cursor(account, start, end).await?;
            if cursor.is_some_and(|c| c.completed) {
                report.already_complete_pieces += 1;
                continue;
            }
            let mut cursor = cursor.unwrap_or(SweepCursor {
                next_page: 1,
                records_seen: 0,
                completed: false,
            });
            report.resumed_pieces += u64::from(cursor.next_page > 1);
            let mut pager = client
                .sweep(WindowQuery::new(start, end))
                .resume_at(0, cursor.next_page);
            // The ids of ledger payments the gateway showed, to find the missing ones at the end.
            // A resumed sweep re-reads nothing, so it reports missing payments only when it ran
            // from page 1.
            let mut seen: HashSet<i64> = HashSet::new();
            let complete_run = cursor.next_page == 1;
            loop {
                report.calls += 1;
                let Some(page) = pager.next_page().await? else {
                    report.calls -= 1;
                    break;
                };
                report.records += page.observations.len() as u64;
                self.sweep_page(account, &page.observations, &mut seen, &mut report)
                    .await?;
                cursor.next_page = page.page + 1;
                cursor.records_seen += page.observations.len() as u64;
                self.ledger
                    .save_sweep_cursor(account, start, end, cursor, Utc::now())
                    .await?;
            }
            cursor.completed = true;
            self.ledger
                .save_sweep_cursor(account, start, end, cursor, Utc::now())
                .await?;
            if complete_run {
                for (id, out_trade_no) in self
                    .ledger
                    .payments_created_in(account, start + EDGE, end - EDGE)
                    .await?
                {
                    if !seen.contains(&id) {
                        self.report_once(account, Some(id), DiscrepancyKind::MissingAtGateway,
                            format!("out_trade_no {out_trade_no}: no gateway record in the closed window {start} – {end}"),
                            &out_trade_no, serde_json::json!({}), &mut report.missing_at_gateway).await?;
                    }
                }
            }
        }
        tracing::info!(
            account,
            records = report.records,
            calls = report.calls,
            missing_in_ledger = report.missing_in_ledger.len(),
            missing_at_gateway = report.missing_at_gateway.len(),
            "sweep finished"
        );
        Ok(report)
    }

    async fn sweep_page(
        &self,
        account: &str,
        observations: &[Observation],
        seen: &mut HashSet<i64>,
        report: &mut SweepReport,
    ) -> Result<(), SweepError> {
        let refs: Vec<&str> = observations
            .iter()
            .filter_map(|o| o.provider_ref.as_ref().map(|r| r.as_str()))
            .collect();
        let orders: Vec<&str> = observations
            .iter()
            .filter_map(|o| o.out_trade_no.as_ref().map(|r| r.as_str()))
            .collect();
        let known = self.ledger.known_payments(account, &refs, &orders).await?;
        let find = |o: &Observation| -> Option<&KnownPayment> {
            let kind = o.kind.as_str();
            known
                .iter()
                .find(|k| {
                    k.kind == kind
                        && o.provider_ref
                            .as_ref()
                            .is_some_and(|r| k.provider_ref.as_deref() == Some(r.as_str()))
                })
                .or_else(|| {
                    known.iter().find(|k| {
                        k.kind == kind
                            && o.out_trade_no
                                .as_ref()
                                .is_some_and(|n| n.as_str() == k.out_trade_no)
                    })
                })
        };
        let mut due = Vec::new();
        for o in observations {
            let key = o
                .provider_ref
                .as_ref()
                .map(|r| r.to_string())
                .or_else(|| o.out_trade_no.as_ref().map(|n| n.to_string()))
                .unwrap_or_default();
            let Some(k) = find(o) else {
                if o.kind == RecordKind::Payment {
                    self.report_once(
                        account,
                        None,
                        DiscrepancyKind::MissingInLedger,
                        format!(
                            "syssn {key}: gateway record ({}, {} {}) unknown to the ledger",
                            o.provider_code,
                            o.amount_minor.unwrap_or_default(),
                            o.currency.map(|c| c.to_string()).unwrap_or_default()
                        ),
                        &key,
                        o.evidence.clone(),
                        &mut report.missing_in_ledger,
                    )
                    .await?;
                }
                continue;
            };
            report.matched += 1;
            seen.insert(k.id);
            let state: PaymentState = k.state.parse().unwrap_or(PaymentState::NeedsReview);
            if !state.is_final() {
                due.push(k.id);
                continue;
            }
            let Ok(currency) = Currency::parse(&k.currency) else {
                continue;
            };
            let d = decide(
                LedgerView {
                    state,
                    amount_minor: k.amount,
                    currency,
                },
                o,
            );
            for kind in d.discrepancies {
                let detail = format!(
                    "{} {}: ledger {} {} {}, gateway {} ({})",
                    kind.as_str(),
                    k.out_trade_no,
                    k.state,
                    k.amount,
                    k.currency,
                    o.provider_code,
                    o.amount_minor.unwrap_or_default()
                );
                self.report_once(
                    account,
                    Some(k.id),
                    kind,
                    detail,
                    &format!("{} {}", kind.as_str(), k.out_trade_no),
                    o.evidence.clone(),
                    &mut report.contradictions,
                )
                .await?;
            }
        }
        report.made_due += due.len() as u64;
        self.ledger.make_due(&due, Utc::now()).await?;
        Ok(())
    }

    /// Records a discrepancy unless one of that kind already names `key`.
    #[allow(clippy::too_many_arguments)]
    async fn report_once(
        &self,
        account: &str,
        payment: Option<i64>,
        kind: DiscrepancyKind,
        detail: String,
        key: &str,
        evidence: serde_json::Value,
        list: &mut Vec<String>,
    ) -> Result<(), SweepError> {
        if !self
            .ledger
            .discrepancy_exists(account, payment, kind.as_str(), key)
            .await?
        {
            let d = NewDiscrepancy {
                kind,
                detail: detail.clone(),
                evidence,
            };
            self.ledger
                .record_discrepancy(
                    account,
                    payment.map(crate::domain::PaymentId),
                    &d,
                    Utc::now(),
                )
                .await?;
            list.push(detail);
        }
        Ok(())
    }
}
