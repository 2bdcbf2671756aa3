#!/usr/bin/env bash
# The test suite (the README's test command): `cargo test` with a PostgreSQL server for the
# PostgreSQL tests. PAYRECON_TEST_PG_URL names a server to use (a role that may create
# databases); without it this script starts a throw-away one (tests/pg/server.sh) and stops it
# afterwards. Arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PAYRECON_TEST_PG_URL:-}" ]; then
    pgdir=$(mktemp -d)
    trap 'bash tests/pg/server.sh stop "$pgdir" || true; rm -rf "$pgdir"' EXIT
    PAYRECON_TEST_PG_URL=$(bash tests/pg/server.sh start "$pgdir")
    export PAYRECON_TEST_PG_URL
    echo "PostgreSQL for the tests: $PAYRECON_TEST_PG_URL"
fi
cargo test "$@"
