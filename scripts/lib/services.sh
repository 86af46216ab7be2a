# Throwaway PostgreSQL and Redis for scripts/test and scripts/bench.
#
# Source this file, then call `start_services`: it installs the Debian packages when they are
# missing (as root; otherwise it says what to install), starts both servers on free loopback
# ports in a temporary directory, sets `pg_port`, `redis_port` and `workdir`, and registers a
# trap that stops them and removes the directory when the script exits. Its arguments name
# further commands the caller needs, as `command=package` (e.g. `chromedriver=chromium-driver`),
# installed the same way.

say() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }

find_pg_bin() {
    local dir
    for dir in /usr/lib/postgresql/*/bin; do
        [ -x "$dir/initdb" ] && { echo "$dir"; return 0; }
    done
    command -v initdb >/dev/null 2>&1 && { dirname "$(command -v initdb)"; return 0; }
    return 1
}

# Arguments: further `command=package` pairs to install when the command is missing.
ensure_packages() {
    local need=() pair
    find_pg_bin >/dev/null || need+=(postgresql)
    command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
    for pair in "$@"; do
        command -v "${pair%%=*}" >/dev/null 2>&1 || need+=("${pair#*=}")
    done
    [ ${#need[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing ${need[*]} with apt-get"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
        # The Debian packages start system-wide services; we use our own servers.
        if command -v service >/dev/null 2>&1; then
            service postgresql stop >/dev/null 2>&1 || true
            service redis-server stop >/dev/null 2>&1 || true
            service nginx stop >/dev/null 2>&1 || true
        fi
    else
        say "missing: ${need[*]}. Install them with: sudo apt-get install ${need[*]}"
        exit 1
    fi
}

# PostgreSQL refuses to run as root; run it as the postgres system user in that case.
as_pg_user() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A free port below the kernel's ephemeral range: one inside it can be taken between this
# check and the bind by any outgoing connection (a server's to PostgreSQL or Redis, a load
# generator's), which once failed a bench server with "Address already in use".
random_port() {
    local port low
    low=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
    [ "$low" -gt 20000 ] || low=60000 # an unusual range: the span used before
    while :; do
        port=$((10000 + RANDOM % (low - 10000)))
        port_in_use "$port" || { echo "$port"; return; }
    done
}

stop_services() {
    local status=$?
    if [ -n "${redis_pid:-}" ]; then kill "$redis_pid" 2>/dev/null || true; fi
    if [ -f "$workdir/pg/postmaster.pid" ]; then
        as_pg_user "$PG_BIN/pg_ctl" -D "$workdir/pg" -m immediate stop >/dev/null 2>&1 || true
    fi
    if [ -n "${redis_pid:-}" ]; then wait "$redis_pid" 2>/dev/null || true; fi
    rm -rf "$workdir"
    exit $status
}

start_postgres() {
    local candidate
    mkdir -p "$workdir/pg" "$workdir/pg-socket"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$workdir/pg" "$workdir/pg-socket"
    as_pg_user "$PG_BIN/initdb" -D "$workdir/pg" -U postgres --auth=trust -E UTF8 --no-locale \
        >"$workdir/initdb.log" 2>&1 || { cat "$workdir/initdb.log" >&2; exit 1; }
    pg_port=""
    for _ in 1 2 3 4 5; do
        candidate=$(random_port)
        if as_pg_user "$PG_BIN/pg_ctl" -D "$workdir/pg" -l "$workdir/pg/server.log" -w -t 30 \
            -o "-p $candidate -k $workdir/pg-socket -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
            start >/dev/null 2>&1; then
            pg_port=$candidate
            break
        fi
    done
    [ -n "$pg_port" ] || { say "PostgreSQL did not start"; cat "$workdir/pg/server.log" >&2 || true; exit 1; }
    say "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$pg_port"
}

start_redis() {
    local candidate
    redis_port=""
    for _ in 1 2 3 4 5; do
        candidate=$(random_port)
        redis-server --bind 127.0.0.1 --port "$candidate" --save '' --appendonly no \
            --dir "$workdir" --logfile "$workdir/redis.log" &
        redis_pid=$!
        for _ in $(seq 50); do
            port_in_use "$candidate" && break
            kill -0 "$redis_pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$redis_pid" 2>/dev/null && port_in_use "$candidate"; then
            redis_port=$candidate
            break
        fi
        redis_pid=""
    done
    [ -n "$redis_port" ] || { say "Redis did not start"; cat "$workdir/redis.log" >&2 || true; exit 1; }
    say "Redis $(redis-server --version | awk '{print $3}' | cut -d= -f2) on 127.0.0.1:$redis_port"
}

start_services() {
    ensure_packages "$@"
    PG_BIN=$(find_pg_bin)
    workdir=$(mktemp -d /tmp/latchkey-services.XXXXXX)
    chmod 755 "$workdir"
    redis_pid=""
    trap stop_services EXIT INT TERM
    start_postgres
    start_redis
}
