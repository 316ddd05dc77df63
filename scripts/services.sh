# shellcheck shell=bash source-path=SCRIPTDIR
# Sourced by scripts/stack.sh and scripts/test.sh: what birdsong needs on the
# machine before it builds and runs, and the database role it connects as.
#
#   ensure_services       install what is missing (Debian, as root; otherwise
#                         say exactly what to install), start local PostgreSQL
#                         and RabbitMQ if they do not answer, and export
#                         BIRDSONG_DATABASE_URL (see resolve_database_url)
#   stop_started_services stop what ensure_services started (for failure traps)
#   load_saved_database_url  export the saved role's URL if none is set
#
# The database: unless BIRDSONG_DATABASE_URL is set, birdsong connects as the
# role `birdsong` with a password over TCP to 127.0.0.1:5432, so that it works
# under Debian's default authentication (scram-sha-256 on host connections)
# and relies on no trust entry. As root the role is created (LOGIN CREATEDB: the
# tests create a database each) over the local socket as the postgres user
# (peer authentication, also a Debian default), with a generated password
# kept in $BIRDSONG_CONFIG_DIR/database.env (mode 600; default
# ~/.config/birdsong). RabbitMQ's local guest user needs nothing.

source "$(dirname "${BASH_SOURCE[0]}")/native-deps.sh"

BIRDSONG_DB_ROLE=birdsong
BIRDSONG_DB_NAME=birdsong
BIRDSONG_CONFIG_DIR="${BIRDSONG_CONFIG_DIR:-${XDG_CONFIG_HOME:-$HOME/.config}/birdsong}"
BIRDSONG_DATABASE_ENV="$BIRDSONG_CONFIG_DIR/database.env"
# The configuration's defaults (common/src/config.rs).
BIRDSONG_DEFAULT_DATABASE_URL=postgres://postgres@127.0.0.1:5432/birdsong
BIRDSONG_DEFAULT_AMQP_URL='amqp://guest:guest@127.0.0.1:5672/%2f'

# What ensure_services started, in order: "postgresql VERSION CLUSTER" or
# "rabbitmq".
STARTED_SERVICES=()

svc_say() { echo "$*" >&2; }

# "host port" of a URL such as postgres://user:pw@host:5432/db
url_host_port() { # url default-port
  local rest=${1#*://}
  rest=${rest%%/*}
  rest=${rest%%\?*}
  rest=${rest##*@}
  case $rest in
    \[*\]:*) echo "${rest%:*} ${rest##*:}" ;;
    \[*\]) echo "$rest $2" ;;
    *:*) echo "${rest%:*} ${rest##*:}" ;;
    *) echo "${rest:-127.0.0.1} $2" ;;
  esac
}

is_local_host() {
  case $1 in 127.0.0.1|localhost|::1|\[::1\]) return 0 ;; *) return 1 ;; esac
}

answers() { # host port
  local host=${1#[}; host=${host%]}
  (exec 3<>"/dev/tcp/$host/$2") 2>/dev/null
}

is_root() { [ "$(id -u)" = 0 ]; }

# A command, also where only root's PATH looks (rabbitmq-server is in /usr/sbin).
have_cmd() {
  command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]
}

# Debian or a derivative (Ubuntu) with apt-get.
is_debian() {
  command -v apt-get >/dev/null 2>&1 || return 1
  [ -r /etc/os-release ] || return 1
  local id='' id_like=''
  # shellcheck disable=SC1091
  id=$(. /etc/os-release && echo "${ID:-}") id_like=$(. /etc/os-release && echo "${ID_LIKE:-}")
  case " $id $id_like " in *" debian "*|*" ubuntu "*) return 0 ;; *) return 1 ;; esac
}

have_systemd() { [ -d /run/systemd/system ]; }

wait_answers() { # host port seconds
  local _
  for _ in $(seq $(( $3 * 2 ))); do
    answers "$1" "$2" && return 0
    sleep 0.5
  done
  return 1
}

# Runs a command as the postgres operating-system user, from a directory it
# can read.
as_postgres() {
  if command -v runuser >/dev/null 2>&1; then
    (cd / && runuser -u postgres -- "$@")
  else
    # shellcheck disable=SC2016 # expanded by the postgres user's shell
    (cd / && su -s /bin/sh -c '"$0" "$@"' postgres "$@")
  fi
}

# The Debian packages missing for building and for the local services named
# by the two URLs, one per line.
missing_packages() {
  local pg_host pg_port mq_host mq_port
  read -r pg_host pg_port <<<"$(url_host_port "${BIRDSONG_DATABASE_URL:-$BIRDSONG_DEFAULT_DATABASE_URL}" 5432)"
  read -r mq_host mq_port <<<"$(url_host_port "${BIRDSONG_AMQP_URL:-$BIRDSONG_DEFAULT_AMQP_URL}" 5672)"
  command -v cc >/dev/null 2>&1 || echo gcc
  command -v pkg-config >/dev/null 2>&1 || echo pkg-config
  have_native_deps || echo libsoxr-dev
  if is_local_host "$pg_host" && ! have_cmd pg_ctlcluster; then
    # Without a URL the scripts create their role in a local cluster, which
    # needs Debian's cluster tools even if something answers on the port.
    if [ -z "${BIRDSONG_DATABASE_URL:-}" ] || ! answers "$pg_host" "$pg_port"; then
      echo postgresql
    fi
  fi
  if is_local_host "$mq_host" && ! answers "$mq_host" "$mq_port" \
    && ! have_cmd rabbitmq-server; then
    echo rabbitmq-server
  fi
}

# Says exactly what to install, for a user who is not root or not on Debian.
explain_missing() { # packages...
  svc_say "birdsong needs these installed first (Debian package names): $*"
  if is_debian; then
    svc_say "  sudo apt-get update && sudo apt-get install -y $*"
    svc_say "or run this script as root, which installs and starts them itself."
    return
  fi
  local fedora=() brew=() mac_cc='' p
  for p in "$@"; do
    case $p in
      gcc) fedora+=(gcc); mac_cc='xcode-select --install' ;;
      pkg-config) fedora+=(pkgconf-pkg-config); brew+=(pkg-config) ;;
      libsoxr-dev) fedora+=(soxr-devel); brew+=(libsoxr) ;;
      postgresql) fedora+=(postgresql-server postgresql); brew+=(postgresql@15) ;;
      rabbitmq-server) fedora+=(rabbitmq-server); brew+=(rabbitmq) ;;
    esac
  done
  svc_say "This is not Debian, so this script installs nothing. Elsewhere:"
  svc_say "  Fedora: sudo dnf install ${fedora[*]}"
  case " $* " in *" postgresql "*) svc_say "          sudo postgresql-setup --initdb && sudo systemctl start postgresql" ;; esac
  case " $* " in *" rabbitmq-server "*) svc_say "          sudo systemctl start rabbitmq-server" ;; esac
  if [ -n "$mac_cc" ]; then svc_say "  macOS:  $mac_cc   (a C compiler)"; fi
  if [ ${#brew[@]} -gt 0 ]; then
    svc_say "  macOS:  brew install ${brew[*]}"
    case " $* " in *" postgresql "*) svc_say "          brew services start postgresql@15" ;; esac
    case " $* " in *" rabbitmq-server "*) svc_say "          brew services start rabbitmq" ;; esac
  fi
  svc_say "then set BIRDSONG_DATABASE_URL to a role with CREATEDB and a password, e.g."
  svc_say "  export BIRDSONG_DATABASE_URL=postgres://birdsong:PASSWORD@127.0.0.1:5432/birdsong"
}

install_packages() { # packages...
  svc_say "installing $* (apt-get)…"
  export DEBIAN_FRONTEND=noninteractive
  # An out-of-date package list fails the install; refresh it and retry.
  apt-get install -y -qq "$@" >/dev/null 2>&1 || {
    apt-get update -qq && apt-get install -y -qq "$@" >/dev/null
  }
}

# "version cluster status" of the local cluster listening on a port.
cluster_on_port() { # port
  command -v pg_lsclusters >/dev/null 2>&1 || return 0
  pg_lsclusters -h 2>/dev/null | awk -v p="$1" '$3 == p { print $1, $2, $4; exit }'
}

start_postgresql() { # port
  local port=$1 version='' cluster='' _status='' v
  read -r version cluster _status <<<"$(cluster_on_port "$port")"
  if [ -z "$version" ] && pg_lsclusters -h 2>/dev/null | grep -q .; then
    svc_say "no PostgreSQL cluster of this machine listens on port $port (pg_lsclusters lists the others);"
    svc_say "set BIRDSONG_DATABASE_URL to the one birdsong should use"
    return 1
  fi
  if [ -z "$version" ]; then
    # The package made no cluster (or it was dropped): make Debian's usual one.
    for v in /usr/lib/postgresql/*/bin/postgres; do
      v=${v#/usr/lib/postgresql/}; v=${v%%/*}
      if [ -z "$version" ] || [ "${v%%.*}" -gt "${version%%.*}" ]; then version=$v; fi
    done
    cluster=main
    if [ -z "$version" ]; then svc_say "no PostgreSQL server is installed (Debian: apt-get install postgresql)"; return 1; fi
  fi
  if ! is_root; then
    svc_say "PostgreSQL does not answer on 127.0.0.1:$port; start it with"
    if [ -z "$(cluster_on_port "$port")" ]; then
      svc_say "  sudo pg_createcluster -p $port $version $cluster"
    fi
    if have_systemd; then svc_say "  sudo systemctl start postgresql@$version-$cluster"; else svc_say "  sudo pg_ctlcluster $version $cluster start"; fi
    return 1
  fi
  if [ "$_status" = online ]; then
    svc_say "PostgreSQL $version/$cluster runs but does not answer on 127.0.0.1:$port (listen_addresses?)"
    return 1
  fi
  if [ -z "$(cluster_on_port "$port")" ]; then
    svc_say "creating PostgreSQL cluster $version/$cluster on port $port…"
    pg_createcluster -p "$port" "$version" "$cluster" >/dev/null || return 1
  fi
  svc_say "starting PostgreSQL $version/$cluster…"
  STARTED_SERVICES+=("postgresql $version $cluster")
  if have_systemd; then
    systemctl start "postgresql@$version-$cluster" || return 1
  else
    pg_ctlcluster --skip-systemctl-redirect "$version" "$cluster" start || return 1
  fi
  wait_answers 127.0.0.1 "$port" 60 || { svc_say "PostgreSQL did not answer on port $port within 60 s"; return 1; }
}

start_rabbitmq() { # port
  if ! is_root; then
    svc_say "RabbitMQ is not running; start it with"
    if have_systemd; then svc_say "  sudo systemctl start rabbitmq-server"; else svc_say "  sudo rabbitmq-server -detached"; fi
    return 1
  fi
  # A node that runs but listens elsewhere is not this script's to restart
  # (nor to stop on failure).
  if pgrep -u rabbitmq -x beam.smp >/dev/null 2>&1 || timeout 60 rabbitmqctl -q status >/dev/null 2>&1; then
    svc_say "RabbitMQ runs but does not answer on port $1; set BIRDSONG_AMQP_URL to where it listens"
    return 1
  fi
  svc_say "starting RabbitMQ…"
  STARTED_SERVICES+=(rabbitmq)
  if have_systemd; then
    systemctl start rabbitmq-server || return 1
  else
    rabbitmq-server -detached || return 1
  fi
  local _
  for _ in $(seq 120); do
    if rabbitmqctl -q await_startup >/dev/null 2>&1; then
      wait_answers 127.0.0.1 "$1" 10 && return 0
      svc_say "RabbitMQ started but does not answer on port $1; set BIRDSONG_AMQP_URL to where it listens"
      return 1
    fi
    sleep 1
  done
  svc_say "RabbitMQ did not start within 120 s (see /var/log/rabbitmq)"
  return 1
}

# Stops, newest first, what ensure_services started in this run.
stop_started_services() {
  local i entry kind version cluster
  for (( i = ${#STARTED_SERVICES[@]} - 1; i >= 0; i-- )); do
    entry=${STARTED_SERVICES[$i]}
    read -r kind version cluster <<<"$entry"
    case $kind in
      postgresql)
        svc_say "stopping PostgreSQL $version/$cluster (started by this run)"
        if have_systemd; then
          systemctl stop "postgresql@$version-$cluster" || true
        else
          pg_ctlcluster --skip-systemctl-redirect "$version" "$cluster" stop || true
        fi ;;
      rabbitmq)
        svc_say "stopping RabbitMQ (started by this run)"
        if have_systemd; then systemctl stop rabbitmq-server || true; else rabbitmqctl -q stop >/dev/null 2>&1 || true; fi ;;
    esac
  done
  STARTED_SERVICES=()
}

# The saved URL (database.env), or nothing.
saved_database_url() { # [file]
  local file=${1:-$BIRDSONG_DATABASE_ENV} line
  [ -r "$file" ] || return 0
  while IFS= read -r line; do
    case $line in BIRDSONG_DATABASE_URL=*) echo "${line#BIRDSONG_DATABASE_URL=}"; return 0 ;; esac
  done <"$file"
}

# Exports the saved role's URL when BIRDSONG_DATABASE_URL is unset, for scripts
# that run on what stack.sh or test.sh set up.
load_saved_database_url() {
  [ -z "${BIRDSONG_DATABASE_URL:-}" ] || return 0
  local url; url=$(saved_database_url)
  if [ -n "$url" ]; then export BIRDSONG_DATABASE_URL="$url"; fi
}

# Creates (or brings up to date) the role birdsong in the local cluster on
# `port`, with the password saved in `file` (generated and saved on first
# use, mode 600), and prints the URL to use. Needs root: it connects as the
# postgres user over the local socket. An existing database `birdsong`
# owned by another role (one made before this role existed) is handed over
# to it with everything in its public schema, so migrations can alter it.
provision_database_role() { # port file
  local port=$1 file=$2 url password tmp
  url=$(saved_database_url "$file")
  if [ -z "$url" ]; then
    mkdir -p "$(dirname "$file")" && chmod 700 "$(dirname "$file")"
    password=$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')
    tmp=$(mktemp "$file.XXXXXX")
    chmod 600 "$tmp"
    {
      echo "# The PostgreSQL role scripts/stack.sh and scripts/test.sh created; keep private."
      echo "BIRDSONG_DATABASE_URL=postgres://$BIRDSONG_DB_ROLE:$password@127.0.0.1:$port/$BIRDSONG_DB_NAME"
    } >"$tmp"
    # Another run may have saved one meanwhile: the first file wins.
    ln "$tmp" "$file" 2>/dev/null || true
    rm -f "$tmp"
    url=$(saved_database_url "$file")
  fi
  password=${url#postgres://"$BIRDSONG_DB_ROLE":}
  password=${password%%@*}
  case $password in
    ''|*[!0-9a-f]*)
      svc_say "$file does not hold a URL of role $BIRDSONG_DB_ROLE with a generated password; remove it to make a new one"
      return 1 ;;
  esac
  local attempt
  for attempt in 1 2; do
    # Two runs creating the role at once: the loser retries and finds it.
    if as_postgres psql -p "$port" -d postgres -X -q -v ON_ERROR_STOP=1 >/dev/null <<SQL
SET client_min_messages = warning;
SELECT format('CREATE ROLE %I', '$BIRDSONG_DB_ROLE')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$BIRDSONG_DB_ROLE') \gexec
ALTER ROLE $BIRDSONG_DB_ROLE LOGIN CREATEDB PASSWORD '$password';
SELECT format('ALTER DATABASE %I OWNER TO %I', datname, '$BIRDSONG_DB_ROLE')
  FROM pg_database
 WHERE datname = '$BIRDSONG_DB_NAME' AND pg_get_userbyid(datdba) <> '$BIRDSONG_DB_ROLE' \gexec
SQL
    then break; fi
    [ "$attempt" = 2 ] && { svc_say "could not create the PostgreSQL role $BIRDSONG_DB_ROLE on port $port"; return 1; }
    sleep 1
  done
  if as_postgres psql -p "$port" -d postgres -XAtq -c "SELECT 1 FROM pg_database WHERE datname = '$BIRDSONG_DB_NAME'" | grep -q 1; then
    as_postgres psql -p "$port" -d "$BIRDSONG_DB_NAME" -X -q -v ON_ERROR_STOP=1 >/dev/null <<SQL
SET client_min_messages = warning;
ALTER SCHEMA public OWNER TO $BIRDSONG_DB_ROLE;
DO \$\$
DECLARE
  r record;
  kind text;
BEGIN
  -- Tables first: their owned sequences follow them.
  FOR r IN SELECT c.oid::regclass AS obj, c.relkind
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'f', 'v', 'm', 'S')
              AND pg_get_userbyid(c.relowner) <> '$BIRDSONG_DB_ROLE'
            ORDER BY c.relkind = 'S'
  LOOP
    CONTINUE WHEN pg_get_userbyid((SELECT relowner FROM pg_class WHERE oid = r.obj)) = '$BIRDSONG_DB_ROLE';
    kind := CASE r.relkind WHEN 'f' THEN 'FOREIGN TABLE' WHEN 'v' THEN 'VIEW'
                           WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END;
    EXECUTE format('ALTER %s %s OWNER TO %I', kind, r.obj, '$BIRDSONG_DB_ROLE');
  END LOOP;
  FOR r IN SELECT t.oid::regtype AS obj FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
            WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd', 'r', 'm')
              AND pg_get_userbyid(t.typowner) <> '$BIRDSONG_DB_ROLE'
  LOOP
    EXECUTE format('ALTER TYPE %s OWNER TO %I', r.obj, '$BIRDSONG_DB_ROLE');
  END LOOP;
  FOR r IN SELECT p.oid::regprocedure AS obj FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname = 'public' AND pg_get_userbyid(p.proowner) <> '$BIRDSONG_DB_ROLE'
  LOOP
    EXECUTE format('ALTER ROUTINE %s OWNER TO %I', r.obj, '$BIRDSONG_DB_ROLE');
  END LOOP;
END
\$\$;
SQL
  fi
  echo "$url"
}

# Sets BIRDSONG_DATABASE_URL when it is unset: as root with a local Debian
# cluster on 127.0.0.1:5432, the provisioned role; otherwise the saved one;
# otherwise the configuration's default if the server accepts it (a machine
# whose PostgreSQL trusts local connections). Else it says how to make a role.
resolve_database_url() {
  [ -z "${BIRDSONG_DATABASE_URL:-}" ] || return 0
  local url
  if is_root && [ -n "$(cluster_on_port 5432)" ]; then
    url=$(provision_database_role 5432 "$BIRDSONG_DATABASE_ENV") || return 1
    export BIRDSONG_DATABASE_URL="$url"
    svc_say "database: role $BIRDSONG_DB_ROLE (password in $BIRDSONG_DATABASE_ENV)"
    return 0
  fi
  url=$(saved_database_url)
  if [ -n "$url" ]; then
    export BIRDSONG_DATABASE_URL="$url"
    return 0
  fi
  if command -v psql >/dev/null 2>&1 \
    && PGCONNECT_TIMEOUT=5 psql "${BIRDSONG_DEFAULT_DATABASE_URL%/*}/postgres" -w -XAtq -c 'SELECT 1' >/dev/null 2>&1; then
    svc_say "database: the default URL ($BIRDSONG_DEFAULT_DATABASE_URL), which this server accepts"
    return 0
  fi
  svc_say "birdsong needs a PostgreSQL role with a password and CREATEDB. Run this script"
  svc_say "as root to have it created, or create one and save its URL:"
  svc_say "  sudo -u postgres psql -c \"CREATE ROLE birdsong LOGIN CREATEDB PASSWORD 'PASSWORD'\""
  svc_say "  mkdir -p $BIRDSONG_CONFIG_DIR && (umask 077; echo 'BIRDSONG_DATABASE_URL=postgres://birdsong:PASSWORD@127.0.0.1:5432/birdsong' > $BIRDSONG_DATABASE_ENV)"
  svc_say "(or export BIRDSONG_DATABASE_URL; with the compose file's PostgreSQL:"
  svc_say "  export BIRDSONG_DATABASE_URL=postgres://birdsong:birdsong@127.0.0.1:5432/birdsong)"
  return 1
}

# Everything building and running birdsong needs on this machine; see the top
# of this file. Returns non-zero, having said why, when it cannot be done.
ensure_services() {
  local missing
  mapfile -t missing < <(missing_packages)
  if [ ${#missing[@]} -gt 0 ]; then
    if is_root && is_debian; then
      install_packages "${missing[@]}" || return 1
    else
      explain_missing "${missing[@]}"
      return 1
    fi
  fi
  local pg_host pg_port mq_host mq_port
  read -r pg_host pg_port <<<"$(url_host_port "${BIRDSONG_DATABASE_URL:-$BIRDSONG_DEFAULT_DATABASE_URL}" 5432)"
  read -r mq_host mq_port <<<"$(url_host_port "${BIRDSONG_AMQP_URL:-$BIRDSONG_DEFAULT_AMQP_URL}" 5672)"
  if ! answers "$pg_host" "$pg_port"; then
    if is_local_host "$pg_host"; then
      start_postgresql "$pg_port" || return 1
    else
      svc_say "PostgreSQL does not answer on $pg_host:$pg_port (BIRDSONG_DATABASE_URL)"
      return 1
    fi
  fi
  if ! answers "$mq_host" "$mq_port"; then
    if is_local_host "$mq_host"; then
      start_rabbitmq "$mq_port" || return 1
    else
      svc_say "RabbitMQ does not answer on $mq_host:$mq_port (BIRDSONG_AMQP_URL)"
      return 1
    fi
  fi
  resolve_database_url
}
