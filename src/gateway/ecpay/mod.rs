//! ECPay ecpayment adapter (issue 4).
