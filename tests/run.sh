#!/usr/bin/env bash
# The test suite (the README's test command): `cargo test` with a PostgreSQL server for the
# PostgreSQL tests. PAYRECON_TEST_PG_URL names a server to use (a role that may create roles and
# databases); without it this script starts a throw-away one (tests/pg/server.sh) and stops it
# afterwards.
#
# Without arguments: the whole suite (the engine tests on SQLite, the ledger contract tests on
# both stores), then the engine, money-safety, lane and crash/concurrency tests below again with
# PAYRECON_TEST_STORE=postgres: every harness, config and binary they start gets a fresh
# PostgreSQL database of the server instead of a SQLite file.
# With arguments: `cargo test ARGS` once, on the store PAYRECON_TEST_STORE names (sqlite by
# default), e.g. `PAYRECON_TEST_STORE=postgres bash tests/run.sh --test engine_passes`.
set -euo pipefail
cd "$(dirname "$0")/.."

# The test binaries that run on PostgreSQL too (docs/ARCHITECTURE.md §8 says which are left out
# and why: they test the SQLite file itself, SQLite's locking or its migrations).
PG_TESTS=(
    engine_passes
    engine_sweep
    replica_share
    review13_regressions
    money_safety
    review_regressions
    review17b
    cli_engine
    stop_signals
    daemon_notify
    metrics
    lanes
    crash_kill
    concurrency
    fault_soak
)

if [ -z "${PAYRECON_TEST_PG_URL:-}" ]; then
    pgdir=$(mktemp -d)
    trap 'bash tests/pg/server.sh stop "$pgdir" || true; rm -rf "$pgdir"' EXIT
    PAYRECON_TEST_PG_URL=$(bash tests/pg/server.sh start "$pgdir")
    export PAYRECON_TEST_PG_URL
    echo "PostgreSQL for the tests: $PAYRECON_TEST_PG_URL"
fi

if [ $# -gt 0 ]; then
    cargo test "$@"
    exit
fi

PAYRECON_TEST_STORE=sqlite cargo test
echo "== the engine, money-safety, lane and crash/concurrency tests on PostgreSQL: ${PG_TESTS[*]}"
started=$SECONDS
PAYRECON_TEST_STORE=postgres cargo test "${PG_TESTS[@]/#/--test=}"
echo "== on PostgreSQL in $((SECONDS - started)) s"
