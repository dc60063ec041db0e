#!/usr/bin/env bash
# Starts (or stops) the Redis servers the integration tests use, on private loopback ports and data dirs:
# a standalone server on $MARKOV_TEST_STANDALONE_PORT (16379), a second one on $MARKOV_TEST_DISCORD_PORT (16380) for
# the Discord suites (their floods would otherwise delay the Redis client tests' tight deadlines), and a 3-master
# cluster on 17001-17003.
#   scripts/test-redis.sh start | stop
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)/.redis-test"
standalone_port="${MARKOV_TEST_STANDALONE_PORT:-16379}"
discord_port="${MARKOV_TEST_DISCORD_PORT:-16380}"
cluster_ports=(17001 17002 17003)

start_server() { # name port extra-args…
    local name=$1 port=$2; shift 2
    mkdir -p "$root/$name"
    redis-server --bind 127.0.0.1 --port "$port" --dir "$root/$name" --daemonize yes \
        --pidfile "$root/$name/redis.pid" --logfile "$root/$name/redis.log" \
        --save "" --appendonly no "$@"
    for _ in $(seq 1 100); do
        redis-cli -p "$port" ping >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "redis-server $name did not start on port $port; its log:" >&2
    cat "$root/$name/redis.log" >&2
    return 1
}

stop_server() { # name
    local pidfile="$root/$1/redis.pid"
    if [ -f "$pidfile" ]; then
        local pid
        pid=$(cat "$pidfile")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        rm -f "$pidfile"
    fi
}

case "${1:-}" in
start)
    "$0" stop
    rm -rf "$root"
    start_server standalone "$standalone_port"
    start_server discord "$discord_port"
    nodes=()
    for port in "${cluster_ports[@]}"; do
        start_server "cluster-$port" "$port" --cluster-enabled yes --cluster-config-file nodes.conf \
            --cluster-node-timeout 5000
        nodes+=("127.0.0.1:$port")
    done
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >"$root/cluster-create.log" 2>&1 || {
        cat "$root/cluster-create.log" >&2; exit 1; }
    for _ in $(seq 1 100); do
        ok=1
        for port in "${cluster_ports[@]}"; do
            redis-cli -p "$port" cluster info | grep -q "cluster_state:ok" || ok=0
        done
        [ "$ok" = 1 ] && break
        sleep 0.1
    done
    [ "$ok" = 1 ] || { echo "the test cluster did not reach cluster_state:ok" >&2; exit 1; }
    echo "test redis: standalone 127.0.0.1:$standalone_port, Discord suites 127.0.0.1:$discord_port, cluster ${nodes[*]}"
    ;;
stop)
    stop_server standalone
    stop_server discord
    for port in "${cluster_ports[@]}"; do stop_server "cluster-$port"; done
    ;;
*)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
