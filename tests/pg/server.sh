#!/usr/bin/env bash
# A throw-away PostgreSQL server on loopback for the tests (issue 18): its own data directory,
# a free port, trust authentication for the local test role, nothing installed as a service.
#
#   bash tests/pg/server.sh start DIR   # prints the URL: postgres://payrecon@127.0.0.1:PORT/postgres
#   bash tests/pg/server.sh stop DIR
#
# Needs PostgreSQL's server binaries (Debian: apt-get install postgresql; any major version
# the tests name in docs/OPERATIONS.md). As root, the server runs as the `postgres` user (the
# package creates it): PostgreSQL refuses to run as root.
set -euo pipefail
cmd=${1:?start or stop}
dir=${2:?data directory}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    echo "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb):" \
        "apt-get install postgresql" >&2
    exit 1
fi
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
case $cmd in
start)
    mkdir -p "$dir"
    if [ "$(id -u)" -eq 0 ]; then chown postgres: "$dir"; fi
    as_owner "$bin/initdb" -D "$dir/data" -U payrecon --auth=trust -E UTF8 --no-sync > "$dir/initdb.log"
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start \
        -o "-h 127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=200" > /dev/null
    echo "postgres://payrecon@127.0.0.1:$port/postgres"
    ;;
stop)
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop > /dev/null
    ;;
*)
    echo "usage: $0 start|stop DIR" >&2
    exit 2
    ;;
esac
