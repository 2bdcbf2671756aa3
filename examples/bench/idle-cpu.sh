#!/bin/bash
# Idle CPU of `payrecon run` on a 1,000,000-row ledger with nothing due (docs/PERFORMANCE.md,
# "Results after issue 16"): the default schedule (a pass every 30 s), the dev accounts of
# config/dev.toml (nothing listens at their base URLs; no call is made when nothing is due).
#
#   cargo build --release --bin payrecon && examples/bench/idle-cpu.sh [SECONDS]
#
# Prints the CPU clock ticks the daemon used over SECONDS (default 60) after a 10 s settle,
# and its peak RSS. Needs sqlite3.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
bin=$repo/target/release/payrecon
seconds=${1:-60}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed "s#path = \"dev-ledger.db\"#path = \"$work/ledger.db\"#" "$repo/config/dev.toml" > "$work/idle.toml"
"$bin" --config "$work/idle.toml" migrate > /dev/null
sqlite3 "$work/ledger.db" <<'SQL'
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000)
INSERT INTO payments (account, provider, out_trade_no, provider_ref, amount, currency, state,
                      provider_code, created_at, registered_at, updated_at)
SELECT 'hk', 'qfpay', printf('H%08d', i), printf('2026%022d', i), 100 + i % 1000, 'HKD',
       CASE WHEN i % 10 = 0 THEN 'failed' ELSE 'succeeded' END, '0000',
       strftime('%Y-%m-%dT%H:%M:%fZ', 1730000000 + i * 30, 'unixepoch'), 'x', 'x'
FROM n;
SQL
echo "ledger: $(stat -c %s "$work/ledger.db") bytes, 1,000,000 settled payments"
"$bin" --config "$work/idle.toml" run > "$work/run.log" 2>&1 &
pid=$!
sleep 10
before=$(awk '{print $14 + $15}' "/proc/$pid/stat")
sleep "$seconds"
after=$(awk '{print $14 + $15}' "/proc/$pid/stat")
echo "cpu: $((after - before)) ticks of 1/$(getconf CLK_TCK) s over $seconds s; $(grep VmHWM "/proc/$pid/status")"
kill -TERM "$pid"
wait "$pid" || true
