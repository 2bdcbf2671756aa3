//! A scripted ECPay CreditDetail/QueryTrade on mockito: each order answers from its script
//! (`error_nopay`, then a status), one step per call; call times are recorded.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use payrecon::gateway::ecpay::envelope::RpHeader;
use payrecon::gateway::ecpay::{
    DataKey, RequestEnvelope, ResponseEnvelope, decrypt_json, encrypt_json,
};
use serde_json::json;

use super::{EC_IV, EC_KEY};

#[derive(Debug, Default)]
pub struct EcState {
    /// MerchantTradeNo → answers (`error_nopay` or a Status string); the last one stays.
    pub scripts: HashMap<String, VecDeque<String>>,
    pub calls: Vec<(String, Instant)>,
}

pub struct FakeEcpay {
    pub server: mockito::ServerGuard,
    pub state: Arc<Mutex<EcState>>,
}

impl FakeEcpay {
    pub async fn start(scripts: &[(&str, &[&str])]) -> Self {
        let mut server = mockito::Server::new_async().await;
        let state = Arc::new(Mutex::new(EcState {
            scripts: scripts
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect(),
            calls: Vec::new(),
        }));
        let s = state.clone();
        server
            .mock("POST", "/1.0.0/CreditDetail/QueryTrade")
            .with_header("content-type", "application/json")
            .with_body_from_request(move |req| {
                let key = DataKey::new(EC_KEY.as_bytes(), EC_IV.as_bytes()).unwrap();
                let env = RequestEnvelope::parse(&req.utf8_lossy_body().unwrap()).unwrap();
                let data = decrypt_json(&env.data, &key).unwrap();
                let no = data["MerchantTradeNo"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let mut st = s.lock().unwrap();
                st.calls.push((no.clone(), Instant::now()));
                let answer = match st.scripts.get_mut(&no) {
                    Some(script) => {
                        let a = script.front().cloned().unwrap_or_default();
                        if script.len() > 1 {
                            script.pop_front();
                        }
                        a
                    }
                    None => "error_nopay".into(),
                };
                let inner = if answer.starts_with("error") {
                    json!({"RtnMsg": answer, "RtnValue": {}})
                } else {
                    // A captured trade has its amount closed (ClsAmt, seed 003).
                    let closed = matches!(
                        answer.as_str(),
                        "已關帳" | "要關帳" | "Captured" | "To be captured"
                    );
                    json!({"RtnMsg": "", "RtnValue": {"TradeID": 1, "Amount": 1200,
                           "ClsAmt": if closed { 1200 } else { 0 },
                           "AuthTime": "2026/11/22 10:00:00", "Status": answer}})
                };
                ResponseEnvelope {
                    merchant_id: "3002607".into(),
                    rp_header: RpHeader { timestamp: 0 },
                    trans_code: 1,
                    trans_msg: "Success".into(),
                    data: encrypt_json(&inner, &key),
                }
                .to_json()
                .into_bytes()
            })
            .expect_at_least(0)
            .create_async()
            .await;
        Self { server, state }
    }

    pub fn calls(&self, no: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|(n, _)| n == no)
            .count()
    }
}
