//! Per-account runtime: the gateway client built from config (once, so every pass shares the
//! account's pacer and pause), the account's retry schedule and its lane slot.

use std::time::Duration;

use super::lane::LaneSlot;
use crate::config::{Account, EcpayAccount, QfpayAccount, Settings};
use crate::domain::{AccountName, Provider, RetryRule, RetrySchedule};
use crate::gateway::GatewayError;
use crate::gateway::ecpay::EcpayClient;
use crate::gateway::qfpay::QfpayClient;
use crate::gateway::transport::{Pacer, http_client};

#[derive(Debug, Clone)]
pub(crate) enum Gateway {
    Qfpay {
        client: Box<QfpayClient>,
        account: Box<QfpayAccount>,
    },
    Ecpay {
        client: EcpayClient,
        account: Box<EcpayAccount>,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct AccountRuntime {
    pub name: AccountName,
    pub schedule: RetrySchedule,
    pub gateway: Gateway,
    /// The account's lane slot in this process (see `lane`).
    pub lane: LaneSlot,
}

impl AccountRuntime {
    /// The account's pacer: the lane hands it over to the next holder through the lease.
    pub fn pacer(&self) -> &Pacer {
        match &self.gateway {
            Gateway::Qfpay { client, .. } => client.pacer(),
            Gateway::Ecpay { client, .. } => client.pacer(),
        }
    }

    pub fn provider(&self) -> Provider {
        match self.gateway {
            Gateway::Qfpay { .. } => Provider::Qfpay,
            Gateway::Ecpay { .. } => Provider::Ecpay,
        }
    }
}

/// The schedule of one account: the provider defaults with the account's own intervals.
fn schedule_for(account: &Account) -> RetrySchedule {
    let mut s = RetrySchedule::default_for(account.provider());
    match account {
        Account::Qfpay(q) => s.in_progress.initial = q.in_progress_interval,
        Account::Ecpay(e) => {
            // ECPay: the nopay interval after error_nopay (seed 003), at first.
            s.in_progress = RetryRule::fixed(e.nopay_interval);
            s.awaiting_reversal = RetryRule::fixed(e.nopay_interval);
            s.not_found.initial = e.nopay_interval;
            s.not_found.max = s.not_found.max.max(e.nopay_interval);
            // error_nopay and Unauthorized are waited out, then settled (12.2, 12.3).
            s.in_progress_patience = Some(e.nopay_patience);
            s.unauthorized = Some(e.unauthorized_patience);
        }
    }
    s
}

/// Builds every configured account's client on one shared HTTP client.
pub(crate) fn build(settings: &Settings) -> Result<Vec<AccountRuntime>, GatewayError> {
    let connect_timeout = settings
        .accounts
        .iter()
        .map(|a| match a {
            Account::Qfpay(q) => q.connect_timeout,
            Account::Ecpay(e) => e.connect_timeout,
        })
        .min()
        .unwrap_or(Duration::from_secs(5));
    let http = http_client(connect_timeout)?;
    Ok(settings
        .accounts
        .iter()
        .map(|a| AccountRuntime {
            name: a.name().clone(),
            schedule: schedule_for(a),
            lane: LaneSlot::default(),
            gateway: match a {
                Account::Qfpay(q) => Gateway::Qfpay {
                    client: Box::new(q.client(http.clone())),
                    account: Box::new(q.clone()),
                },
                Account::Ecpay(e) => Gateway::Ecpay {
                    client: e.client(http.clone()),
                    account: Box::new(e.clone()),
                },
            },
        })
        .collect())
}
