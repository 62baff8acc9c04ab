#!/usr/bin/env bash
# Programs the integration tests start themselves: PostgreSQL (Debian's package; the tests run
# initdb/pg_ctl on a temporary folder and a free loopback port). The Chroma server is the
# `chroma` command of the chromadb package, installed with the project.
set -euo pipefail
if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    else
        echo "PostgreSQL is not installed and cannot be installed here: its tests will be skipped" >&2
    fi
fi
