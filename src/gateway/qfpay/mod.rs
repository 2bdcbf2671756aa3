//! QFPay OpenAPI adapter (issue 3).
