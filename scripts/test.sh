#!/usr/bin/env bash
# scripts/test.sh: the whole test suite, as CI runs it (.ci/run calls this).
#
# Steps, each announced with "==> test.sh: <step>" before it runs and, when it
# fails, "test.sh: FAILED: <step> (exit N): <what to look at>" after its own
# output (nothing here silences a compiler, a test runner or an installer):
#  1. cargo fmt --check, cargo clippy -D warnings;
#  2. a Redis for the tests that need one: $CONNMIX_TEST_REDIS (host:port) or
#     127.0.0.1:6379 if it answers PING, otherwise a private redis-server on a
#     free loopback port (installed with apt-get if missing), stopped on exit;
#  3. every Rust test (unit and integration: real binary, real sockets),
#     after installing the Socket.IO clients they drive (npm, pip);
#  4. the JS client's tests (node) and the web pages in headless Chromium.
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

say() { echo "test.sh: $*" >&2; }

# step NAME HINT CMD...: runs CMD, announcing it; on failure says which step
# failed, its exit status and HINT, and stops the run with that status.
step() {
    local name="$1" hint="$2"
    shift 2
    echo "==> test.sh: $name" >&2
    local rc=0
    "$@" || rc=$?
    if ((rc != 0)); then
        say "FAILED: $name (exit $rc): $hint"
        exit "$rc"
    fi
}

# A subshell: the descriptor and the stderr redirection end with it (an
# `exec 2>/dev/null` here used to silence the rest of the run).
redis_ping() ( # host port
    exec 3<>"/dev/tcp/$1/$2" || exit 1
    printf 'PING\r\n' >&3
    reply=""
    read -r -t 2 reply <&3 || true
    [[ "$reply" == +PONG* ]]
) 2>/dev/null

apt_install() { # package
    if [[ $(id -u) -ne 0 ]] && ! command -v sudo >/dev/null; then
        say "$1 is missing and this user cannot apt-get install it; install $1 and run again"
        return 1
    fi
    local sudo=""
    [[ $(id -u) -ne 0 ]] && sudo="sudo"
    $sudo apt-get install -y "$1" || { $sudo apt-get update && $sudo apt-get install -y "$1"; }
}

ensure_redis() {
    # The cluster tests start and stop their own redis-server processes, so
    # the binary must exist even when a Redis is already reachable.
    if ! command -v redis-server >/dev/null; then
        say "redis-server is missing: installing it with apt-get"
        apt_install redis-server || return 1
    fi
    local addr="${CONNMIX_TEST_REDIS:-127.0.0.1:6379}"
    if redis_ping "${addr%:*}" "${addr##*:}"; then
        export CONNMIX_TEST_REDIS="$addr"
        say "using the Redis on $addr"
        return
    fi
    say "no Redis answers on $addr: starting a private redis-server"
    local port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
        --logfile "" >/dev/null &
    started_redis=$!
    for _ in $(seq 1 100); do
        redis_ping 127.0.0.1 "$port" && break
        sleep 0.1
    done
    if ! redis_ping 127.0.0.1 "$port"; then
        say "redis-server on 127.0.0.1:$port did not answer PING within 10 s"
        return 1
    fi
    export CONNMIX_TEST_REDIS="127.0.0.1:$port"
    say "started redis-server on $CONNMIX_TEST_REDIS"
}

# The Socket.IO client tests (tests/socketio*.rs) drive the npm
# socket.io-client (tests/socketio/package.json) and python-socketio's client.
socketio_client_packages() {
    command -v node >/dev/null || { say "node (20+) is required for tests/socketio"; return 1; }
    (cd tests/socketio && npm install --no-audit --no-fund) || return 1
    if ! python3 -c 'import socketio, websocket, requests' 2>/dev/null; then
        say "installing python-socketio's client with pip"
        python3 -m pip install "python-socketio[client]" websocket-client || return 1
    fi
}

js_client_tests() {
    command -v node >/dev/null || { say "node (20+) is required for clients/js"; return 1; }
    (cd clients/js && npm install --no-audit --no-fund && timeout 600 npm test)
}

step "cargo fmt --all --check" "run cargo fmt --all" \
    cargo fmt --all --check
step "cargo clippy --workspace --all-targets -- -D warnings" "fix the warnings above" \
    cargo clippy --workspace --all-targets -- -D warnings
step "Redis for the tests" "the tests need redis-server and a Redis to talk to" \
    ensure_redis
step "Socket.IO client packages (npm socket.io-client, pip python-socketio)" "see the npm/pip output above" \
    socketio_client_packages
# The outer timeouts only turn a wedged run into a clear failure (exit 124);
# each test has its own deadline.
# test-hooks: lets tests/limits.rs inject a panic into a connection task.
step "cargo test --workspace --all-targets --features connmix/test-hooks" "see the failing tests above (exit 124: over 40 min)" \
    timeout 2400 cargo test --workspace --all-targets --features connmix/test-hooks
step "JS client tests (clients/js, node against a live gateway)" "see the npm output above" \
    js_client_tests
step "browser tests (scripts/browser-test.sh, headless Chromium)" "see its output above" \
    timeout 1200 scripts/browser-test.sh
say "all steps passed"
