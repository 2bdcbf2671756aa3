//! The sandbox's shared state and the Rust API to seed and inspect it. Clones share one state;
//! the server and the handle hold the same one, so seeding works before and while serving.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::clock::SandboxClock;
use super::config::SandboxConfig;
use super::ecpay_book::{EcpayBook, EcpayOrderView};
use super::qfpay_book::{MerchantBook, QfpayPaymentView};
use super::scenario::{EcpayOrder, QfpayPayment, QfpayRefund, QfpayScript};

/// Why seeding was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeedError {
    #[error("no sandbox merchant {0:?} (add it to SandboxConfig)")]
    UnknownMerchant(String),
    #[error("{0:?} is already used by another record of this merchant")]
    Duplicate(String),
    #[error("no seeded payment with out_trade_no {0:?}")]
    UnknownPayment(String),
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub clock: SandboxClock,
    pub seq: AtomicU64,
    pub qfpay: RwLock<HashMap<String, MerchantBook>>,
    pub ecpay: RwLock<HashMap<String, EcpayBook>>,
}

/// Seeded payments and orders of every merchant, with the clock they evolve by.
#[derive(Debug, Clone)]
pub struct SandboxState {
    pub(crate) shared: Arc<Shared>,
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SandboxState {
    /// An empty state for the configured merchants.
    pub fn new(config: &SandboxConfig) -> Self {
        let qfpay = config
            .qfpay_merchants
            .iter()
            .map(|m| {
                let mut book = MerchantBook::new(
                    m.timezone,
                    m.default_script.clone(),
                    m.non_cancellable_pay_types.clone(),
                );
                book.max_page_size = m.max_page_size;
                (m.app_code.clone(), book)
            })
            .collect();
        let ecpay = config
            .ecpay_merchants
            .iter()
            .map(|m| {
                let english = m.language == super::config::StatusLanguage::English;
                (m.merchant_id.clone(), EcpayBook::new(english, m.stopped))
            })
            .collect();
        Self {
            shared: Arc::new(Shared {
                clock: config.clock.clone(),
                seq: AtomicU64::new(1),
                qfpay: RwLock::new(qfpay),
                ecpay: RwLock::new(ecpay),
            }),
        }
    }

    /// The clock scenarios evolve by (shared with the config it was built from).
    pub fn clock(&self) -> &SandboxClock {
        &self.shared.clock
    }

    pub(crate) fn with_qfpay<T>(
        &self,
        app_code: &str,
        f: impl FnOnce(&MerchantBook) -> T,
    ) -> Option<T> {
        read(&self.shared.qfpay).get(app_code).map(f)
    }

    pub(crate) fn with_qfpay_mut<T>(
        &self,
        app_code: &str,
        f: impl FnOnce(&mut MerchantBook) -> T,
    ) -> Option<T> {
        write(&self.shared.qfpay).get_mut(app_code).map(f)
    }

    pub(crate) fn with_ecpay<T>(
        &self,
        merchant_id: &str,
        f: impl FnOnce(&EcpayBook) -> T,
    ) -> Option<T> {
        read(&self.shared.ecpay).get(merchant_id).map(f)
    }

    /// Seeds a QFPay payment record; returns its `syssn`.
    pub fn insert_qfpay(&self, app_code: &str, payment: QfpayPayment) -> Result<String, SeedError> {
        let now = self.shared.clock.now();
        self.with_qfpay_mut(app_code, |b| {
            b.insert_payment(payment, now, &self.shared.seq)
        })
        .ok_or_else(|| SeedError::UnknownMerchant(app_code.to_string()))?
    }

    /// Seeds a refund record (`order_type=refund`, `origssn` = the payment's `syssn`) and
    /// marks the payment refunded; returns the refund's `syssn`.
    pub fn insert_qfpay_refund(
        &self,
        app_code: &str,
        refund: QfpayRefund,
    ) -> Result<String, SeedError> {
        let now = self.shared.clock.now();
        self.with_qfpay_mut(app_code, |b| b.insert_refund(refund, now, &self.shared.seq))
            .ok_or_else(|| SeedError::UnknownMerchant(app_code.to_string()))?
    }

    /// Says how the payment that `POST /trade/v1/payment` will create for `out_trade_no`
    /// behaves (used once, by the first payment request with that number).
    pub fn script_qfpay_payment(
        &self,
        app_code: &str,
        out_trade_no: &str,
        script: QfpayScript,
    ) -> Result<(), SeedError> {
        self.with_qfpay_mut(app_code, |b| {
            b.scripts.insert(out_trade_no.to_string(), script);
        })
        .ok_or_else(|| SeedError::UnknownMerchant(app_code.to_string()))
    }

    /// A QFPay payment (not refund) as the gateway sees it now, with its reversal/close counts.
    pub fn qfpay_payment(&self, app_code: &str, out_trade_no: &str) -> Option<QfpayPaymentView> {
        let now = self.shared.clock.now();
        self.with_qfpay(app_code, |b| {
            b.by_out_trade_no.get(out_trade_no).map(|&i| b.view(i, now))
        })
        .flatten()
    }

    /// Every QFPay payment that received more than one reversal or close call (a test of
    /// "never reverse twice" asserts this is empty).
    pub fn qfpay_cancelled_more_than_once(&self, app_code: &str) -> Vec<QfpayPaymentView> {
        let now = self.shared.clock.now();
        self.with_qfpay(app_code, |b| {
            (0..b.records.len())
                .filter(|&i| b.records[i].reversal_calls + b.records[i].close_calls > 1)
                .map(|i| b.view(i, now))
                .collect()
        })
        .unwrap_or_default()
    }

    /// How many records (payments and refunds) a QFPay merchant has.
    pub fn qfpay_len(&self, app_code: &str) -> usize {
        self.with_qfpay(app_code, |b| b.records.len()).unwrap_or(0)
    }

    /// Seeds an ECPay order; returns its `TradeNo`.
    pub fn insert_ecpay(&self, merchant_id: &str, order: EcpayOrder) -> Result<String, SeedError> {
        let now = self.shared.clock.now();
        write(&self.shared.ecpay)
            .get_mut(merchant_id)
            .ok_or_else(|| SeedError::UnknownMerchant(merchant_id.to_string()))?
            .insert(order, now, &self.shared.seq)
    }

    /// An ECPay order as the gateway sees it now.
    pub fn ecpay_order(
        &self,
        merchant_id: &str,
        merchant_trade_no: &str,
    ) -> Option<EcpayOrderView> {
        let now = self.shared.clock.now();
        self.with_ecpay(merchant_id, |b| b.view(merchant_trade_no, now))
            .flatten()
    }

    /// How many orders an ECPay merchant has.
    pub fn ecpay_len(&self, merchant_id: &str) -> usize {
        self.with_ecpay(merchant_id, EcpayBook::len).unwrap_or(0)
    }
}
