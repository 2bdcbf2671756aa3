#!/usr/bin/env bash
# Checks the systemd units in this directory: `systemd-analyze verify` must pass, and
# `systemd-analyze security --offline=yes` must rate each service's exposure at 1.5 or lower.
# Run by .ci/run; usable on its own: bash systemd/check.sh
#
# systemd-analyze comes with the systemd package. When it is missing, this script installs it
# with apt-get (as root, or through sudo); when that is impossible it says so and skips the
# checks (exit 0), so a machine without systemd does not fail CI for lack of the tool.
#
# `verify` refuses a unit whose ExecStart= binary does not exist, and on a build machine
# /usr/bin/payrecon does not. So the units are verified as copies, in a temporary
# directory, with /usr/bin/payrecon replaced by the payrecon binary built from this tree
# (PAYRECON_BIN, else target/release or target/debug, else `cargo build` makes one). Nothing
# else in the copies changes.
set -euo pipefail
cd "$(dirname "$0")/.."

MAX_EXPOSURE=1.5
UNITS=(payrecon.service payrecon-reconcile.service payrecon-reconcile.timer)
SERVICES=(payrecon.service payrecon-reconcile.service)

if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "systemd-analyze not found; installing the systemd package"
    SUDO=()
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo -n)
    fi
    if command -v apt-get >/dev/null 2>&1 &&
        "${SUDO[@]}" apt-get update -q &&
        DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -q systemd; then
        :
    fi
    if ! command -v systemd-analyze >/dev/null 2>&1; then
        echo "SKIPPED: systemd-analyze is not available and could not be installed;" \
            "the unit files were NOT checked"
        exit 0
    fi
fi
systemd-analyze --version | head -n 1

bin="${PAYRECON_BIN:-}"
if [ -z "$bin" ]; then
    for candidate in target/release/payrecon target/debug/payrecon; do
        if [ -x "$candidate" ]; then
            bin="$candidate"
            break
        fi
    done
fi
if [ -z "$bin" ]; then
    echo "no payrecon binary yet; cargo build"
    cargo build --quiet
    bin=target/debug/payrecon
fi
bin="$(realpath "$bin")"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
for unit in "${UNITS[@]}"; do
    sed "s|/usr/bin/payrecon|$bin|g" "systemd/$unit" >"$tmp/$unit"
done

status=0
echo "== systemd-analyze verify (ExecStart= pointing at $bin)"
# verify prints problems but may still exit 0 for some of them: any output is a failure.
if ! out="$(cd "$tmp" && systemd-analyze verify "${UNITS[@]/#/./}" 2>&1)"; then
    status=1
fi
if [ -n "$out" ]; then
    echo "$out"
    status=1
fi
# verify does not complain about a timer whose Unit= names no unit here: check that too.
for timer in systemd/*.timer; do
    target="$(sed -n 's/^Unit=//p' "$timer")"
    target="${target:-$(basename "$timer" .timer).service}"
    if [ ! -f "systemd/$target" ]; then
        echo "FAIL: $timer starts $target, which is not in systemd/"
        status=1
    fi
done
# RestartPreventExitStatus= applies to the main process only: a configuration check as a
# control process (ExecStartPre=) would be restarted on exit 78 until the start limit. The
# main process validates the configuration itself.
if grep -n '^ExecStartPre=.*config check' systemd/*.service; then
    echo "FAIL: a config check in ExecStartPre= escapes RestartPreventExitStatus=78"
    status=1
fi
if ! grep -q '^RestartPreventExitStatus=.*\b78\b' systemd/payrecon.service; then
    echo "FAIL: payrecon.service restarts on exit 78 (bad configuration)"
    status=1
fi
[ "$status" -eq 0 ] && echo "ok"

echo "== systemd-analyze security --offline=yes (threshold $MAX_EXPOSURE)"
for unit in "${SERVICES[@]}"; do
    # The real unit file, not the copy: the exposure does not depend on the binary's path.
    report="$(systemd-analyze security --offline=yes "systemd/$unit" 2>&1 || true)"
    line="$(grep -m1 'Overall exposure level' <<<"$report" || true)"
    level="$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9][0-9]*\.[0-9]*\).*/\1/p' <<<"$line")"
    if [ -z "$level" ]; then
        echo "$report"
        echo "FAIL: $unit: no 'Overall exposure level' in the report"
        status=1
        continue
    fi
    echo "$line"
    if awk -v l="$level" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(l > m) }'; then
        grep '✗' <<<"$report" || true
        echo "FAIL: $unit: exposure $level is above $MAX_EXPOSURE"
        status=1
    fi
done

if [ "$status" -eq 0 ]; then
    echo "systemd units OK"
fi
exit "$status"
