//! What a CreditDetail `RtnValue` says happened to the money: the whole answer (seed 003:
//! `Amount`, `ClsAmt`, `Status` in both of its tables, every `CloseData` row's `Status`,
//! `Amount` and `DateTime`), read into one domain [`Outcome`]. The mapping table, with the
//! seed's words, is in `docs/PROTOCOLS.md` ("ECPay CreditDetail → ledger state").
//!
//! The documents leave open how a refund shows (docs/PROTOCOLS.md §E3.1: "How refunds show up in `ClsAmt`
//! and `CloseData` is UNCONFIRMED"), so the rules take `ClsAmt` (已關帳金額, the amount
//! captured) as the money kept, `CloseData` as how the rest went (a negative row: money given
//! back; a 已取消/操作取消 row: a capture undone), and call an answer whose parts do not fit
//! together *disputed*: [`Outcome::Unrecognised`] with the figure that differs, so the state
//! machine keeps the state and records an amount discrepancy instead of guessing.

use serde_json::{Map, Value};

use super::fields;
use crate::domain::Outcome;

/// The documented `Status` values, Chinese and English alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardStatus {
    Authorized,
    ToBeCaptured,
    Captured,
    Unauthorized,
    Cancelled,
    OperationCancelled,
    Unknown,
}

impl CardStatus {
    pub fn parse(raw: &str) -> Self {
        let words: Vec<String> = raw
            .split(|c: char| c.is_whitespace() || c == '_')
            .filter(|w| !w.is_empty())
            .map(|w| w.to_lowercase().replace("cancelled", "canceled"))
            .collect();
        match words.join(" ").as_str() {
            "已授權" | "authorized" | "authorised" => Self::Authorized,
            "要關帳" | "to be captured" => Self::ToBeCaptured,
            "已關帳" | "captured" => Self::Captured,
            "未授權" | "unauthorized" | "unauthorised" => Self::Unauthorized,
            "已取消" | "canceled" => Self::Cancelled,
            "操作取消" | "operation canceled" => Self::OperationCancelled,
            _ => Self::Unknown,
        }
    }

    fn is_cancel(self) -> bool {
        matches!(self, Self::Cancelled | Self::OperationCancelled)
    }
}

/// One `CloseData` row.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CloseRow {
    status: CardStatus,
    amount: i64,
    /// ECPay's `yyyy/MM/dd HH:mm:ss` sorts as text; rows without one sort first.
    at: String,
}

/// The parts of an answer the mapping reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardTrade {
    pub status: CardStatus,
    pub amount: Option<i64>,
    pub cls_amt: Option<i64>,
    /// Oldest first: by `DateTime`, ties by position.
    rows: Vec<CloseRow>,
    /// Some row has no `DateTime`: with more than one row their order is not known, and a
    /// verdict that depends on it would be a guess.
    undated: bool,
}

/// `CloseData` sits in `RtnValue` in the official table and beside it in the seed's example.
fn close_rows<'a>(data: &'a Map<String, Value>, rtn: &'a Map<String, Value>) -> &'a [Value] {
    fields::field(rtn, "CloseData")
        .or_else(|| fields::field(data, "CloseData"))
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// The mapping's verdict: an outcome, and the amount to report beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub outcome: Outcome,
    /// The order `Amount`, except for a disputed answer: the figure that differs from it.
    pub amount: Option<i64>,
}

impl CardTrade {
    /// Reads `RtnValue` (and `CloseData` beside it). A row without a readable `Status` or
    /// `Amount` is kept as an unknown row, which makes any money verdict disputed.
    pub fn read(data: &Map<String, Value>, rtn: &Map<String, Value>) -> Self {
        let mut rows: Vec<(String, usize, CloseRow)> = close_rows(data, rtn)
            .iter()
            .enumerate()
            .map(|(i, row)| {
                let row = row.as_object();
                let field = |name| row.and_then(|r| fields::text(r, name));
                let amount = row.and_then(|r| fields::integer(r, "Amount"));
                let status = field("Status").map_or(CardStatus::Unknown, |s| CardStatus::parse(&s));
                let at = field("DateTime").unwrap_or_default();
                let row = CloseRow {
                    status: if amount.is_some() {
                        status
                    } else {
                        CardStatus::Unknown
                    },
                    amount: amount.unwrap_or_default(),
                    at: at.clone(),
                };
                (at, i, row)
            })
            .collect();
        let undated = rows.iter().any(|(at, ..)| at.is_empty());
        rows.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        Self {
            undated,
            status: CardStatus::parse(&fields::text(rtn, "Status").unwrap_or_default()),
            amount: fields::integer(rtn, "Amount"),
            cls_amt: fields::integer(rtn, "ClsAmt"),
            rows: rows.into_iter().map(|(.., r)| r).collect(),
        }
    }

    fn verdict(&self, outcome: Outcome) -> Verdict {
        Verdict {
            outcome,
            amount: self.amount,
        }
    }

    /// Neither the state nor the money is certain: keep the state, report the figure that
    /// differs from `Amount` so the state machine records an amount discrepancy.
    fn disputed(&self) -> Verdict {
        let differs = [self.cls_amt, self.rows_kept()]
            .into_iter()
            .flatten()
            .find(|&a| Some(a) != self.amount);
        Verdict {
            outcome: Outcome::Unrecognised,
            amount: differs.or(self.amount),
        }
    }

    /// What the rows say was kept, walking them oldest first: captures and (negative) refunds
    /// add up, a cancelled row undoes what was closed before it, up to its amount. `None`
    /// without rows.
    fn rows_kept(&self) -> Option<i64> {
        (!self.rows.is_empty()).then(|| {
            self.rows
                .iter()
                .fold(0i64, |kept, r| {
                    if r.status.is_cancel() {
                        (kept - r.amount.abs()).max(0)
                    } else {
                        kept + r.amount
                    }
                })
                .max(0)
        })
    }

    /// The ledger outcome of this answer; the table in `docs/PROTOCOLS.md`.
    pub fn outcome(&self) -> Verdict {
        let rows = &self.rows;
        if self.status == CardStatus::Unknown
            || rows.iter().any(|r| r.status == CardStatus::Unknown)
            || (self.undated && rows.len() > 1)
        {
            return self.disputed();
        }
        let refund_row = rows.iter().any(|r| r.amount < 0 && !r.status.is_cancel());
        let latest_cancel = rows.last().is_some_and(|r| r.status.is_cancel());
        // The money kept: `ClsAmt`, or what the rows say when it is missing.
        let kept = self.cls_amt.or_else(|| self.rows_kept());
        let Some(amount) = self.amount else {
            // Without the order amount nothing about the money can be compared: only the
            // plain, row-less statuses are taken at their word.
            return match (self.status, kept.unwrap_or(0), rows.is_empty()) {
                (CardStatus::Authorized | CardStatus::ToBeCaptured, 0, true) => {
                    self.verdict(Outcome::Succeeded)
                }
                (CardStatus::Cancelled, 0, true) => self.verdict(Outcome::Cancelled),
                (CardStatus::Unauthorized, 0, true) => self.verdict(Outcome::Unauthorized),
                _ => self.disputed(),
            };
        };
        let kept = kept.unwrap_or(0);
        if kept < 0 || kept > amount {
            return self.disputed();
        }
        // `ClsAmt` and the rows must tell the same story. The one known exception: a full
        // capture still in flight (要關帳 row, nothing closed yet).
        if let (Some(cls), Some(by_rows)) = (self.cls_amt, self.rows_kept())
            && cls != by_rows
            && !(self.status == CardStatus::ToBeCaptured && cls == 0 && by_rows == amount)
        {
            return self.disputed();
        }
        // 已授權 and 已取消 come without close detail (seed 003): money closed under them is a
        // contradiction.
        if matches!(self.status, CardStatus::Authorized | CardStatus::Cancelled)
            && self.cls_amt.is_some_and(|c| c != 0)
        {
            return self.disputed();
        }
        match self.status {
            // Not authorized (yet), yet money closed: the parts contradict each other.
            CardStatus::Unauthorized if kept == 0 && rows.is_empty() => {
                self.verdict(Outcome::Unauthorized)
            }
            CardStatus::Unauthorized | CardStatus::Unknown => self.disputed(),
            _ if kept == amount && amount > 0 => {
                if refund_row || latest_cancel || self.status.is_cancel() {
                    // All of it captured, but the rows or the status say it went back.
                    self.disputed()
                } else {
                    self.verdict(Outcome::Succeeded)
                }
            }
            _ if kept > 0 => self.verdict(Outcome::PartiallyRefunded),
            // Nothing kept from here on.
            _ if refund_row => self.verdict(Outcome::Refunded),
            // The rows say a capture stands, `ClsAmt` says nothing was closed: only a capture
            // still in flight (要關帳) explains that.
            CardStatus::ToBeCaptured if !latest_cancel => self.verdict(Outcome::Succeeded),
            _ if self.rows_kept().unwrap_or(0) > 0 => self.disputed(),
            // The authorization was given up (放棄): nothing was or will be taken.
            CardStatus::Cancelled => self.verdict(Outcome::Cancelled),
            // Authorized and not (or no longer) captured — 操作取消 is a capture undone, which
            // puts the order back to authorized (docs/PROTOCOLS.md §E5: DoAction `E` reverts a close; only
            // `N` gives the authorization up): the money is held for the merchant, and the
            // order stays watched for a new capture or a release.
            CardStatus::Authorized | CardStatus::OperationCancelled => {
                self.verdict(Outcome::Succeeded)
            }
            // 已關帳 with nothing closed, or a capture undone while the status still says
            // captured: not certain.
            _ => self.disputed(),
        }
    }
}
