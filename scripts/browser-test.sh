#!/usr/bin/env bash
# scripts/browser-test.sh: end-to-end tests of the web pages (/demo,
# /console) in headless Chromium, driven by playwright-core from npm.
#
# - Installs Debian's chromium with apt-get when /usr/bin/chromium (or
#   $CHROMIUM) is missing; never downloads a browser build of its own.
# - Installs the npm packages into the ignored node_modules folders
#   (clients/js: ws, used by the shared gateway harness; clients/browser-test:
#   playwright-core), builds target/debug/connmix, runs the tests.
# - Screenshots go to test-artifacts/ (browser-demo.png, browser-console.png).
set -euo pipefail
cd "$(dirname "$0")/.."

chromium="${CHROMIUM:-/usr/bin/chromium}"
if [[ ! -x "$chromium" ]]; then
    echo "browser-test.sh: installing chromium" >&2
    (apt-get install -y chromium ||
        (echo "browser-test.sh: apt-get install failed; running apt-get update first" >&2 &&
            apt-get update && apt-get install -y chromium)) ||
        { echo "browser-test.sh: cannot install chromium (see apt-get's output above)" >&2; exit 1; }
fi
command -v node >/dev/null || { echo "browser-test.sh: node (20+) is required" >&2; exit 1; }

npm_install() { # folder
    if [[ -f "$1/package-lock.json" ]]; then
        (cd "$1" && npm ci --no-audit --no-fund --loglevel=error)
    else
        (cd "$1" && npm install --no-audit --no-fund --loglevel=error)
    fi
}
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
npm_install clients/js
npm_install clients/browser-test

cargo build -p connmix --bin connmix
mkdir -p test-artifacts
cd clients/browser-test
CHROMIUM="$chromium" npm test
