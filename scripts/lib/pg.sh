#!/usr/bin/env bash
# Throwaway PostgreSQL cluster for benchmarks: initdb into a temp dir, run as an unprivileged
# user when invoked as root, free port, clean stop.
#
# Source it:                      . "$(dirname "$0")/lib/pg.sh"
#   pg_start                      # initdb + start; exports DATABASE_URL, PG_URL_BASE, PGHOST, PGPORT, PGUSER
#   pg_url DBNAME                 # URL for another database on the same cluster
#   pg_stop                       # stop (by postmaster PID if pg_ctl fails) and delete the cluster
# or run it:
#   lib/pg.sh start               # prints `export ...` lines (eval them), cluster keeps running
#   lib/pg.sh stop PG_BENCH_DIR   # stop and delete a cluster started with `start`
#
# Options (environment):
#   PG_BIN            PostgreSQL bin dir (default: /usr/lib/postgresql/15/bin, else dir of `pg_ctl` on PATH)
#   PG_BENCH_FAST=1   fsync=off, synchronous_commit=off, full_page_writes=off.
#                     NOT for headline numbers; the default keeps durability settings at their defaults.
#   PG_BENCH_USER     unprivileged OS user to run the server as when invoked as root
#                     (default: postgres; created with useradd if it does not exist)
#   PG_BENCH_TMP      parent dir for the cluster (default: $TMPDIR or /tmp)
#   PG_BENCH_EXTRA    extra "-c name=value" server options, space separated
#
# Auth is `trust` on 127.0.0.1 and the unix socket only (throwaway cluster, no password).

_pg_find_bin() {
  if [ -n "${PG_BIN:-}" ]; then return 0; fi
  if [ -x /usr/lib/postgresql/15/bin/pg_ctl ]; then
    PG_BIN=/usr/lib/postgresql/15/bin
  elif command -v pg_ctl >/dev/null 2>&1; then
    PG_BIN=$(dirname "$(command -v pg_ctl)")
  else
    local d
    for d in /usr/lib/postgresql/*/bin; do [ -x "$d/pg_ctl" ] && PG_BIN=$d; done
  fi
  [ -n "${PG_BIN:-}" ] || { echo "pg.sh: cannot find pg_ctl (set PG_BIN)" >&2; return 1; }
}

# Run a command as the cluster owner (unprivileged user when we are root).
_pg_as_owner() {
  if [ "$(id -u)" = 0 ]; then
    # cd to the cluster dir so the unprivileged user never inherits an unreadable cwd
    (cd "$PG_BENCH_DIR" && runuser -u "$PG_BENCH_OWNER" -- "$@")
  else
    "$@"
  fi
}

_pg_free_port() {
  python3 -c 'import socket
s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

pg_start() {
  _pg_find_bin || return 1
  local parent=${PG_BENCH_TMP:-${TMPDIR:-/tmp}}
  PG_BENCH_DIR=$(mktemp -d "$parent/pgbench.XXXXXX") || return 1
  export PG_BENCH_DIR
  mkdir -p "$PG_BENCH_DIR/data" "$PG_BENCH_DIR/sock"
  if [ "$(id -u)" = 0 ]; then
    PG_BENCH_OWNER=${PG_BENCH_USER:-postgres}
    if ! id -u "$PG_BENCH_OWNER" >/dev/null 2>&1; then
      useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_BENCH_OWNER" || return 1
    fi
    # the temp dir is 0700 root; let the owner in
    chown -R "$PG_BENCH_OWNER" "$PG_BENCH_DIR"
  else
    PG_BENCH_OWNER=$(id -un)
  fi
  export PG_BENCH_OWNER

  if ! _pg_as_owner "$PG_BIN/initdb" -D "$PG_BENCH_DIR/data" -U postgres -A trust -E UTF8 \
        --locale=C --no-sync >"$PG_BENCH_DIR/initdb.log" 2>&1; then
    echo "pg.sh: initdb failed:" >&2; cat "$PG_BENCH_DIR/initdb.log" >&2; return 1
  fi

  local port tries=0 opts
  while :; do
    port=$(_pg_free_port)
    opts="-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$PG_BENCH_DIR/sock"
    opts="$opts -c max_wal_size=4GB -c checkpoint_timeout=30min -c max_connections=50"
    if [ "${PG_BENCH_FAST:-0}" = 1 ]; then
      opts="$opts -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    fi
    [ -n "${PG_BENCH_EXTRA:-}" ] && opts="$opts $PG_BENCH_EXTRA"
    if _pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_BENCH_DIR/data" -l "$PG_BENCH_DIR/server.log" \
          -o "$opts" -w -t 60 start >/dev/null 2>&1; then
      break
    fi
    tries=$((tries + 1))
    if [ $tries -ge 3 ]; then
      echo "pg.sh: server failed to start:" >&2; tail -20 "$PG_BENCH_DIR/server.log" >&2
      rm -rf "$PG_BENCH_DIR"; return 1
    fi
  done
  PG_BENCH_PID=$(head -1 "$PG_BENCH_DIR/data/postmaster.pid")
  export PG_BENCH_PID
  export PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres
  unset PGPASSWORD PGDATABASE PGSERVICE
  export PG_URL_BASE="postgres://postgres@127.0.0.1:$port"
  export DATABASE_URL="$PG_URL_BASE/postgres?sslmode=disable"
  echo "$DATABASE_URL"
}

# pg_url DBNAME -> postgres://postgres@127.0.0.1:PORT/DBNAME?sslmode=disable
pg_url() { echo "$PG_URL_BASE/$1?sslmode=disable"; }

pg_stop() {
  local dir=${1:-${PG_BENCH_DIR:-}}
  [ -n "$dir" ] && [ -d "$dir" ] || return 0
  _pg_find_bin || true
  local pid=""
  [ -f "$dir/data/postmaster.pid" ] && pid=$(head -1 "$dir/data/postmaster.pid")
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    PG_BENCH_DIR=$dir PG_BENCH_OWNER=${PG_BENCH_OWNER:-$(stat -c %U "$dir/data")} \
      _pg_as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null 2>&1 || true
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      local i; for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    fi
  fi
  rm -rf "$dir"
  if [ "$dir" = "${PG_BENCH_DIR:-}" ]; then unset PG_BENCH_DIR PG_BENCH_PID; fi
}

# Executed directly (not sourced)
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  case "${1:-}" in
    start)
      pg_start >/dev/null
      echo "export PG_BENCH_DIR='$PG_BENCH_DIR' PG_BENCH_PID='$PG_BENCH_PID'"
      echo "export PGHOST=127.0.0.1 PGPORT='$PGPORT' PGUSER=postgres"
      echo "export DATABASE_URL='$DATABASE_URL'"
      echo "# stop with: $0 stop '$PG_BENCH_DIR'"
      ;;
    stop) pg_stop "${2:?usage: $0 stop PG_BENCH_DIR}" ;;
    *) echo "usage: $0 start | stop PG_BENCH_DIR   (or source it and call pg_start / pg_stop)" >&2; exit 2 ;;
  esac
fi
