#!/usr/bin/env bash
# Builds the Debian package: target/debian/payrecon_<version>-1_<arch>.deb.
#   bash packaging/build-deb.sh
# The release binary writes its own man page and completions (hidden `generate-assets`
# subcommand, from the clap definition), then cargo-deb packs the assets listed under
# [package.metadata.deb] in Cargo.toml without building again. cargo-deb is installed if
# missing (cargo install cargo-deb --locked).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-deb >/dev/null 2>&1; then
    cargo install cargo-deb --locked
fi
cargo build --release --locked
target/release/payrecon generate-assets target/assets
# Stripped: the release profile keeps line tables (debug = "line-tables-only") for
# backtraces in development; they make the binary about 100 MB, the stripped one 18 MB (a 5 MB .deb).
deb="$(cargo deb --no-build --locked --strip 2>&1 | tail -n 1)"
echo "$deb"
ls -l "$deb"
