//! Which QFPay pay types can be cancelled, and how: the last-resort reversal policy's facts.
//!
//! The docs disagree on the endpoint per pay type (docs/PROTOCOLS.md §Q4.2). The default here follows
//! version B (Docusaurus 2024–25), which agrees with versions A and D on the WeChat split:
//! Alipay CPM & MPM and WeChat CPM → `/trade/v1/reversal`; WeChat MPM → `/trade/v1/close`;
//! Hong Kong pay types ("do not support transaction cancel") and every undocumented pay type →
//! not cancellable. Accounts override it with `[accounts.cancel_routes]`.

use serde::{Deserialize, Serialize};

use super::PayType;

/// How a payment can be cancelled at QFPay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelRoute {
    Reversal,
    Close,
    NotCancellable,
}

/// In words, for event messages and logs.
impl std::fmt::Display for CancelRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CancelRoute::Reversal => "reversal",
            CancelRoute::Close => "close",
            CancelRoute::NotCancellable => "no cancel (not cancellable)",
        })
    }
}

impl CancelRoute {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "reversal" => Some(CancelRoute::Reversal),
            "close" => Some(CancelRoute::Close),
            "none" => Some(CancelRoute::NotCancellable),
            _ => None,
        }
    }
}

/// How the customer pays, which decides when an unfinished payment is past hope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayMode {
    /// Customer presents a code, merchant scans (codes ending in `08`, docs/PROTOCOLS.md §Q4.1): the
    /// wallet answers within seconds, so after ~2 minutes in progress it is a reversal candidate.
    Cpm,
    /// QR (MPM), web, WAP, in-app: the order stays payable until its `expired_time`.
    Expiring,
}

impl PayType {
    pub fn mode(&self) -> PayMode {
        if self.as_str().ends_with("08") {
            PayMode::Cpm
        } else {
            PayMode::Expiring
        }
    }

    /// The documented default (version B); see the module doc.
    pub fn default_cancel_route(&self) -> CancelRoute {
        match self.as_str() {
            "800108" | "800101" | "800208" => CancelRoute::Reversal,
            "800201" => CancelRoute::Close,
            _ => CancelRoute::NotCancellable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(s: &str) -> PayType {
        PayType::parse(s).unwrap()
    }

    #[test]
    fn default_routes_follow_version_b() {
        assert_eq!(pt("800108").default_cancel_route(), CancelRoute::Reversal);
        assert_eq!(pt("800101").default_cancel_route(), CancelRoute::Reversal);
        assert_eq!(pt("800208").default_cancel_route(), CancelRoute::Reversal);
        assert_eq!(pt("800201").default_cancel_route(), CancelRoute::Close);
        // Hong Kong pay types and undocumented ones are not cancellable.
        for hk in ["801501", "801008", "801512", "805808", "802001", "999999"] {
            assert_eq!(
                pt(hk).default_cancel_route(),
                CancelRoute::NotCancellable,
                "{hk}"
            );
        }
    }

    #[test]
    fn cpm_pay_types_end_in_08() {
        assert_eq!(pt("800108").mode(), PayMode::Cpm);
        assert_eq!(pt("801008").mode(), PayMode::Cpm);
        assert_eq!(pt("800101").mode(), PayMode::Expiring);
        assert_eq!(pt("801512").mode(), PayMode::Expiring);
    }
}
