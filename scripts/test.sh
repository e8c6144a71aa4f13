#!/usr/bin/env bash
# scripts/test.sh: the whole test suite, as CI runs it (.ci/run calls this).
#
# - Checks formatting and clippy (warnings are errors).
# - Makes sure a Redis is reachable for the tests that need one: uses
#   $CONNMIX_TEST_REDIS (host:port) or 127.0.0.1:6379 if it answers PING,
#   otherwise starts a private redis-server on a free loopback port
#   (installing it with apt-get if missing) and stops it on exit.
# - Runs every Rust test (unit and integration: real binary, real sockets).
set -euo pipefail
cd "$(dirname "$0")/.."

started_redis=""
cleanup() {
    if [[ -n "$started_redis" ]]; then
        kill "$started_redis" 2>/dev/null || true
        wait "$started_redis" 2>/dev/null || true
    fi
}
trap cleanup EXIT

redis_ping() { # host port
    exec 3<>"/dev/tcp/$1/$2" 2>/dev/null || return 1
    printf 'PING\r\n' >&3
    local reply=""
    read -r -t 2 reply <&3 || true
    exec 3>&- 3<&-
    [[ "$reply" == +PONG* ]]
}

ensure_redis() {
    # The cluster tests start and stop their own redis-server processes, so
    # the binary must exist even when a Redis is already reachable.
    if ! command -v redis-server >/dev/null; then
        echo "test.sh: installing redis-server" >&2
        (apt-get install -y redis-server >/dev/null 2>&1 ||
            (apt-get update >/dev/null 2>&1 && apt-get install -y redis-server >/dev/null 2>&1)) ||
            { echo "test.sh: cannot install redis-server" >&2; exit 1; }
    fi
    local addr="${CONNMIX_TEST_REDIS:-127.0.0.1:6379}"
    if redis_ping "${addr%:*}" "${addr##*:}"; then
        export CONNMIX_TEST_REDIS="$addr"
        return
    fi
    local port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
        --logfile "" >/dev/null 2>&1 &
    started_redis=$!
    for _ in $(seq 1 100); do
        redis_ping 127.0.0.1 "$port" && break
        sleep 0.1
    done
    redis_ping 127.0.0.1 "$port" || { echo "test.sh: redis-server did not start" >&2; exit 1; }
    export CONNMIX_TEST_REDIS="127.0.0.1:$port"
    echo "test.sh: started redis-server on $CONNMIX_TEST_REDIS" >&2
}

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
ensure_redis
# test-hooks: lets tests/limits.rs inject a panic into a connection task.
timeout 2400 cargo test --workspace --all-targets --features connmix/test-hooks

# The JS client (clients/js, node's test runner against a live gateway) and the
# web pages in headless Chromium (scripts/browser-test.sh). Each test has its
# own deadline; the outer timeouts only turn a wedged run into a clear failure.
(cd clients/js && npm install --no-audit --no-fund && timeout 600 npm test)
timeout 1200 scripts/browser-test.sh
