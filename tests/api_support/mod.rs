//! A `payrecon run` child with `[api]` configured against an in-process sandbox, and clients
//! that speak to it over real HTTP: the bearer API, and gateway notifications signed the
//! gateways' way.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use payrecon::gateway::ecpay::{DataKey, ResponseEnvelope, encrypt_json};
use payrecon::sandbox::{
    DEV_ECPAY_HASH_IV, DEV_ECPAY_HASH_KEY, DEV_ECPAY_MERCHANT_ID, DEV_QFPAY_APP_CODE,
    DEV_QFPAY_CLIENT_KEY, RateLimits, Sandbox, SandboxConfig, SandboxHandle,
};
use serde_json::Value;

pub const TOKEN: &str = "test-token-0123456789abcdef";

/// A daemon with its API, its sandbox and its files; killed when dropped.
pub struct Service {
    pub sandbox: SandboxHandle,
    pub dir: tempfile::TempDir,
    pub base: String,
    pub http: reqwest::Client,
    child: Child,
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The ledger file of a service (to prepare it before the daemon starts).
pub fn ledger_path(dir: &Path) -> PathBuf {
    dir.join("ledger.db")
}

/// Starts a sandbox on wall-clock time (no rate limits) and writes the daemon's config: QFPay
/// `hk` and ECPay `tw` at the sandbox, the API on a free loopback port with [`TOKEN`],
/// `max_body` 4 KiB, and a reconcile schedule that never ticks during a test (the first pass at
/// start and the API's wakes are all that run). `extra_account_keys` is added to both accounts.
pub async fn prepare(extra_account_keys: &str) -> (SandboxHandle, tempfile::TempDir, u16) {
    let sandbox = Sandbox::start(SandboxConfig {
        rate_limits: RateLimits::off(),
        ..SandboxConfig::dev()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("api-token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let port = free_port();
    let url = sandbox.base_url();
    let config = format!(
        r#"
[ledger]
path = "{ledger}"

[schedule]
reconcile = "0 0 0 1 1 *"
sweep = "0 0 0 1 1 *"

[api]
listen = "127.0.0.1:{port}"
token_file = "{token}"
max_body = 4096

[[accounts]]
name = "hk"
provider = "qfpay"
base_url = "{url}"
app_code = "{DEV_QFPAY_APP_CODE}"
client_key = "{DEV_QFPAY_CLIENT_KEY}"
{extra_account_keys}

[[accounts]]
name = "tw"
provider = "ecpay"
base_url = "{url}"
merchant_id = "{DEV_ECPAY_MERCHANT_ID}"
hash_key = "{DEV_ECPAY_HASH_KEY}"
hash_iv = "{DEV_ECPAY_HASH_IV}"
{extra_account_keys}
"#,
        ledger = ledger_path(dir.path()).display(),
        token = token.display(),
    );
    std::fs::write(dir.path().join("payrecon.toml"), config).unwrap();
    (sandbox, dir, port)
}

/// Runs `payrecon <args>` with the service's config and waits for it (for `import`).
pub fn cli(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_payrecon"))
        .arg("--config")
        .arg(dir.join("payrecon.toml"))
        .args(args)
        .output()
        .unwrap()
}

/// Starts `payrecon run` on a prepared directory and waits until `/healthz` answers.
pub async fn start(sandbox: SandboxHandle, dir: tempfile::TempDir, port: u16) -> Service {
    let log = std::fs::File::create(dir.path().join("payrecon.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_payrecon"))
        .arg("--config")
        .arg(dir.path().join("payrecon.toml"))
        .arg("run")
        .env("RUST_LOG", "payrecon=debug")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let service = Service {
        sandbox,
        dir,
        base: format!("http://127.0.0.1:{port}"),
        http: reqwest::Client::new(),
        child,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(r) = service.http.get(service.url("/healthz")).send().await
            && r.status().is_success()
        {
            return service;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the API did not come up; log:\n{}", service.log());
}

impl Service {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("payrecon.log")).unwrap_or_default()
    }

    /// `GET` with the token; status and JSON body (Null when not JSON).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// `POST` of a JSON body with the token.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(TOKEN)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// A payment by account and order number (the API's view).
    pub async fn payment(&self, account: &str, out_trade_no: &str) -> Value {
        let (status, body) = self
            .get(&format!("/v1/accounts/{account}/payments/{out_trade_no}"))
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Polls the payment until its state is `state`; the time it took.
    pub async fn wait_state(
        &self,
        account: &str,
        out_trade_no: &str,
        state: &str,
        within: Duration,
    ) -> Duration {
        let start = Instant::now();
        loop {
            let p = self.payment(account, out_trade_no).await;
            if p["state"] == state {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < within,
                "{out_trade_no} is still {} after {within:?}: {p}\nlog:\n{}",
                p["state"],
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Posts raw bytes to a notification URL; status and text.
    pub async fn notify(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (u16, String) {
        let mut req = self.http.post(self.url(path)).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }
}

/// QFPay's notification signature: upper(hex(MD5(body + key))).
pub fn qfpay_sign(body: &[u8], key: &str) -> String {
    let mut h = Md5::new();
    h.update(body);
    h.update(key.as_bytes());
    hex::encode_upper(h.finalize())
}

/// An ECPay notification envelope whose `Data` is `data` encrypted with `hash_key`/`hash_iv`.
pub fn ecpay_envelope(merchant_id: &str, data: &Value, hash_key: &str, hash_iv: &str) -> Vec<u8> {
    let key = DataKey::new(hash_key.as_bytes(), hash_iv.as_bytes()).unwrap();
    ResponseEnvelope {
        merchant_id: merchant_id.to_string(),
        rp_header: payrecon::gateway::ecpay::envelope::RpHeader {
            timestamp: chrono::Utc::now().timestamp(),
        },
        trans_code: 1,
        trans_msg: "Success".into(),
        data: encrypt_json(data, &key),
    }
    .to_json()
    .into_bytes()
}

/// Runs `sql` on the ledger file (before the daemon starts); the rows it changed.
pub async fn ledger_sql(dir: &Path, sql: &str) -> u64 {
    let url = format!("sqlite://{}", ledger_path(dir).display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let done = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    done.rows_affected()
}

/// Sets a payment's next check `secs` seconds ahead, in the ledger file (before the daemon
/// starts).
pub async fn schedule_later(dir: &Path, out_trade_no: &str, secs: i64) {
    let at = payrecon::ledger::time::to_db(chrono::Utc::now() + chrono::Duration::seconds(secs));
    let sql =
        format!("UPDATE payments SET next_check_at = '{at}' WHERE out_trade_no = '{out_trade_no}'");
    assert_eq!(ledger_sql(dir, &sql).await, 1);
}

/// `minutes_ago` as RFC 3339.
pub fn rfc3339(minutes_ago: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::minutes(minutes_ago)).to_rfc3339()
}

/// Hong Kong local time `minutes_ago`, as QFPay writes `txdtm`.
pub fn hk_local(minutes_ago: i64) -> String {
    let hk = chrono::FixedOffset::east_opt(8 * 3600).unwrap();
    (chrono::Utc::now() - chrono::Duration::minutes(minutes_ago))
        .with_timezone(&hk)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// `payrecon import` of one JSON record, before the daemon starts.
pub fn import(dir: &Path, record: Value) {
    let file = dir.join("one.jsonl");
    std::fs::write(&file, format!("{record}\n")).unwrap();
    let out = cli(dir, &["import", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Event kinds of a payment as the API shows them.
pub fn event_kinds(p: &Value) -> Vec<String> {
    p["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

/// Checks `value` against the component schema `name` of the generated OpenAPI description:
/// every required property present, no property the schema does not name, types as declared
/// (`$ref`, `allOf`, arrays and nullable types followed). Panics with the path that differs.
pub fn conforms(value: &Value, name: &str) {
    let doc = serde_json::to_value(payrecon::api::openapi()).unwrap();
    let schema = json_ref(&doc, &format!("#/components/schemas/{name}"));
    check(&doc, value, schema, name);
}

fn json_ref<'a>(doc: &'a Value, r: &str) -> &'a Value {
    let path = r.trim_start_matches("#/");
    path.split('/').fold(doc, |v, k| &v[k])
}

/// The schema's object properties and required names, `allOf` parts merged.
fn object_parts(doc: &Value, schema: &Value) -> (serde_json::Map<String, Value>, Vec<String>) {
    let schema = match schema.get("$ref") {
        Some(r) => json_ref(doc, r.as_str().unwrap()),
        None => schema,
    };
    let mut props = serde_json::Map::new();
    let mut required = Vec::new();
    if let Some(parts) = schema.get("allOf").and_then(Value::as_array) {
        for part in parts {
            let (p, r) = object_parts(doc, part);
            props.extend(p);
            required.extend(r);
        }
    }
    if let Some(p) = schema.get("properties").and_then(Value::as_object) {
        props.extend(p.clone());
    }
    if let Some(r) = schema.get("required").and_then(Value::as_array) {
        required.extend(r.iter().map(|s| s.as_str().unwrap().to_string()));
    }
    (props, required)
}

fn check(doc: &Value, value: &Value, schema: &Value, at: &str) {
    if let Some(r) = schema.get("$ref") {
        return check(doc, value, json_ref(doc, r.as_str().unwrap()), at);
    }
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ if schema.get("allOf").is_some() => vec!["object"],
        _ => return,
    };
    let actual = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    assert!(
        types.contains(&actual) || (actual == "integer" && types.contains(&"number")),
        "{at}: {actual} where the schema says {types:?}"
    );
    match value {
        Value::Object(obj) => {
            let (props, required) = object_parts(doc, schema);
            if props.is_empty() && required.is_empty() {
                return; // a free-form object (evidence)
            }
            for r in &required {
                assert!(obj.contains_key(r), "{at}: required {r} is missing");
            }
            for (k, v) in obj {
                let s = props
                    .get(k)
                    .unwrap_or_else(|| panic!("{at}: {k} is not in the schema"));
                check(doc, v, s, &format!("{at}.{k}"));
            }
        }
        Value::Array(items) => {
            if let Some(item) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    check(doc, v, item, &format!("{at}[{i}]"));
                }
            }
        }
        _ => {}
    }
}
