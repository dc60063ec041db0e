#!/usr/bin/env bash
# The web console's tests (tests/web): every endpoint over HTTP against a real `markov up`, and the page in headless
# Chromium. Installs Debian's chromium and chromium-driver and Selenium (in .venv-web) when missing; if the browser
# cannot be installed, the browser tests are skipped with a message and the HTTP tests still run.
#   scripts/test-web.sh BINARY   (the `markov` binary to test; default .build/debug/markov)
set -euo pipefail
cd "$(dirname "$0")/.."
binary="${1:-.build/debug/markov}"
venv=.venv-web
requirements=(selenium==4.51.0)

if ! command -v chromedriver >/dev/null || ! command -v chromium >/dev/null; then
    echo "installing chromium and chromium-driver for the browser tests"
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver; } >/dev/null; then
        echo "chromium could not be installed: the browser tests will be skipped" >&2
    fi
fi
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
if [ "$(cat "$venv/.requirements" 2>/dev/null || true)" != "${requirements[*]}" ]; then
    if "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${requirements[@]}"; then
        echo "${requirements[*]}" >"$venv/.requirements"
    else
        echo "selenium could not be installed: the browser tests will be skipped" >&2
    fi
fi
MARKOV_BINARY="$binary" SCREENSHOTS="${SCREENSHOTS:-.build/web-console}" "$venv/bin/python" -m unittest -v tests/web/test_web_console.py
