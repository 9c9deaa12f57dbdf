#!/usr/bin/env bash
# Start or stop a throw-away 3-master Redis Cluster on loopback, for tests.
#
#   scripts/redis-cluster.sh start <dir>    start the nodes, create the cluster,
#                                           wait for cluster_state:ok; print the
#                                           node URLs (comma-separated) on stdout
#   scripts/redis-cluster.sh stop <dir>     stop the nodes started in <dir>
#   scripts/redis-cluster.sh status <dir>   show cluster_state of each node
#   scripts/redis-cluster.sh revive <dir> <port>
#                                           start a node of <dir> again (after it
#                                           was killed) with its cluster config
#
# Everything a run needs lives in <dir>: nodes-P.conf, P.pid, P.log, ports,
# urls. `stop` only touches processes whose pid file is in <dir> and that are
# redis-server on the recorded port; it never touches port 6379.
#
# Ports: by default the first free range among 7101-7103, 7111-7113, ...,
# 7191-7193 (the cluster bus ports P+10000 must be free too). Set
# SPENDGATE_REDIS_CLUSTER_PORTS="P1 P2 P3" to force ports; start then fails if
# any is taken. SPENDGATE_REDIS_CLUSTER_WAIT (seconds, default 60) bounds the
# wait for cluster_state:ok. SPENDGATE_REDIS_CLUSTER_REPLICAS=1 gives every
# master a replica (6 nodes; the ports then run P..P+5);
# SPENDGATE_REDIS_CLUSTER_NODE_TIMEOUT (ms, default 5000) is how long a
# master may be silent before its replica is promoted.
#
# Use the URLs with: export SPENDGATE_TEST_REDIS_CLUSTER_URLS=$(scripts/redis-cluster.sh start DIR)
set -euo pipefail

HOST=127.0.0.1
REPLICAS=${SPENDGATE_REDIS_CLUSTER_REPLICAS:-0}
[[ "$REPLICAS" =~ ^[01]$ ]] || { printf 'redis-cluster: error: SPENDGATE_REDIS_CLUSTER_REPLICAS is 0 or 1\n' >&2; exit 1; }
NODES=$((3 * (1 + REPLICAS)))
WAIT_SECS=${SPENDGATE_REDIS_CLUSTER_WAIT:-60}
NODE_TIMEOUT=${SPENDGATE_REDIS_CLUSTER_NODE_TIMEOUT:-5000}

log() { printf 'redis-cluster: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

usage() {
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

need() { command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH"; }

# True when something listens on (or accepts on) TCP port $1.
port_in_use() {
    local p=$1
    if command -v ss >/dev/null 2>&1; then
        [[ -n "$(ss -Hltn "sport = :$p" 2>/dev/null)" ]] && return 0
    fi
    (exec 3<>"/dev/tcp/$HOST/$p") 2>/dev/null
}

# Ports of a range (P, P+1, ...) are usable when neither P nor P+10000 is taken.
ports_free() {
    local p
    for p in "$@"; do
        if port_in_use "$p" || port_in_use $((p + 10000)); then
            return 1
        fi
    done
}

pick_ports() {
    local forced=${SPENDGATE_REDIS_CLUSTER_PORTS:-}
    if [[ -n "$forced" ]]; then
        local -a ports
        read -r -a ports <<<"${forced//,/ }"
        ((${#ports[@]} == NODES)) || die "SPENDGATE_REDIS_CLUSTER_PORTS must list $NODES ports, got '$forced'"
        local p
        for p in "${ports[@]}"; do
            [[ "$p" =~ ^[0-9]+$ ]] && ((p > 0 && p < 55536)) || die "bad port '$p' in SPENDGATE_REDIS_CLUSTER_PORTS"
            ((p != 6379)) || die "port 6379 is reserved for the standalone Redis"
            if port_in_use "$p"; then die "port $p is already in use (ss -ltnp 'sport = :$p' shows by whom)"; fi
            if port_in_use $((p + 10000)); then die "cluster bus port $((p + 10000)) (for $p) is already in use"; fi
        done
        echo "${ports[*]}"
        return
    fi
    local base
    for base in 7101 7111 7121 7131 7141 7151 7161 7171 7181 7191; do
        local -a range=()
        local i
        for ((i = 0; i < NODES; i++)); do range+=($((base + i))); done
        if ports_free "${range[@]}"; then
            echo "${range[*]}"
            return
        fi
        log "ports ${range[*]} (or their bus ports +10000) are taken, trying the next range"
    done
    die "no free port range found in 7101-7193 (and 17101-17193); set SPENDGATE_REDIS_CLUSTER_PORTS"
}

# The pid in $dir/$port.pid if it is alive and is a redis-server on that port.
our_pid() {
    local dir=$1 port=$2 pidfile="$1/$2.pid" pid args
    [[ -f "$pidfile" ]] || return 1
    pid=$(tr -dc '0-9' <"$pidfile")
    [[ -n "$pid" ]] || return 1
    args=$(ps -o args= -p "$pid" 2>/dev/null) || return 1
    [[ "$args" == *redis-server* && "$args" =~ :$port( |$) ]] || return 1
    echo "$pid"
}

stop_node() {
    local dir=$1 port=$2 pid i
    if ((port == 6379)); then
        log "refusing to stop port 6379"
        return 0
    fi
    if ! pid=$(our_pid "$dir" "$port"); then
        rm -f "$dir/$port.pid"
        return 0
    fi
    redis-cli -h "$HOST" -p "$port" shutdown nosave >/dev/null 2>&1 || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "node $port (pid $pid) did not shut down, sending TERM"
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
    fi
    if kill -0 "$pid" 2>/dev/null; then
        log "node $port (pid $pid) still alive, sending KILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.2
    fi
    rm -f "$dir/$port.pid"
    log "stopped node $port (pid $pid)"
}

cmd_stop() {
    local dir=$1 f port
    [[ -d "$dir" ]] || return 0
    shopt -s nullglob
    for f in "$dir"/*.pid; do
        port=$(basename "$f" .pid)
        [[ "$port" =~ ^[0-9]+$ ]] || continue
        stop_node "$dir" "$port"
    done
    shopt -u nullglob
    rm -f "$dir/urls"
}

cluster_info_field() { # port field
    redis-cli -h "$HOST" -p "$1" cluster info 2>/dev/null | tr -d '\r' | sed -n "s/^$2://p"
}

show_logs() {
    local dir=$1 p
    for p in "${@:2}"; do
        if [[ -f "$dir/$p.log" ]]; then
            log "--- last lines of $dir/$p.log ---"
            tail -n 20 "$dir/$p.log" >&2 || true
        fi
    done
}

start_node() { # dir port
    redis-server --port "$2" --bind "$HOST" --cluster-enabled yes \
        --cluster-config-file "nodes-$2.conf" --cluster-node-timeout "$NODE_TIMEOUT" \
        --save "" --appendonly no --daemonize yes --dir "$1" \
        --pidfile "$1/$2.pid" --logfile "$1/$2.log"
}

cmd_revive() {
    local dir=$1 port=$2
    [[ -f "$dir/ports" ]] || die "no cluster recorded in $dir"
    [[ " $(cat "$dir/ports") " == *" $port "* ]] || die "port $port is not a node of $dir"
    if our_pid "$dir" "$port" >/dev/null; then
        die "node $port is running"
    fi
    start_node "$dir" "$port"
    log "node $port started again"
}

cmd_start() {
    local dir=$1
    need redis-server
    need redis-cli
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)

    # A previous run in the same dir: stop what it left and forget its state.
    cmd_stop "$dir"
    rm -f "$dir"/nodes-*.conf "$dir"/*.log "$dir/ports" "$dir/urls" "$dir/create.log"

    local picked
    picked=$(pick_ports) || exit 1
    local -a ports
    read -r -a ports <<<"$picked"

    local p pid i
    for p in "${ports[@]}"; do
        start_node "$dir" "$p"
    done
    echo "${ports[*]}" >"$dir/ports"

    # Each node must answer, and the process answering must be the one we started.
    for p in "${ports[@]}"; do
        local ok=0
        for ((i = 0; i < 100; i++)); do
            if pid=$(our_pid "$dir" "$p") &&
                [[ "$(redis-cli -h "$HOST" -p "$p" info server 2>/dev/null | tr -d '\r' | sed -n 's/^process_id://p')" == "$pid" ]]; then
                ok=1
                break
            fi
            sleep 0.1
        done
        if ((ok == 0)); then
            show_logs "$dir" "$p"
            cmd_stop "$dir"
            die "node on port $p did not start (log above)"
        fi
    done

    local -a addrs=()
    for p in "${ports[@]}"; do addrs+=("$HOST:$p"); done
    if ! redis-cli --cluster create "${addrs[@]}" --cluster-replicas "$REPLICAS" --cluster-yes >"$dir/create.log" 2>&1; then
        cat "$dir/create.log" >&2
        show_logs "$dir" "${ports[@]}"
        cmd_stop "$dir"
        die "redis-cli --cluster create failed"
    fi

    local deadline=$((SECONDS + WAIT_SECS)) all_ok
    while :; do
        all_ok=1
        for p in "${ports[@]}"; do
            if [[ "$(cluster_info_field "$p" cluster_state)" != ok ||
                "$(cluster_info_field "$p" cluster_known_nodes)" != "$NODES" ]]; then
                all_ok=0
                break
            fi
        done
        ((all_ok == 1)) && break
        if ((SECONDS >= deadline)); then
            for p in "${ports[@]}"; do
                log "node $p: cluster_state=$(cluster_info_field "$p" cluster_state) known_nodes=$(cluster_info_field "$p" cluster_known_nodes)"
            done
            show_logs "$dir" "${ports[@]}"
            cmd_stop "$dir"
            die "cluster not ok after ${WAIT_SECS}s"
        fi
        sleep 0.2
    done

    local urls=""
    for p in "${ports[@]}"; do urls+="${urls:+,}redis://$HOST:$p"; done
    echo "$urls" >"$dir/urls"
    log "cluster_state:ok on ${ports[*]} (dir $dir)"
    echo "$urls"
}

cmd_status() {
    local dir=$1 p pid rc=0
    [[ -f "$dir/ports" ]] || die "no cluster recorded in $dir"
    for p in $(cat "$dir/ports"); do
        if pid=$(our_pid "$dir" "$p"); then
            echo "$p pid=$pid cluster_state=$(cluster_info_field "$p" cluster_state)"
        else
            echo "$p not running"
            rc=1
        fi
    done
    return "$rc"
}

(($# >= 2)) || usage
case "$1" in
start) cmd_start "$2" ;;
stop) cmd_stop "$2" ;;
status) cmd_status "$2" ;;
revive) (($# == 3)) || usage && cmd_revive "$2" "$3" ;;
*) usage ;;
esac
