# Shared by scripts/run.sh and Tests/harness/run.sh: installing what is missing, building, and
# starting/stopping spawn-fcgi + Fanout and nginx on 127.0.0.1. Source it; do not run it.

FANOUT_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

log() { printf '==> %s\n' "$*" >&2; }

# Installs the Debian packages Fanout needs (and the extra ones named as arguments) if missing.
ensure_packages() {
    local missing=()
    command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
    command -v spawn-fcgi >/dev/null 2>&1 || missing+=(spawn-fcgi)
    [ -f /usr/include/fcgiapp.h ] || missing+=(libfcgi-dev)
    command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    command -v python3 >/dev/null 2>&1 || missing+=(python3)
    local extra
    for extra in "$@"; do
        dpkg -s "$extra" >/dev/null 2>&1 || missing+=("$extra")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

nginx_binary() { command -v nginx 2>/dev/null || echo /usr/sbin/nginx; }

# Prints a free TCP port on 127.0.0.1.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# A run directory whose socket path fits in sockaddr_un (108 bytes).
make_run_dir() {
    local dir="${1:-$FANOUT_ROOT/.run}"
    if [ ${#dir} -gt 80 ]; then dir=$(mktemp -d /tmp/fanout-run.XXXXXX); fi
    mkdir -p "$dir"
    (cd "$dir" && pwd)
}

# start_fanout RUN_DIR BINARY [ARGS...]: spawn-fcgi creates the socket (its backlog at the kernel's
# usual somaxconn, 4096, so that a burst of connections waits to be accepted and answered 503
# rather than being refused: nginx turns a refused connect into a 502) and execs Fanout in the
# foreground (-n), so FANOUT_PID is Fanout's own PID. FANOUT_ENV (an array of NAME=VALUE) adds
# environment variables. Its stderr goes to RUN_DIR/fanout.log
# (and to the terminal when FANOUT_LOG_TO_TERMINAL=1).
start_fanout() {
    local run_dir=$1 binary=$2
    shift 2
    rm -f "$run_dir/fanout.sock"
    if [ "${FANOUT_LOG_TO_TERMINAL:-0}" = 1 ]; then
        env ${FANOUT_ENV[@]+"${FANOUT_ENV[@]}"} spawn-fcgi -s "$run_dir/fanout.sock" -M 0660 -b 4096 -n -- "$binary" "$@" \
            2> >(tee -a "$run_dir/fanout.log" >&2) >/dev/null &
    else
        env ${FANOUT_ENV[@]+"${FANOUT_ENV[@]}"} spawn-fcgi -s "$run_dir/fanout.sock" -M 0660 -b 4096 -n -- "$binary" "$@" \
            2>>"$run_dir/fanout.log" >/dev/null &
    fi
    FANOUT_PID=$!
    local tries=0
    until [ -S "$run_dir/fanout.sock" ]; do
        tries=$((tries + 1))
        if [ $tries -gt 100 ] || ! kill -0 "$FANOUT_PID" 2>/dev/null; then
            log "Fanout did not start; see $run_dir/fanout.log"
            return 1
        fi
        sleep 0.05
    done
}

# stop_fanout: SIGTERM, then wait for it to exit; prints its exit status.
stop_fanout() {
    [ -n "${FANOUT_PID:-}" ] || return 0
    kill -TERM "$FANOUT_PID" 2>/dev/null || true
    local status=0
    wait "$FANOUT_PID" 2>/dev/null || status=$?
    FANOUT_PID=""
    return $status
}

# start_nginx RUN_DIR PORT [KEEP_CONN on|off] [MAX_BODY_BYTES]
start_nginx() {
    local run_dir=$1 port=$2 keep_conn=${3:-on} max_body=${4:-8388608}
    local keepalive_line="keepalive 32;" user_line=""
    [ "$keep_conn" = on ] || keepalive_line=""
    # As root, nginx would run its worker as nobody, which cannot reach the socket.
    [ "$(id -u)" -ne 0 ] || user_line="user root;"
    sed -e "s|@RUN_DIR@|$run_dir|g" -e "s|@SOCKET@|$run_dir/fanout.sock|g" -e "s|@PORT@|$port|g" \
        -e "s|@FANOUT_PARAMS@|$FANOUT_ROOT/nginx/fanout_params|g" \
        -e "s|@KEEP_CONN@|$keep_conn|g" -e "s|@KEEPALIVE_LINE@|$keepalive_line|g" \
        -e "s|@USER_LINE@|$user_line|g" -e "s|@MAX_BODY_BYTES@|$max_body|g" \
        -e "s|@READ_TIMEOUT@|${FANOUT_NGINX_READ_TIMEOUT:-75s}|g" \
        -e "s|@CLIENT_MAP@|${NGINX_CLIENT_KEYS:+map \$http_x_api_key \$fanout_client { default \"\"; include $NGINX_CLIENT_KEYS; \}}|g" \
        -e "s|@CLIENT_PARAMS@|${NGINX_CLIENT_KEYS:+fastcgi_param FANOUT_CLIENT_ID \$fanout_client; fastcgi_param HTTP_X_API_KEY \"\";}|g" \
        "$FANOUT_ROOT/nginx/fanout-local.conf.template" >"$run_dir/nginx.conf"
    "$(nginx_binary)" -p "$run_dir" -c "$run_dir/nginx.conf" -e stderr 2>>"$run_dir/nginx.log" &
    NGINX_PID=$!
    local tries=0
    until curl -fs -o /dev/null "http://127.0.0.1:$port/healthz"; do
        tries=$((tries + 1))
        if [ $tries -gt 100 ] || ! kill -0 "$NGINX_PID" 2>/dev/null; then
            log "nginx or Fanout is not answering on port $port; see $run_dir/nginx.log and $run_dir/fanout.log"
            return 1
        fi
        sleep 0.05
    done
}

stop_nginx() {
    [ -n "${NGINX_PID:-}" ] || return 0
    kill -QUIT "$NGINX_PID" 2>/dev/null || true
    wait "$NGINX_PID" 2>/dev/null || true
    NGINX_PID=""
}

# The newest installed PostgreSQL's server programs (initdb, pg_ctl, …), installing Debian's
# `postgresql` when there is none.
postgres_bin() {
    local bin
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
        ensure_packages postgresql >&2
        bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    fi
    [ -n "$bin" ] && [ -x "$bin/initdb" ] || { log "no PostgreSQL server programs (initdb) after installing postgresql"; return 1; }
    command -v psql >/dev/null 2>&1 || ensure_packages postgresql-client >&2
    echo "$bin"
}

# start_postgres [FSYNC on|off] [EXTRA -c SETTINGS...]: a throwaway PostgreSQL server in a new
# temporary directory, listening only on a Unix socket there. As root it runs as the `postgres`
# user (initdb refuses root). Sets PG_DIR, PG_BIN and FANOUT_TEST_DATABASE_URL (exported). Fails
# loudly, never silently, when the server cannot be started.
start_postgres() {
    local fsync=${1:-off}
    shift || true
    PG_BIN=$(postgres_bin) || return 1
    PG_DIR=$(mktemp -d /tmp/fanout-pg.XXXXXX)
    chmod 755 "$PG_DIR"
    local as=()
    if [ "$(id -u)" -eq 0 ]; then
        id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
        chown postgres "$PG_DIR"
        as=(runuser -u postgres --)
    fi
    if ! "${as[@]}" "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres -A trust --no-sync >"$PG_DIR/initdb.log" 2>&1; then
        log "PostgreSQL: initdb failed:"; cat "$PG_DIR/initdb.log" >&2; return 1
    fi
    local settings=(-c "listen_addresses=" -c "unix_socket_directories=$PG_DIR" -c "fsync=$fsync"
        -c "max_connections=200" -c "shared_buffers=256MB" "$@")
    if ! "${as[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 30 -o "${settings[*]}" start >/dev/null; then
        log "PostgreSQL: the server did not start:"; tail -20 "$PG_DIR/server.log" >&2; return 1
    fi
    export FANOUT_TEST_DATABASE_URL="postgres://postgres@/postgres?host=$PG_DIR"
    PG_AS=("${as[@]}")
}

# stop_postgres: stops the server start_postgres started and removes its directory.
stop_postgres() {
    [ -n "${PG_DIR:-}" ] || return 0
    "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$PG_DIR"
    PG_DIR=""
}
