//! The demo's world: what the sandbox gateways hold, what the merchant registers, and the
//! state every payment must end in. Deterministic (fixed counts, a fixed seed for amounts).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::sandbox::{
    DEV_ECPAY_MERCHANT_ID, DEV_QFPAY_APP_CODE, EcpayOrder, EcpayStatus, QfpayPayment, QfpayRefund,
    QfpayScript, QfpayTimeline, SandboxState, SeedError,
};

pub const QFPAY_ACCOUNT: &str = "hk";
pub const ECPAY_ACCOUNT: &str = "tw";

/// How many payments of each kind the demo registers (about two thousand in all).
const QF_PAID: usize = 1_150;
const QF_FAILED: usize = 120;
const QF_IN_PROGRESS_THEN_PAID: usize = 60;
const QF_ONLINE_VIA_PAY: usize = 24;
const EC_AUTHORIZED: usize = 560;
const EC_UNAUTHORIZED: usize = 40;
const EC_NOPAY_THEN_AUTHORIZED: usize = 30;
/// Captured then refunded in full, captured then refunded in part, cancelled before capture.
const EC_AFTER_AUTHORIZATION: usize = 30;

/// A QFPay online order the demo creates through `payrecon pay`'s code path.
#[derive(Debug, Clone)]
pub struct OnlineOrder {
    pub out_trade_no: String,
    pub amount: i64,
    pub pay_type: &'static str,
}

/// Everything the demo sets up.
#[derive(Debug, Default)]
pub struct World {
    /// Import records (JSONL lines) the merchant registers.
    pub import: Vec<serde_json::Value>,
    pub online: Vec<OnlineOrder>,
    /// `(account, out_trade_no)` → the state it must end in.
    pub expected: BTreeMap<(String, String), &'static str>,
    /// The earliest gateway record, for the closing sweep.
    pub first_record: Option<DateTime<Utc>>,
    /// Gateway records the ledger never hears of.
    pub ghosts: Vec<String>,
}

impl World {
    fn expect(&mut self, account: &str, no: &str, state: &'static str) {
        self.expected
            .insert((account.to_string(), no.to_string()), state);
    }

    #[allow(clippy::too_many_arguments)]
    fn qf_row(
        &mut self,
        no: &str,
        syssn: Option<&str>,
        pay_type: &str,
        amount: i64,
        created: DateTime<Utc>,
        kind: &str,
    ) {
        let mut row = json!({"account": QFPAY_ACCOUNT, "kind": kind, "out_trade_no": no, "pay_type": pay_type,
            "amount": amount, "currency": "HKD", "created_at": created.to_rfc3339()});
        if let Some(s) = syssn {
            row["syssn"] = json!(s);
        }
        if kind == "refund" {
            row.as_object_mut().map(|o| o.remove("pay_type"));
        }
        self.import.push(row);
    }
}

/// A small deterministic generator for amounts (no dependency on a seeded RNG crate).
fn amount(i: usize) -> i64 {
    200 + ((i as i64 * 7919) % 9_800)
}

/// Seeds the sandbox and returns the merchant's side and the expectations.
pub fn build(state: &SandboxState, now: DateTime<Utc>) -> Result<World, SeedError> {
    let mut w = World::default();
    let qf = DEV_QFPAY_APP_CODE;
    // Records spread over the last two hours.
    let at = |i: usize, n: usize| {
        now - chrono::Duration::minutes(125)
            + chrono::Duration::seconds((i * 7000 / n.max(1)) as i64)
    };
    w.first_record = Some(at(0, 1));

    for i in 0..QF_PAID {
        let no = format!("HKP{i:05}");
        let syssn = state.insert_qfpay(
            qf,
            QfpayPayment::new(&no, amount(i), "HKD", "800101").at(at(i, QF_PAID)),
        )?;
        // Half the merchant's rows carry the syssn QFPay returned, half only the order number.
        w.qf_row(
            &no,
            (i % 2 == 0).then_some(syssn.as_str()),
            "800101",
            amount(i),
            at(i, QF_PAID),
            "payment",
        );
        w.expect(QFPAY_ACCOUNT, &no, "succeeded");
    }
    for i in 0..QF_FAILED {
        let no = format!("HKF{i:05}");
        let p = QfpayPayment::new(&no, amount(i), "HKD", "800101")
            .at(at(i, QF_FAILED))
            .timeline(QfpayTimeline::failed("1205"));
        let syssn = state.insert_qfpay(qf, p)?;
        w.qf_row(
            &no,
            Some(&syssn),
            "800101",
            amount(i),
            at(i, QF_FAILED),
            "payment",
        );
        w.expect(QFPAY_ACCOUNT, &no, "failed");
    }
    for i in 0..QF_IN_PROGRESS_THEN_PAID {
        let no = format!("HKW{i:05}");
        let created = now - chrono::Duration::seconds(30);
        let p = QfpayPayment::new(&no, amount(i), "HKD", "800201")
            .at(created)
            .timeline(QfpayTimeline::pending_then(
                Duration::from_secs(36 + (i % 6) as u64),
                "0000",
            ));
        let syssn = state.insert_qfpay(qf, p)?;
        w.qf_row(&no, Some(&syssn), "800201", amount(i), created, "payment");
        w.expect(QFPAY_ACCOUNT, &no, "succeeded");
    }
    for i in 0..QF_ONLINE_VIA_PAY {
        let no = format!("HKO{i:05}");
        let code = if i % 6 == 5 { "1205" } else { "0000" };
        state.script_qfpay_payment(
            qf,
            &no,
            QfpayScript::new(QfpayTimeline::pending_then(Duration::from_secs(4), code)),
        )?;
        w.online.push(OnlineOrder {
            out_trade_no: no.clone(),
            amount: amount(i),
            pay_type: if i % 2 == 0 { "801512" } else { "801101" },
        });
        w.expect(
            QFPAY_ACCOUNT,
            &no,
            if code == "0000" {
                "succeeded"
            } else {
                "failed"
            },
        );
    }
    // A CPM payment whose customer never finishes: reversed as a last resort.
    let cpm_at = now - chrono::Duration::minutes(3);
    let syssn = state.insert_qfpay(
        qf,
        QfpayPayment::new("HKCPM00001", 4_800, "HKD", "800108")
            .at(cpm_at)
            .timeline(QfpayTimeline::never_completes()),
    )?;
    w.qf_row(
        "HKCPM00001",
        Some(&syssn),
        "800108",
        4_800,
        cpm_at,
        "payment",
    );
    w.expect(QFPAY_ACCOUNT, "HKCPM00001", "reversed");
    // The same on a Hong Kong wallet, which cannot be cancelled: a person must decide.
    let syssn = state.insert_qfpay(
        qf,
        QfpayPayment::new("HKHK000001", 3_300, "HKD", "801008")
            .at(cpm_at)
            .timeline(QfpayTimeline::never_completes())
            .not_cancellable(),
    )?;
    w.qf_row(
        "HKHK000001",
        Some(&syssn),
        "801008",
        3_300,
        cpm_at,
        "payment",
    );
    w.expect(QFPAY_ACCOUNT, "HKHK000001", "needs_review");
    // A paid payment that was refunded in full; the merchant tracks the refund too.
    let paid_at = now - chrono::Duration::minutes(90);
    let syssn = state.insert_qfpay(
        qf,
        QfpayPayment::new("HKREF00001", 2_500, "HKD", "800101").at(paid_at),
    )?;
    state.insert_qfpay_refund(
        qf,
        QfpayRefund {
            payment_out_trade_no: "HKREF00001".into(),
            out_trade_no: "HKREF00001R".into(),
            amount_minor: 2_500,
            at: Some(paid_at + chrono::Duration::minutes(5)),
        },
    )?;
    w.qf_row(
        "HKREF00001",
        Some(&syssn),
        "800101",
        2_500,
        paid_at,
        "payment",
    );
    w.qf_row(
        "HKREF00001R",
        None,
        "800101",
        2_500,
        paid_at + chrono::Duration::minutes(5),
        "refund",
    );
    w.expect(QFPAY_ACCOUNT, "HKREF00001", "refunded");
    w.expect(QFPAY_ACCOUNT, "HKREF00001R", "succeeded");
    // The merchant recorded 1,000 but QFPay took 1,100: settled, and flagged.
    state.insert_qfpay(
        qf,
        QfpayPayment::new("HKAMT00001", 1_100, "HKD", "800101").at(paid_at),
    )?;
    w.qf_row("HKAMT00001", None, "800101", 1_000, paid_at, "payment");
    w.expect(QFPAY_ACCOUNT, "HKAMT00001", "succeeded");
    // A payment the merchant never recorded: found by the closing sweep.
    let ghost = state.insert_qfpay(
        qf,
        QfpayPayment::new("HKGHOST001", 777, "HKD", "800101").at(paid_at),
    )?;
    w.ghosts.push(ghost);

    let ec = DEV_ECPAY_MERCHANT_ID;
    let ec_row = |w: &mut World, no: &str, amount: i64, created: DateTime<Utc>| {
        w.import.push(json!({"account": ECPAY_ACCOUNT, "out_trade_no": no, "amount": amount, "currency": "TWD",
            "created_at": created.to_rfc3339()}));
    };
    for i in 0..EC_AUTHORIZED {
        let no = format!("TWA{i:05}");
        let created = at(i, EC_AUTHORIZED);
        let status = [
            EcpayStatus::Authorized,
            EcpayStatus::ToBeCaptured,
            EcpayStatus::Captured,
        ][i % 3];
        state.insert_ecpay(
            ec,
            EcpayOrder::new(&no, amount(i)).at(created).status(status),
        )?;
        ec_row(&mut w, &no, amount(i), created);
        w.expect(ECPAY_ACCOUNT, &no, "succeeded");
    }
    for i in 0..EC_UNAUTHORIZED {
        let no = format!("TWU{i:05}");
        let created = at(i, EC_UNAUTHORIZED);
        state.insert_ecpay(
            ec,
            EcpayOrder::new(&no, amount(i))
                .at(created)
                .status(EcpayStatus::Unauthorized),
        )?;
        ec_row(&mut w, &no, amount(i), created);
        w.expect(ECPAY_ACCOUNT, &no, "failed");
    }
    for i in 0..EC_AFTER_AUTHORIZATION {
        let no = format!("TWX{i:05}");
        let created = at(i, EC_AFTER_AUTHORIZATION);
        let (order, want) = match i % 3 {
            0 => (
                EcpayOrder::new(&no, amount(i)).refunded_after(
                    Duration::from_secs(60),
                    Duration::from_secs(180),
                    amount(i),
                ),
                "refunded",
            ),
            1 => (
                EcpayOrder::new(&no, amount(i)).refunded_after(
                    Duration::from_secs(60),
                    Duration::from_secs(180),
                    amount(i) / 2,
                ),
                "partially_refunded",
            ),
            _ => (
                EcpayOrder::new(&no, amount(i)).cancelled_after(Duration::from_secs(120)),
                "cancelled",
            ),
        };
        state.insert_ecpay(ec, order.at(created))?;
        ec_row(&mut w, &no, amount(i), created);
        w.expect(ECPAY_ACCOUNT, &no, want);
    }
    for i in 0..EC_NOPAY_THEN_AUTHORIZED {
        let no = format!("TWN{i:05}");
        let created = now - chrono::Duration::seconds(5);
        state.insert_ecpay(
            ec,
            EcpayOrder::new(&no, amount(i))
                .at(created)
                .nopay_until(Duration::from_secs(8), EcpayStatus::Authorized),
        )?;
        ec_row(&mut w, &no, amount(i), created);
        w.expect(ECPAY_ACCOUNT, &no, "succeeded");
    }
    Ok(w)
}
