//! A scripted QFPay on mockito: records whose `respcd` follows a script (one step per time the
//! record is returned), id and window queries with paging, reversal, and call counters.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, FixedOffset, NaiveDateTime, Utc};
use md5::Digest;
use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub struct FakeRecord {
    pub syssn: String,
    pub out_trade_no: String,
    pub pay_type: String,
    pub txamt: i64,
    pub cancel: String,
    /// The codes it shows, one per answer; the last one stays.
    pub script: VecDeque<String>,
    pub sysdtm: DateTime<Utc>,
}

#[derive(Debug, Default)]
pub struct FakeState {
    pub records: Vec<FakeRecord>,
    pub query_calls: usize,
    /// Each query call's asked syssn / out_trade_no list, or "window" for sweeps.
    pub queries: Vec<String>,
    pub reversals: HashMap<String, usize>,
    /// When set, every call answers with this HTTP status and no body.
    pub fail_with: Option<usize>,
    /// Answers computed (and signed) by the header callback, which runs before the body
    /// callback, keyed by the request body they answer.
    answers: HashMap<Vec<u8>, VecDeque<Vec<u8>>>,
}

pub struct FakeQfpay {
    pub server: mockito::ServerGuard,
    pub state: Arc<Mutex<FakeState>>,
}

fn tz() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).unwrap()
}

fn local(t: DateTime<Utc>) -> String {
    t.with_timezone(&tz())
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

fn parse_local(s: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
        .ok()
        .and_then(|n| n.and_local_timezone(tz()).single())
        .map(|t| t.with_timezone(&Utc))
}

impl FakeRecord {
    pub fn new(
        syssn: &str,
        out_trade_no: &str,
        pay_type: &str,
        txamt: i64,
        script: &[&str],
        sysdtm: DateTime<Utc>,
    ) -> Self {
        Self {
            syssn: syssn.into(),
            out_trade_no: out_trade_no.into(),
            pay_type: pay_type.into(),
            txamt,
            cancel: "0".into(),
            script: script.iter().map(|s| s.to_string()).collect(),
            sysdtm,
        }
    }

    fn code(&self) -> String {
        self.script
            .front()
            .cloned()
            .unwrap_or_else(|| "1143".into())
    }

    fn answer(&mut self) -> Value {
        let v = json!({
            "syssn": self.syssn, "out_trade_no": self.out_trade_no, "pay_type": self.pay_type,
            "order_type": "payment", "txamt": self.txamt.to_string(), "txcurrcd": "HKD",
            "respcd": self.code(), "cancel": self.cancel, "errmsg": "",
            "sysdtm": local(self.sysdtm), "txdtm": local(self.sysdtm),
        });
        if self.script.len() > 1 {
            self.script.pop_front();
        }
        v
    }
}

fn form(body: &[u8]) -> HashMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}

fn query(state: &mut FakeState, f: &HashMap<String, String>) -> Value {
    state.query_calls += 1;
    let page: usize = f.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    let size: usize = f
        .get("page_size")
        .and_then(|p| p.parse().ok())
        .unwrap_or(10);
    let list = |k: &str| -> Option<Vec<String>> {
        f.get(k).map(|v| v.split(',').map(str::to_string).collect())
    };
    let hits: Vec<usize> = if let Some(ids) = list("syssn") {
        state.queries.push(ids.join(","));
        (0..state.records.len())
            .filter(|&i| ids.contains(&state.records[i].syssn))
            .collect()
    } else if let Some(ids) = list("out_trade_no") {
        state.queries.push(ids.join(","));
        (0..state.records.len())
            .filter(|&i| ids.contains(&state.records[i].out_trade_no))
            .collect()
    } else {
        state.queries.push("window".into());
        let from = f.get("start_time").and_then(|s| parse_local(s)).unwrap();
        let to = f.get("end_time").and_then(|s| parse_local(s)).unwrap();
        (0..state.records.len())
            .filter(|&i| {
                state.records[i].sysdtm >= from
                    && state.records[i].sysdtm <= to + chrono::Duration::seconds(1)
            })
            .collect()
    };
    let data: Vec<Value> = hits
        .into_iter()
        .skip((page - 1) * size)
        .take(size)
        .map(|i| state.records[i].answer())
        .collect();
    json!({"respcd": "0000", "resperr": "ok", "respmsg": "", "page": page, "page_size": size, "data": data})
}

fn reversal(state: &mut FakeState, f: &HashMap<String, String>) -> Value {
    let key = f
        .get("syssn")
        .or(f.get("out_trade_no"))
        .cloned()
        .unwrap_or_default();
    *state.reversals.entry(key.clone()).or_default() += 1;
    let Some(r) = state
        .records
        .iter_mut()
        .find(|r| r.syssn == key || r.out_trade_no == key)
    else {
        return json!({"respcd": "1136", "resperr": "no such order"});
    };
    if r.code() == "0000" {
        return json!({"respcd": "1260", "resperr": "already paid"});
    }
    r.script = VecDeque::from(["0000".to_string()]);
    r.cancel = "1".into();
    json!({"respcd": "0000", "syssn": format!("9{}", &r.syssn[1..]), "orig_syssn": r.syssn, "txamt": r.txamt.to_string()})
}

impl FakeQfpay {
    pub async fn start(records: Vec<FakeRecord>) -> Self {
        let mut server = mockito::Server::new_async().await;
        let state = Arc::new(Mutex::new(FakeState {
            records,
            ..FakeState::default()
        }));
        let (s1, s2, s3) = (state.clone(), state.clone(), state.clone());
        server
            .mock(
                "POST",
                mockito::Matcher::Regex("^/trade/v1/(query|reversal|close)$".into()),
            )
            .with_status_code_from_request(move |_| s1.lock().unwrap().fail_with.unwrap_or(200))
            .with_header("content-type", "application/json")
            // Signed as QFPay signs answers (X-QF-SIGN = MD5(body + key), docs/PROTOCOLS.md §Q1.5):
            // payrecon reverses only on signed answers.
            .with_header_from_request("x-qf-sign", move |req| {
                let mut st = s2.lock().unwrap();
                if st.fail_with.is_some() {
                    return String::new();
                }
                let request = req.body().unwrap().clone();
                let f = form(&request);
                let v = if req.path().ends_with("query") {
                    query(&mut st, &f)
                } else {
                    reversal(&mut st, &f)
                };
                let body = v.to_string().into_bytes();
                let sign = hex::encode_upper(md5::Md5::digest(
                    [&body[..], super::QF_KEY.as_bytes()].concat(),
                ));
                st.answers.entry(request).or_default().push_back(body);
                sign
            })
            .with_body_from_request(move |req| {
                let mut st = s3.lock().unwrap();
                if st.fail_with.is_some() {
                    st.query_calls += 1;
                    return b"upstream error".to_vec();
                }
                let request = req.body().unwrap().clone();
                st.answers
                    .get_mut(&request)
                    .and_then(VecDeque::pop_front)
                    .unwrap_or_default()
            })
            .expect_at_least(0)
            .create_async()
            .await;
        Self { server, state }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn query_calls(&self) -> usize {
        self.state.lock().unwrap().query_calls
    }

    pub fn reversals(&self, key: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .reversals
            .get(key)
            .copied()
            .unwrap_or(0)
    }
}
