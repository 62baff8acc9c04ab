#!/usr/bin/env bash
# Programs the integration tests start themselves: PostgreSQL (Debian's package; the tests run
# initdb/pg_ctl on a temporary folder and a free loopback port). The Chroma server is the
# `chroma` command of the chromadb package, installed with the project. Never fails: where
# PostgreSQL cannot be installed, its tests are skipped with the reason.
set -uo pipefail
if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
        && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; then
        echo "installed PostgreSQL for the integration tests"
    else
        echo "PostgreSQL is not installed and could not be installed: its tests will be skipped" >&2
    fi
fi
exit 0
