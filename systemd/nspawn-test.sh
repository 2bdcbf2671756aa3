#!/usr/bin/env bash
# payrecon under a real systemd: boots this machine's root as a throw-away container, installs
# payrecon from its .deb, configures it as docs/OPERATIONS.md says against `payrecon sandbox`
# (inside the container, on loopback), and checks what the unit files promise:
#
#   - `systemctl start payrecon` returns (READY=1), the unit is active, the watchdog is pinged,
#     a pass completes and reaches the gateway, `systemctl stop` ends it with exit 0;
#   - the reconcile timer fires and its one-off service succeeds;
#   - a broken configuration fails the unit with exit 78, no restart (NRestarts=0), and the
#     reason at `journalctl -p err`.
#
# The container: overlayfs with / as the read-only lower layer and a tmpfs upper layer, booted
# by systemd-nspawn with a private network (loopback only); nothing on the host changes and
# everything is gone when the script ends. Needs root; installs systemd-container with apt-get
# when systemd-nspawn is missing. Run by .ci/run; on its own: bash systemd/nspawn-test.sh
#
# A machine that cannot boot the container (no root, no overlayfs, no nspawn, no systemd in the
# root) fails this script loudly. PAYRECON_SKIP_SYSTEMD_TEST=1 turns that into a loud skip; it
# never passes silently. PAYRECON_DEB=path uses a built package instead of building one.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$SECONDS
CHECKS=0
MACHINE="payrecon-test-$$"
SANDBOX="127.0.0.1:18080"

cannot_run() {
    echo "!! REAL-SYSTEMD TEST NOT RUN: $*" >&2
    if [ "${PAYRECON_SKIP_SYSTEMD_TEST:-0}" = 1 ]; then
        echo "!! SKIPPED (PAYRECON_SKIP_SYSTEMD_TEST=1): the units were NOT tested under a real systemd" >&2
        exit 0
    fi
    echo "FAIL: this machine cannot boot the test container; set PAYRECON_SKIP_SYSTEMD_TEST=1 to skip" >&2
    exit 1
}

ok() {
    CHECKS=$((CHECKS + 1))
    echo "ok: $*"
}

# --- prerequisites ---------------------------------------------------------------------------
[ "$(id -u)" -eq 0 ] || cannot_run "needs root (mounts and systemd-nspawn)"
[ -x /lib/systemd/systemd ] || cannot_run "no systemd in this machine's root (/lib/systemd/systemd) to boot"
if ! command -v systemd-nspawn >/dev/null 2>&1; then
    echo "systemd-nspawn not found; installing systemd-container"
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q systemd-container; } ||
        cannot_run "systemd-nspawn is missing and apt-get could not install systemd-container"
fi

deb="${PAYRECON_DEB:-}"
if [ -z "$deb" ]; then
    bash packaging/build-deb.sh
    deb="$(ls -t target/debian/payrecon_*.deb | head -n 1)"
fi
deb="$(realpath "$deb")"
echo "package: $deb ($(du -h "$deb" | cut -f1))"

# --- the container ---------------------------------------------------------------------------
work="$(mktemp -d /tmp/payrecon-nspawn.XXXXXX)"
root="$work/root"
nspawn_pid=""
cleanup() {
    if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
        kill "$nspawn_pid" 2>/dev/null || true # nspawn halts the container on SIGTERM
        for _ in $(seq 100); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$nspawn_pid" 2>/dev/null || true
    fi
    umount "$root" 2>/dev/null || umount -l "$root" 2>/dev/null || true
    umount "$work" 2>/dev/null || umount -l "$work" 2>/dev/null || true
    rmdir "$work" 2>/dev/null || true
}
trap cleanup EXIT
mount -t tmpfs -o size=4g tmpfs "$work" || cannot_run "cannot mount a tmpfs"
mkdir "$work/upper" "$work/work" "$root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$work/upper,workdir=$work/work" "$root" ||
    cannot_run "cannot mount an overlay with / as the lower layer"
# A fresh machine: its own machine id, and no payrecon state the host may have.
rm -rf "$root/etc/machine-id" "$root/etc/payrecon" "$root/var/lib/payrecon" "$root/var/lib/private/payrecon"
cp "$deb" "$root/root/payrecon.deb"

systemd-nspawn -D "$root" --boot --private-network --machine="$MACHINE" --register=no \
    --keep-unit --console=passive >"$work/console.log" 2>&1 &
nspawn_pid=$!
leader=""
for _ in $(seq 50); do
    # The container's PID 1, once nspawn's child has become systemd.
    leader="$(pgrep -P "$nspawn_pid" -x systemd | head -n 1 || true)"
    [ -n "$leader" ] && break
    kill -0 "$nspawn_pid" 2>/dev/null || break
    sleep 0.2
done
[ -n "$leader" ] || cannot_run "systemd-nspawn did not start the container: $(cat "$work/console.log")"
ctr() { nsenter -t "$leader" -m -u -i -n -p -C -- "$@"; }
# Until its bus is up, systemctl cannot even ask; then --wait waits for the boot to finish.
state=""
for _ in $(seq 90); do
    state="$(timeout 90 nsenter -t "$leader" -m -u -i -n -p -C -- systemctl is-system-running --wait 2>&1 || true)"
    case "$state" in running | degraded | maintenance | stopping | offline) break ;; esac
    kill -0 "$nspawn_pid" 2>/dev/null || break
    sleep 1
done
case "$state" in
running | degraded) ;;
*) cannot_run "the container did not boot (state: ${state:-none}): $(tail -n 20 "$work/console.log")" ;;
esac
echo "container $MACHINE booted ($state), $((SECONDS - started)) s after the start (package build included)"

fail() {
    echo "FAIL: $*" >&2
    echo "--- journal of the payrecon units (last 60 lines)" >&2
    ctr journalctl -u payrecon -u payrecon-reconcile -u payrecon-sandbox --no-pager -n 60 >&2 || true
    exit 1
}
prop() { ctr systemctl show -P "$2" "$1"; }
# Waits up to $1 seconds for the command after it to succeed.
wait_for() {
    local limit=$1
    shift
    local until=$((SECONDS + limit))
    until "$@"; do
        [ "$SECONDS" -lt "$until" ] || return 1
        sleep 1
    done
}
journal_has() { ctr journalctl -u "$1" -o cat --no-pager | grep -q -- "$2"; }

# --- install from the package, configure as docs/OPERATIONS.md says -------------------------
ctr env DEBIAN_FRONTEND=noninteractive apt-get install -y -q /root/payrecon.deb >"$work/apt.log" 2>&1 ||
    { cat "$work/apt.log"; fail "apt-get install of the package failed"; }
for f in /usr/bin/payrecon /usr/lib/systemd/system/payrecon.service \
    /usr/lib/systemd/system/payrecon-reconcile.service /usr/lib/systemd/system/payrecon-reconcile.timer \
    /etc/payrecon/payrecon.toml /usr/share/doc/payrecon/OPERATIONS.md /usr/share/man/man1/payrecon.1.gz \
    /usr/share/bash-completion/completions/payrecon; do
    ctr test -e "$f" || fail "the package did not install $f"
done
ctr dpkg-query -W -f='${Conffiles}' payrecon | grep -q /etc/payrecon/payrecon.toml ||
    fail "/etc/payrecon/payrecon.toml is not a conffile"
[ "$(ctr stat -c %a /etc/payrecon/credentials)" = 700 ] || fail "/etc/payrecon/credentials is not mode 0700"
ok "installed from $(basename "$deb"): binary, units, timer, conffile, docs, man page, completions"

# The accounts of the example, pointed at the sandbox; its published test credentials.
ctr sed -i \
    -e "s|^base_url = .*|base_url = \"http://$SANDBOX\"|" \
    -e 's|^app_code = .*|app_code = "DEVAPPCODE0000000000000000000000"|' \
    /etc/payrecon/payrecon.toml
ctr sh -c 'umask 077
    printf "%s" DEVCLIENTKEY00000000000000000000 > /etc/payrecon/credentials/hk-key
    printf "%s" pwFHCqoQZGmho4w6 > /etc/payrecon/credentials/tw-hash-key
    printf "%s" EkRm7iFT261dpevs > /etc/payrecon/credentials/tw-hash-iv'
# The API as docs/OPERATIONS.md §8 turns it on: the token as a credential of both units.
ctr sh -c 'umask 077; printf "%s" nspawn-api-token-0123456789 > /etc/payrecon/credentials/api-token'
ctr sed -i -e 's|^# \[api\]|[api]|' -e 's|^# listen = |listen = |' -e 's|^# token_file = |token_file = |' \
    /etc/payrecon/payrecon.toml
for unit in payrecon payrecon-reconcile; do
    ctr mkdir -p "/etc/systemd/system/$unit.service.d"
    ctr sh -c "printf '[Service]\nLoadCredential=api-token:/etc/payrecon/credentials/api-token\n' \
        > /etc/systemd/system/$unit.service.d/api.conf"
done
ctr systemctl daemon-reload
admin() { ctr env CREDENTIALS_DIRECTORY=/etc/payrecon/credentials payrecon --config /etc/payrecon/payrecon.toml "$@"; }
admin config check >/dev/null || fail "config check refused the configuration"
ctr systemd-run --quiet --unit=payrecon-sandbox /usr/bin/payrecon sandbox --listen "$SANDBOX" --qfpay-records 20
wait_for 20 ctr bash -c "exec 3<>/dev/tcp/${SANDBOX%:*}/${SANDBOX#*:}" 2>/dev/null ||
    fail "the sandbox does not listen on $SANDBOX"

# --- the daemon --------------------------------------------------------------------------------
ctr systemctl start payrecon || fail "systemctl start payrecon failed"
[ "$(prop payrecon ActiveState)" = active ] || fail "payrecon is not active after start"
ok "systemctl start payrecon returned after READY=1; the unit is active (Type=notify)"
wait_for 30 journal_has payrecon "reconcile pass completed" || fail "no completed pass in the journal"
ok "a reconcile pass completed (journal)"
[ "$(ctr stat -c %a /var/lib/private/payrecon/ledger.db)" = 600 ] || fail "the ledger is not mode 0600"
admin track --account hk --out-trade-no NSPAWN1 --amount 1000 --currency HKD \
    --syssn 20261122000100020000000001 >/dev/null || fail "payrecon-admin track failed"
first_ping="$(prop payrecon WatchdogTimestampMonotonic)"
checked() { admin ledger show NSPAWN1 | grep -q observed; }
# Two ticks of the 30 s schedule: a tick that meets the quarter-hourly sweep holding the
# account's lane skips it (the lane is busy), and the next one asks.
wait_for 75 checked || fail "the daemon never asked the sandbox about the tracked payment"
ok "the daemon asked the sandbox about a payment registered by hand (an observed event)"
api() { ctr curl -fsS --max-time 5 -H "Authorization: Bearer nspawn-api-token-0123456789" "http://127.0.0.1:8177$1"; }
api /healthz >/dev/null || fail "the API does not answer /healthz under systemd"
api /readyz | grep -q '"ready":true' || fail "/readyz is not ready under systemd: $(api /readyz)"
api /v1/payments | grep -q NSPAWN1 || fail "GET /v1/payments does not list the tracked payment"
api /metrics | grep -q '^payrecon_gateway_calls_total{' || fail "/metrics has no gateway call counter"
ok "the API under systemd: /healthz, /readyz ready, /v1/payments with the credential token, /metrics"
pinged() { [ "$(prop payrecon WatchdogTimestampMonotonic)" != "$first_ping" ]; }
wait_for 40 pinged || fail "no watchdog ping within 40 s (WatchdogSec=60s: every 30 s)"
ok "watchdog pinged (WatchdogTimestamp moved on)"
errors="$(ctr journalctl -u payrecon -p err -o cat --no-pager)"
[ -z "$errors" ] || fail "errors logged by a healthy daemon: $errors"
ok "nothing at priority err while healthy"
ctr systemctl stop payrecon
[ "$(prop payrecon ExecMainStatus)" = 0 ] && [ "$(prop payrecon Result)" = success ] ||
    fail "systemctl stop: exit $(prop payrecon ExecMainStatus), result $(prop payrecon Result)"
ok "systemctl stop payrecon: exit 0, result success"

# --- the timer ---------------------------------------------------------------------------------
ctr systemctl enable --now payrecon-reconcile.timer 2>/dev/null
ran() { [ "$(prop payrecon-reconcile.service ExecMainExitTimestampMonotonic)" != 0 ]; }
wait_for 90 ran || fail "the timer did not start payrecon-reconcile.service within 90 s"
[ "$(prop payrecon-reconcile.service ExecMainStatus)" = 0 ] &&
    [ "$(prop payrecon-reconcile.service Result)" = success ] ||
    fail "payrecon-reconcile.service: exit $(prop payrecon-reconcile.service ExecMainStatus)"
journal_has payrecon-reconcile "claimed" || fail "no pass summary in payrecon-reconcile's journal"
ok "the timer fired; payrecon-reconcile.service succeeded with a pass summary"
ctr systemctl disable --now payrecon-reconcile.timer 2>/dev/null

# --- a broken configuration ----------------------------------------------------------------------
ctr sed -i 's|^provider = "qfpay"|provider = "qfpya"|' /etc/payrecon/payrecon.toml
if ctr systemctl start payrecon 2>/dev/null; then fail "payrecon started with a broken configuration"; fi
[ "$(prop payrecon ExecMainStatus)" = 78 ] || fail "broken config: exit $(prop payrecon ExecMainStatus), not 78"
sleep 12 # RestartSec=10s: a restart, if one were scheduled, would have happened by now
[ "$(prop payrecon ActiveState)" = failed ] || fail "broken config: the unit is $(prop payrecon ActiveState)"
[ "$(prop payrecon NRestarts)" = 0 ] || fail "broken config: restarted $(prop payrecon NRestarts) times"
ok "a broken configuration: exit 78, unit failed, NRestarts=0"
reason="$(ctr journalctl -u payrecon -p err -o cat --no-pager)"
grep -q "configuration is invalid" <<<"$reason" && grep -q "qfpya" <<<"$reason" ||
    fail "the reason is not at priority err: $reason"
ok "the reason is at journalctl -p err: $(grep -m1 qfpya <<<"$reason" | sed 's/^ *//')"

echo "real-systemd test OK: $CHECKS checks in $((SECONDS - started)) s"
