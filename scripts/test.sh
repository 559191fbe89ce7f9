#!/usr/bin/env bash
# Runs the whole test suite: unit tests, and integration tests against the built-in Jamf
# simulator over real HTTP, into SQLite and a real PostgreSQL server.
# PostgreSQL is found through TEST_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres);
# when nothing answers there, this script starts the local cluster, or installs one (Debian).
set -euo pipefail
cd "$(dirname "$0")/.."

export TEST_DATABASE_URL="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

pg_up() {
  if command -v pg_isready >/dev/null 2>&1; then
    pg_isready -q -h 127.0.0.1 -p 5432
  else
    (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null
  fi
}

ensure_postgres() {
  case "$TEST_DATABASE_URL" in
    *127.0.0.1:5432*|*localhost:5432*) ;;
    *) return 0 ;; # a server configured elsewhere is the caller's business
  esac
  pg_up && return 0
  echo "PostgreSQL is not answering on 127.0.0.1:5432; starting it" >&2
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "PostgreSQL is not installed; install it or set TEST_DATABASE_URL" >&2
      exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  version="$(ls /etc/postgresql | sort -V | tail -n 1)"
  conf="/etc/postgresql/$version/main"
  # Tests connect over TCP as the postgres user without a password.
  if ! grep -q "jamf-sync test trust" "$conf/pg_hba.conf" 2>/dev/null; then
    sed -i '1i host all all 127.0.0.1/32 trust # jamf-sync test trust' "$conf/pg_hba.conf" || true
  fi
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do
    pg_up && return 0
    sleep 1
  done
  echo "PostgreSQL did not start" >&2
  exit 1
}

ensure_postgres
# The OpenAPI contract test reads Jamf's schema from ../shared/jamf-openapi unless told otherwise.
cargo test --locked --all-targets
