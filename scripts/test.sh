#!/usr/bin/env bash
# `make test`: installs what is missing, starts the test Redis servers, runs `swift test`, and stops the
# servers whatever the outcome.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/validate-deploy.sh
scripts/test-monitoring.sh
trap 'scripts/test-redis.sh stop' EXIT
scripts/test-redis.sh start
export MARKOV_TEST_REDIS_URL="redis://127.0.0.1:${MARKOV_TEST_STANDALONE_PORT:-16379}"
export MARKOV_TEST_DISCORD_REDIS_URL="redis://127.0.0.1:${MARKOV_TEST_DISCORD_PORT:-16380}"
export MARKOV_TEST_CLUSTER_NODES="127.0.0.1:17001,127.0.0.1:17002,127.0.0.1:17003"
export MARKOV_TEST_REDIS_SERVER="$(command -v redis-server)"
# Two runs: the Discord suites flood real processes across both cores, which would stretch the Redis client
# tests' tight deadlines if they ran side by side. The second run reuses the first one's build.
swift test --skip DiscordGatewayTests "$@"
# A real Prometheus scrapes a real trainer (the binary the tests just built) with the shipped alerting rules.
scripts/test-monitoring.sh e2e "$(swift build --show-bin-path "$@")/markov"
# The web console of `markov up`: its endpoints over HTTP and the page in headless Chromium.
scripts/test-web.sh "$(swift build --show-bin-path "$@")/markov"
swift test --filter DiscordGatewayTests "$@"
