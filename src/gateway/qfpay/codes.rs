//! The QFPay `respcd` classification table (docs/PROTOCOLS.md §Q3.2 current codes, §Q3.3 legacy codes) and
//! the mapping of a query record to a domain [`Outcome`].
//!
//! The official rule (§Q3.2) is "0000 success, 1143/1145 in progress, anything else failed".
//! The finer classes below follow the classes of docs/PROTOCOLS.md §Q3.2 so that the caller can tell a
//! payment's failure from a request problem (which says nothing about the payment) and from an
//! account problem (pause the account, alert). A code that is in no table is never success.

use crate::domain::{Outcome, RecordKind};

/// What a `respcd` means for whoever receives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodeClass {
    /// `0000` (class S).
    Success,
    /// Final failure of that transaction or attempt (class F).
    Failure,
    /// In progress or unknown: poll `/trade/v1/query` (class P).
    InProgress,
    /// The request itself failed (system, malformed, duplicate …); says nothing about the
    /// transaction (class R).
    RequestError,
    /// Credentials, device, store or merchant configuration is wrong: the account needs a person
    /// (1108 signature, "F (config)" codes).
    AccountError,
    /// The order is in a state that conflicts with the request; query to learn it (class X).
    OrderStateConflict,
    /// The transaction does not exist (1136, 1268; class X "not found").
    NotFound,
    /// A refund or cancel was refused; the original payment is untouched (class RF).
    CancelRefused,
}

/// Classifies a code. `None` for codes in no table; callers must not treat those as success.
pub fn classify(code: &str) -> Option<CodeClass> {
    use CodeClass::*;
    if code.len() != 4 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u16 = code.parse().ok()?;
    Some(match n {
        // §Q3.2, QFPay 2026 / QFPay 2024.
        0 => Success,
        1100 => RequestError,                 // system under maintenance
        1101 => OrderStateConflict,           // reversal error (old: must actively reverse)
        1102 => RequestError,                 // duplicate request: query by out_trade_no first
        1103 | 1104 => RequestError,          // malformed request / bad parameter
        1105..=1107 => AccountError,          // device not activated / invalid / not allowed
        1108 => AccountError,                 // signature error: key or environment wrong
        1125 => CancelRefused,                // already refunded
        1136 => NotFound,                     // transaction doesn't exist or can't be operated on
        1142 => Failure,                      // order closed (also expired MPM, QFPay 2018 JP)
        1143 | 1145 => InProgress,            // not yet paid / processing
        1147 => Failure,                      // WeChat Pay transaction error
        1150 | 1155 => CancelRefused,         // T0 cannot cancel / refund denied
        1181 => Failure,                      // order expired
        1201 | 1202 | 1204 | 1205 => Failure, // balance, code, bank, try later
        1203 => AccountError,                 // merchant account error
        1212 => Failure,                      // must use UnionPay overseas code
        1241..=1243 | 1251 => AccountError, // store missing / misconfigured / disabled / being fixed
        1250 => Failure,                    // transaction forbidden (risk)
        1252 | 1254 => RequestError,        // system error placing the order: state uncertain
        1260..=1264 | 1266 | 1267 => OrderStateConflict, // paid/not paid/refunded/cancelled/closed/amount/info
        1265 | 1269..=1272 => CancelRefused, // refund window, balance, partial refunds, excess
        1268 => NotFound,                    // order does not exist
        1294 => Failure,                     // blocked by the bank; never auto-retry (QFPay 2026)
        1295 => InProgress,                  // slow connection, waiting: unknown, so query
        1296 => RequestError,                // slow connection, try later: query before retrying
        1297 => Failure, // bank busy; on cancel calls: unsupported (QFPay 2018 JP)
        1298 => InProgress, // slow connection; if paid don't pay again
        2005 => Failure, // customer code wrong or expired
        2011 => OrderStateConflict, // out_trade_no reused: query the original
        // §Q3.3 legacy codes, QFPay 2017 / QFPay 2019.
        1109..=1112 => RequestError, // crypto error, serial error, services unavailable
        1113..=1124 => Failure,      // user/risk/restriction errors
        1126 => OrderStateConflict,  // original txn info mismatch
        1127 | 1128 => RequestError, // database / file-system error
        1129..=1135 | 1137..=1140 => Failure, // assorted account and card errors
        1141 => RequestError,        // channel MAC / track encryption error
        1144 | 1146 => Failure,      // protocol failure / order processing business error
        1151..=1153 => Failure,      // pre-auth mismatch
        1154 => RequestError,        // internal error
        1161 => InProgress,          // result unknown, must query
        1170 | 1180 => RequestError, // channel cannot serve / re-route
        2001 | 2002 => AccountError, // organisation missing / merchant bind failed
        2003 => RequestError,        // sign-in failed
        2004 | 2006..=2008 => Failure, // balance, illegal QR, consumer closed, bad channel param
        2009 | 2010 => InProgress,   // cannot reach channel / unknown channel error
        2012 => AccountError,        // channel certificate misconfigured
        2999 => InProgress,          // channel still processing
        _ => return None,
    })
}

/// Codes that mean the order was closed or expired at the gateway rather than failed.
fn is_closed(code: &str) -> bool {
    matches!(code, "1142" | "1181" | "1263" | "1264")
}

/// The outcome of a query record from its own `respcd` (the payment status, not the request's),
/// its `cancel` flag and its kind (docs/PROTOCOLS.md §Q2.3–2.4, §Q3.2).
///
/// - `0000` + `cancel` 0 → succeeded; 1 → reversed (CPM reversed or refunded); 2 → cancelled
///   (MPM closed); 3 → refunded; 4 → succeeded (pre-authorisation completed); 5 → partially
///   refunded; any other flag → unrecognised. A refund record with `0000` is a succeeded refund.
/// - in-progress codes (1143, 1145, 1161, 1295, 1298, 2009, 2010, 2999) → in progress.
/// - 1142/1181 (closed, expired) and 1263/1264 (cancelled, closed) → cancelled.
/// - 1136/1268 → not found.
/// - other failure, account and refused codes → failed (the record's operation failed).
/// - request errors and other order-state conflicts in a record say nothing certain about the
///   money, and unknown codes are in no table: → unrecognised (never failure, never success).
pub fn record_outcome(respcd: &str, cancel: Option<&str>, kind: RecordKind) -> Outcome {
    match classify(respcd) {
        Some(CodeClass::Success) => match (kind, cancel.map(str::trim).unwrap_or("0")) {
            (RecordKind::Refund, _) => Outcome::Succeeded,
            (_, "0" | "" | "4") => Outcome::Succeeded,
            (_, "1") => Outcome::Reversed,
            (_, "2") => Outcome::Cancelled,
            (_, "3") => Outcome::Refunded,
            (_, "5") => Outcome::PartiallyRefunded,
            // The money moved, but the flag is unknown: never a reversal candidate.
            _ => Outcome::UnrecognisedPaid,
        },
        Some(CodeClass::InProgress) => Outcome::InProgress,
        Some(CodeClass::NotFound) => Outcome::NotFound,
        _ if is_closed(respcd) => Outcome::Cancelled,
        Some(CodeClass::Failure | CodeClass::AccountError | CodeClass::CancelRefused) => {
            Outcome::Failed
        }
        Some(CodeClass::RequestError | CodeClass::OrderStateConflict) | None => {
            Outcome::Unrecognised
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CodeClass::*;

    /// Every code of docs/PROTOCOLS.md §Q3.2, with the class the report suggests.
    const CURRENT: &[(&str, CodeClass)] = &[
        ("0000", Success),
        ("1100", RequestError),
        ("1101", OrderStateConflict),
        ("1102", RequestError),
        ("1103", RequestError),
        ("1104", RequestError),
        ("1105", AccountError),
        ("1106", AccountError),
        ("1107", AccountError),
        ("1108", AccountError),
        ("1125", CancelRefused),
        ("1136", NotFound),
        ("1142", Failure),
        ("1143", InProgress),
        ("1145", InProgress),
        ("1147", Failure),
        ("1150", CancelRefused),
        ("1155", CancelRefused),
        ("1181", Failure),
        ("1201", Failure),
        ("1202", Failure),
        ("1203", AccountError),
        ("1204", Failure),
        ("1205", Failure),
        ("1212", Failure),
        ("1241", AccountError),
        ("1242", AccountError),
        ("1243", AccountError),
        ("1250", Failure),
        ("1251", AccountError),
        ("1252", RequestError),
        ("1254", RequestError),
        ("1260", OrderStateConflict),
        ("1261", OrderStateConflict),
        ("1262", OrderStateConflict),
        ("1263", OrderStateConflict),
        ("1264", OrderStateConflict),
        ("1265", CancelRefused),
        ("1266", OrderStateConflict),
        ("1267", OrderStateConflict),
        ("1268", NotFound),
        ("1269", CancelRefused),
        ("1270", CancelRefused),
        ("1271", CancelRefused),
        ("1272", CancelRefused),
        ("1294", Failure),
        ("1295", InProgress),
        ("1296", RequestError),
        ("1297", Failure),
        ("1298", InProgress),
        ("2005", Failure),
        ("2011", OrderStateConflict),
    ];

    /// Every code of docs/PROTOCOLS.md §Q3.3 (ranges expanded).
    const LEGACY: &[(&str, CodeClass)] = &[
        ("1109", RequestError),
        ("1110", RequestError),
        ("1111", RequestError),
        ("1112", RequestError),
        ("1113", Failure),
        ("1117", Failure),
        ("1118", Failure),
        ("1124", Failure),
        ("1126", OrderStateConflict),
        ("1127", RequestError),
        ("1128", RequestError),
        ("1129", Failure),
        ("1135", Failure),
        ("1137", Failure),
        ("1140", Failure),
        ("1141", RequestError),
        ("1144", Failure),
        ("1146", Failure),
        ("1151", Failure),
        ("1153", Failure),
        ("1154", RequestError),
        ("1161", InProgress),
        ("1170", RequestError),
        ("1180", RequestError),
        ("2001", AccountError),
        ("2002", AccountError),
        ("2003", RequestError),
        ("2004", Failure),
        ("2006", Failure),
        ("2007", Failure),
        ("2008", Failure),
        ("2009", InProgress),
        ("2010", InProgress),
        ("2012", AccountError),
        ("2999", InProgress),
    ];

    #[test]
    fn every_documented_code_has_its_documented_class() {
        for (code, class) in CURRENT.iter().chain(LEGACY) {
            assert_eq!(classify(code), Some(*class), "{code}");
        }
    }

    #[test]
    fn only_0000_is_success_and_unknown_codes_are_unclassified() {
        for n in 0..10_000u32 {
            let code = format!("{n:04}");
            if code != "0000" {
                assert_ne!(classify(&code), Some(Success), "{code}");
            }
        }
        for code in ["9999", "1099", "", "000", "00000", "abcd", " 0000", "+000"] {
            assert_eq!(classify(code), None, "{code:?}");
            assert_eq!(
                record_outcome(code, Some("0"), RecordKind::Payment),
                Outcome::Unrecognised,
                "{code:?}"
            );
        }
    }

    #[test]
    fn a_0000_record_follows_its_cancel_flag() {
        let p = RecordKind::Payment;
        assert_eq!(record_outcome("0000", Some("0"), p), Outcome::Succeeded);
        assert_eq!(record_outcome("0000", None, p), Outcome::Succeeded);
        assert_eq!(record_outcome("0000", Some("1"), p), Outcome::Reversed);
        assert_eq!(record_outcome("0000", Some("2"), p), Outcome::Cancelled);
        assert_eq!(record_outcome("0000", Some("3"), p), Outcome::Refunded);
        assert_eq!(record_outcome("0000", Some("4"), p), Outcome::Succeeded);
        assert_eq!(
            record_outcome("0000", Some("5"), p),
            Outcome::PartiallyRefunded
        );
        assert_eq!(
            record_outcome("0000", Some("9"), p),
            Outcome::UnrecognisedPaid
        );
    }

    #[test]
    fn a_0000_refund_record_is_a_succeeded_refund() {
        assert_eq!(
            record_outcome("0000", Some("0"), RecordKind::Refund),
            Outcome::Succeeded
        );
    }

    #[test]
    fn record_codes_map_to_progress_closure_absence_and_failure() {
        let p = RecordKind::Payment;
        for code in ["1143", "1145", "1298", "1161", "2999", "1295"] {
            assert_eq!(
                record_outcome(code, Some("0"), p),
                Outcome::InProgress,
                "{code}"
            );
        }
        for code in ["1142", "1181", "1263", "1264"] {
            assert_eq!(
                record_outcome(code, Some("0"), p),
                Outcome::Cancelled,
                "{code}"
            );
        }
        // A 2016 example shows closed orders as 1142 with cancel 2 (docs/PROTOCOLS.md §Q2.4).
        assert_eq!(record_outcome("1142", Some("2"), p), Outcome::Cancelled);
        for code in ["1136", "1268"] {
            assert_eq!(record_outcome(code, None, p), Outcome::NotFound, "{code}");
        }
        for code in [
            "1147", "1201", "1205", "1294", "1297", "2005", "1105", "1269",
        ] {
            assert_eq!(
                record_outcome(code, Some("0"), p),
                Outcome::Failed,
                "{code}"
            );
        }
        for code in ["1100", "1252", "1260", "2011"] {
            assert_eq!(
                record_outcome(code, Some("0"), p),
                Outcome::Unrecognised,
                "{code}"
            );
        }
    }
}
