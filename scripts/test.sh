#!/usr/bin/env bash
# Run the whole test suite against real SoftHSM2, SQLite, PostgreSQL and Mosquitto.
# Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$ROOT"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if ! port_open 5432; then
    if [ "$(id -u)" = 0 ] && command -v pg_ctlcluster >/dev/null; then
        echo "test: starting PostgreSQL" >&2
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
    else
        echo "test: PostgreSQL is not listening on 127.0.0.1:5432 (trust auth, database 'test' expected)" >&2
    fi
fi
if ! port_open 1883; then
    if command -v mosquitto >/dev/null; then
        echo "test: starting Mosquitto" >&2
        mosquitto -d -c /etc/mosquitto/mosquitto.conf
    else
        echo "test: Mosquitto is not listening on 127.0.0.1:1883" >&2
    fi
fi
for _ in $(seq 50); do port_open 5432 && port_open 1883 && break; sleep 0.2; done

exec python -m pytest "$@"
