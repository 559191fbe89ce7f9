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

# PostgreSQL over TLS with a CA of our own (what an operator with an internal CA does): a CA and
# a server certificate for `localhost`, served by the local cluster, so the suite can check
# `sslmode=verify-full&sslrootcert=…`. Only for the local cluster, and only as root (the key must
# belong to the postgres user); elsewhere set TEST_PG_CA to the CA of your server's certificate.
setup_postgres_tls() {
  case "$TEST_DATABASE_URL" in
    *127.0.0.1:5432*|*localhost:5432*) ;;
    *) return 0 ;;
  esac
  [ -n "${TEST_PG_CA:-}" ] && return 0
  [ "$(id -u)" -eq 0 ] && command -v psql >/dev/null && command -v openssl >/dev/null || return 0
  local dir=/var/lib/postgresql/jamf-sync-test-tls
  if [ ! -f "$dir/server.pem" ]; then
    mkdir -p "$dir"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=jamf-sync test CA" \
      -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
      -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost\n' > "$dir/ext"
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
      -CAcreateserial -days 3650 -extfile "$dir/ext" -out "$dir/server.pem" 2>/dev/null
    chown -R postgres:postgres "$dir"
    chmod 600 "$dir/server.key" "$dir/ca.key"
  fi
  version="$(ls /etc/postgresql | sort -V | tail -n 1)"
  conf="/etc/postgresql/$version/main"
  # `localhost` may resolve to ::1 first.
  if ! grep -q "jamf-sync test trust v6" "$conf/pg_hba.conf" 2>/dev/null; then
    sed -i '1i host all all ::1/128 trust # jamf-sync test trust v6' "$conf/pg_hba.conf" || true
  fi
  psql -q -h 127.0.0.1 -U postgres -d postgres \
    -c "ALTER SYSTEM SET ssl = on" \
    -c "ALTER SYSTEM SET ssl_cert_file = '$dir/server.pem'" \
    -c "ALTER SYSTEM SET ssl_key_file = '$dir/server.key'" \
    -c "SELECT pg_reload_conf()" >/dev/null
  export TEST_PG_CA="$dir/ca.pem"
}

# A replica whose clock runs ahead is a real process under Debian's faketime (tests/it/replicas.rs).
ensure_faketime() {
  command -v faketime >/dev/null 2>&1 && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "faketime is not installed; install it (Debian package faketime)" >&2
    exit 1
  fi
  echo "installing faketime" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime >/dev/null 2>&1 || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime >/dev/null
  }
}

ensure_postgres
setup_postgres_tls
ensure_faketime
# The OpenAPI contract test reads Jamf's schema from ../shared/jamf-openapi unless told otherwise.
cargo test --locked --all-targets
