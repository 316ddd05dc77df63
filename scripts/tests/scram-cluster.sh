#!/usr/bin/env bash
# The database set-up of scripts/stack.sh and scripts/test.sh under Debian's
# default PostgreSQL authentication. Makes a throwaway cluster with
# pg_createcluster's defaults (peer on the local socket, scram-sha-256 on
# 127.0.0.1; checked), with a database `birdsong` made by the postgres user
# before the role existed, then runs the role provisioning of
# scripts/services.sh against it and checks that
#   - password-less and wrong-password URLs are refused,
#   - the provisioned URL (password saved with mode 600) connects as birdsong,
#     owns the old database and its objects and may create databases,
#   - birdsong-migrate applies the schema through it to the old database and
#     to one it creates,
#   - provisioning again changes nothing,
#   - with TLS required on 127.0.0.1 (a CA and server certificate made
#     here), birdsong-migrate connects with sslmode=require and with
#     verify-full against that CA, and is refused with verify-full against
#     another CA and with sslmode=disable,
#   - scripts/test.sh and scripts/stack.sh up, failing part-way, stop the
#     PostgreSQL they started.
# The cluster is dropped on exit, whatever happens.
#
#   scripts/tests/scram-cluster.sh [BIRDSONG_MIGRATE_BINARY]
#
# Without a binary argument it uses $CARGO_TARGET_DIR/debug/birdsong-migrate
# if that exists, else checks with psql alone. Not root, or no
# pg_createcluster: prints that it skipped and why, and exits 0.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/services.sh
source scripts/services.sh

skip() { echo "scram-cluster: skipped: $*"; exit 0; }
fail() { echo "scram-cluster: FAILED: $*" >&2; exit 1; }
ok() { echo "scram-cluster: ok: $*"; }

is_root || skip "not root (creating a PostgreSQL cluster needs root)"
command -v pg_createcluster >/dev/null 2>&1 || skip "no pg_createcluster (Debian's postgresql-common is not installed)"

migrate=${1:-${CARGO_TARGET_DIR:-target}/debug/birdsong-migrate}
[ -x "$migrate" ] || migrate=''

version=''
for v in /usr/lib/postgresql/*/bin/postgres; do
  [ -e "$v" ] || continue
  v=${v#/usr/lib/postgresql/}; v=${v%%/*}
  if [ -z "$version" ] || [ "${v%%.*}" -gt "${version%%.*}" ]; then version=$v; fi
done
[ -n "$version" ] || skip "no PostgreSQL server installed"

port=''
for p in $(seq 5439 5459); do
  if ! answers 127.0.0.1 "$p" && [ -z "$(cluster_on_port "$p")" ]; then port=$p; break; fi
done
[ -n "$port" ] || fail "no free port in 5439-5459"

name="birdsong_scram_$$"
work=$(mktemp -d)
cleanup() {
  pg_dropcluster --stop "$version" "$name" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

started=$(date +%s)
pg_createcluster -p "$port" "$version" "$name" >/dev/null
hba="/etc/postgresql/$version/$name/pg_hba.conf"
grep -Eq '^host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+scram-sha-256' "$hba" \
  || fail "$hba has no scram-sha-256 line for 127.0.0.1; not Debian's default"
if grep -Ev '^[[:space:]]*(#|$)' "$hba" | grep -Eqw 'trust|password|md5'; then
  fail "$hba allows trust, plain-password or md5 authentication; not Debian's default"
fi
pg_ctlcluster --skip-systemctl-redirect "$version" "$name" start
wait_answers 127.0.0.1 "$port" 30 || fail "the cluster did not answer on port $port"
ok "cluster $version/$name on port $port with Debian's default authentication"

# No password from the environment or a password file.
unset PGPASSWORD PGUSER PGDATABASE PGHOST PGPORT
export PGPASSFILE="$work/no-pgpass" PGCONNECT_TIMEOUT=10
refused() { # url
  local out
  if out=$(psql "$1" -w -XAtq -c 'SELECT 1' 2>&1); then
    fail "$1 was accepted"
  fi
  case $out in *password*) ;; *) fail "$1 was refused for another reason: $out" ;; esac
}
refused "postgres://postgres@127.0.0.1:$port/postgres"
ok "the configuration's default URL (no password) is refused"

# A database from before the role: made and filled by the postgres user.
as_postgres createdb -p "$port" birdsong
as_postgres psql -p "$port" -d birdsong -X -q -v ON_ERROR_STOP=1 -c \
  'CREATE TABLE legacy (id int GENERATED ALWAYS AS IDENTITY, v text);
   CREATE VIEW legacy_view AS SELECT v FROM legacy;
   CREATE SEQUENCE legacy_counter;'

file="$work/config/database.env"
url=$(provision_database_role "$port" "$file")
[ "$(stat -c %a "$file")" = 600 ] || fail "$file is mode $(stat -c %a "$file"), not 600"
case $url in "postgres://birdsong:"?*"@127.0.0.1:$port/birdsong") ;; *) fail "unexpected URL shape: ${url%%:*}…" ;; esac
ok "role provisioned, URL saved with mode 600"

refused "postgres://birdsong@127.0.0.1:$port/postgres"
refused "postgres://birdsong:wrong@127.0.0.1:$port/postgres"
ok "the role without its password is refused"

sql() { psql "$url" -w -XAtq -v ON_ERROR_STOP=1 "$@"; }
[ "$(sql -c 'SELECT current_user')" = birdsong ] || fail "not connected as birdsong"
owners=$(sql -c "SELECT string_agg(DISTINCT pg_get_userbyid(relowner), ',') FROM pg_class
                  WHERE relnamespace = 'public'::regnamespace")
[ "$owners" = birdsong ] || fail "objects of the old database are owned by $owners"
sql -c "ALTER TABLE legacy ADD COLUMN w int; CREATE TABLE fresh (x int); SELECT nextval('legacy_counter')" >/dev/null
sql -c 'CREATE DATABASE birdsong_scram_probe' -c 'DROP DATABASE birdsong_scram_probe'
ok "connects as birdsong over TCP with scram, owns the old database and its objects, may create databases"

if [ -n "$migrate" ]; then
  BIRDSONG_DATABASE_URL="$url" "$migrate" >"$work/migrate.log" 2>&1 || { cat "$work/migrate.log" >&2; fail "birdsong-migrate failed on the old database"; }
  BIRDSONG_DATABASE_URL="${url%/*}/birdsong_new" "$migrate" >>"$work/migrate.log" 2>&1 || { cat "$work/migrate.log" >&2; fail "birdsong-migrate failed to create and migrate a new database"; }
  for db in birdsong birdsong_new; do
    n=$(psql "${url%/*}/$db" -w -XAtq -c 'SELECT count(*) FROM _sqlx_migrations WHERE success')
    [ "$n" -gt 0 ] || fail "no migration recorded in $db"
  done
  ok "birdsong-migrate ($migrate) applied the schema to the old database and created and migrated another"
else
  echo "scram-cluster: no birdsong-migrate binary; checked with psql only"
fi

again=$(provision_database_role "$port" "$file")
[ "$again" = "$url" ] || fail "provisioning again changed the URL"
[ "$(sql -c 'SELECT 1')" = 1 ] || fail "the URL stopped working after provisioning again"
ok "provisioning again keeps the role and its password"

# PostgreSQL over TLS: the server gets a certificate for 127.0.0.1 and
# localhost from a CA made here, and TCP connections without TLS are
# rejected, so every connection that succeeds below is encrypted.
if [ -n "$migrate" ] && command -v openssl >/dev/null 2>&1; then
  tls="$work/tls"
  mkdir -p "$tls"
  make_ca() { # name
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=birdsong test $1" \
      -keyout "$tls/$1.key" -out "$tls/$1.crt" >/dev/null 2>&1
  }
  make_ca ca
  make_ca other-ca
  openssl req -newkey rsa:2048 -nodes -subj /CN=localhost \
    -keyout "$tls/server.key" -out "$tls/server.csr" >/dev/null 2>&1
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$tls/server.ext"
  openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" -CAcreateserial \
    -days 2 -extfile "$tls/server.ext" -out "$tls/server.crt" >/dev/null 2>&1
  data=$(as_postgres psql -p "$port" -XAtq -c 'SHOW data_directory')
  install -o postgres -g postgres -m 600 "$tls/server.key" "$data/birdsong-test.key"
  install -o postgres -g postgres -m 644 "$tls/server.crt" "$data/birdsong-test.crt"
  conf="/etc/postgresql/$version/$name/postgresql.conf"
  printf "ssl = on\nssl_cert_file = '%s'\nssl_key_file = '%s'\n" \
    "$data/birdsong-test.crt" "$data/birdsong-test.key" >>"$conf"
  sed -i -E 's/^host([[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1\/32)/hostssl\1/' "$hba"
  sed -i "1i hostnossl all all 127.0.0.1/32 reject" "$hba"
  pg_ctlcluster --skip-systemctl-redirect "$version" "$name" reload
  sleep 1
  migrate_with() { # query-string log
    BIRDSONG_DATABASE_URL="$url?$1" "$migrate" >"$work/$2.log" 2>&1
  }
  migrate_with "sslmode=disable" tls-disable \
    && fail "birdsong-migrate connected without TLS to a server that requires it"
  grep -q 'no encryption' "$work/tls-disable.log" || { cat "$work/tls-disable.log" >&2; fail "sslmode=disable was refused for another reason"; }
  migrate_with "sslmode=require" tls-require \
    || { cat "$work/tls-require.log" >&2; fail "birdsong-migrate failed with sslmode=require"; }
  migrate_with "sslmode=verify-full&sslrootcert=$tls/ca.crt" tls-verify \
    || { cat "$work/tls-verify.log" >&2; fail "birdsong-migrate failed with sslmode=verify-full and the server's CA"; }
  migrate_with "sslmode=verify-full&sslrootcert=$tls/other-ca.crt" tls-wrong-ca \
    && fail "birdsong-migrate accepted a server certificate from a CA it was not given"
  grep -qi 'certificate\|issuer' "$work/tls-wrong-ca.log" || { cat "$work/tls-wrong-ca.log" >&2; fail "verify-full with another CA failed for another reason"; }
  ok "over TLS: sslmode=require and verify-full connect; another CA and sslmode=disable are refused"
else
  echo "scram-cluster: TLS not checked (needs the birdsong-migrate binary and openssl)"
fi

# A failed set-up stops what it started: with this cluster stopped, both
# scripts start it for their database URL, fail on a broker that refuses
# connections, and stop it again.
pg_ctlcluster --skip-systemctl-redirect "$version" "$name" stop
for command in test.sh "stack.sh up"; do
  read -r -a argv <<<"$command"
  if BIRDSONG_DATABASE_URL="$url" BIRDSONG_AMQP_URL='amqp://guest:guest@127.0.0.2:1/%2f' \
    BIRDSONG_STACK_DIR="$work/stack" "scripts/${argv[0]}" "${argv[@]:1}" >"$work/failed.log" 2>&1; then
    fail "scripts/$command succeeded without a broker"
  fi
  if ! grep -q "starting PostgreSQL $version/$name" "$work/failed.log" \
    || ! grep -q "stopping PostgreSQL $version/$name" "$work/failed.log"; then
    cat "$work/failed.log" >&2
    fail "scripts/$command did not start and stop the cluster"
  fi
  read -r _ _ status <<<"$(cluster_on_port "$port")"
  [ "$status" = down ] || fail "the cluster is $status after scripts/$command failed"
done
ok "test.sh and stack.sh up stop the PostgreSQL they started when the set-up fails"

echo "scram-cluster: passed in $(( $(date +%s) - started )) s"
