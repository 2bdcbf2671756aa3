#!/bin/bash
# Intake through the API (docs/PERFORMANCE.md, "The service API (issue 17)"): `payrecon run`
# with [api] on loopback and one QFPay account at a `payrecon sandbox` (rate limits off; the
# account keeps QFPay's 400 calls a minute, and the lane it wakes works while intake goes on).
#
#   cargo build --release --bin payrecon && examples/bench/api-intake.sh [PAYMENTS] [BATCH]
#
# Posts PAYMENTS (default 20000) new payments in arrays of BATCH (default 1000), then 500
# single-payment requests, one request at a time from one Python client (python3, standard
# library only), and prints the rates. The client's own JSON encoding is included.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
bin=$repo/target/release/payrecon
payments=${1:-20000}
batch=${2:-1000}
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
head -c 24 /dev/urandom | base64 > "$work/token"
chmod 600 "$work/token"
cat > "$work/api.toml" <<TOML
[ledger]
path = "$work/ledger.db"
[schedule]
reconcile = "0 0 0 1 1 *"
sweep = "0 0 0 1 1 *"
[api]
listen = "127.0.0.1:18177"
token_file = "$work/token"
max_body = 4194304
[[accounts]]
name = "hk"
provider = "qfpay"
base_url = "http://127.0.0.1:18090"
app_code = "DEVAPPCODE0000000000000000000000"
client_key = "DEVCLIENTKEY00000000000000000000"
TOML
"$bin" sandbox --listen 127.0.0.1:18090 --no-rate-limits > "$work/sandbox.log" 2>&1 &
pids+=($!)
"$bin" --config "$work/api.toml" run > "$work/run.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    curl -sf http://127.0.0.1:18177/readyz > /dev/null && break
    sleep 0.1
done
python3 - "$work/token" "$payments" "$batch" <<'PY'
import datetime, json, sys, time, urllib.request
token = open(sys.argv[1]).read().strip()
total, batch = int(sys.argv[2]), int(sys.argv[3])
created = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)).isoformat()
def post(body):
    req = urllib.request.Request(
        "http://127.0.0.1:18177/v1/payments", data=json.dumps(body).encode(),
        headers={"Authorization": "Bearer " + token, "content-type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)
start, registered = time.time(), 0
for b in range(total // batch):
    answer = post([{"account": "hk", "out_trade_no": f"B{b}-{i}", "amount": 100 + i,
                    "currency": "HKD", "pay_type": "800101", "created_at": created}
                   for i in range(batch)])
    registered += sum(p["status"] == "registered" for p in answer["payments"])
took = time.time() - start
print(f"{registered} registered in {took:.2f} s: {registered / took:.0f}/s (arrays of {batch})")
start = time.time()
for i in range(500):
    post({"account": "hk", "out_trade_no": f"S{i}", "amount": 100, "currency": "HKD",
          "created_at": created})
took = time.time() - start
print(f"500 single-payment requests in {took:.2f} s: {500 / took:.0f} requests/s")
PY
