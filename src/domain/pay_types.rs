//! The QFPay pay types the protocol reference documents (docs/PROTOCOLS.md §Q4.1, from the official
//! pay-type pages QFPay 2026 `paytypes.md`, QFPay 2024 `02-paycode.md`, QFPay 2024 `In-Store/Payments.md`), and which of
//! them `payrecon pay` can create.

use super::{PayMode, PayType};

/// Every documented pay type code (docs/PROTOCOLS.md §Q4.1).
pub const DOCUMENTED_PAY_TYPES: &[&str] = &[
    "800008", "800101", "800108", "801101", "801107", "801110", "800107", "801501", "801510",
    "801512", "801514", "800201", "800208", "800207", "800212", "800210", "800213", "801008",
    "801010", "805801", "805808", "805814", "805812", "800701", "800708", "800712", "800714",
    "800710", "802001", "803701", "803712", "803714", "802801", "802808", "806527", "806708",
    "806808",
];

impl PayType {
    /// Whether docs/PROTOCOLS.md §Q4.1 lists this code.
    pub fn is_documented(&self) -> bool {
        DOCUMENTED_PAY_TYPES.contains(&self.as_str())
    }

    /// Whether a payment of this type can be created without the customer at a till: a
    /// documented type the customer pays through a QR code or link (`pay_url`). CPM types need
    /// the customer's code scanned (`auth_code`), which only a till has.
    pub fn creatable_online(&self) -> bool {
        self.is_documented() && self.mode() == PayMode::Expiring
    }
}

/// The pay types `payrecon pay` can create, in the reference's order.
pub fn creatable_pay_types() -> impl Iterator<Item = &'static str> {
    DOCUMENTED_PAY_TYPES
        .iter()
        .copied()
        .filter(|p| PayType::parse(p).is_ok_and(|t| t.creatable_online()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpm_and_undocumented_pay_types_cannot_be_created_online() {
        for p in [
            "800108", "800208", "801008", "805808", "800708", "802808", "800008", "806708",
            "806808",
        ] {
            assert!(!PayType::parse(p).unwrap().creatable_online(), "{p}");
        }
        assert!(!PayType::parse("999999").unwrap().is_documented());
        for p in ["801101", "801512", "800201", "800101"] {
            assert!(PayType::parse(p).unwrap().creatable_online(), "{p}");
        }
        assert_eq!(
            creatable_pay_types().count(),
            DOCUMENTED_PAY_TYPES.len() - 9
        );
    }
}
