#!/usr/bin/env bash
# The monitoring files (monitoring/, k8s/optional/prometheus-rule.yaml), checked with Prometheus's own tools
# (Debian's `prometheus` package, installed by scripts/install-deps.sh).
#
#   scripts/test-monitoring.sh             # promtool check rules and config, promtool test rules (every alert
#                                          # fires on its series and stays quiet on the others), and the
#                                          # PrometheusRule in k8s/optional/ holds exactly monitoring/alerts.yml
#   scripts/test-monitoring.sh render      # writes k8s/optional/prometheus-rule.yaml from monitoring/alerts.yml
#   scripts/test-monitoring.sh e2e MARKOV  # a real Prometheus scrapes a real `markov trainer` (the binary MARKOV)
#                                          # with the shipped rules; stopping its Redis fires MarkovRoleNotReady,
#                                          # restarting it clears the alert (about 2.5 minutes: the rule's `for`)
#
# make test runs the first and the last (scripts/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

python=python3
if [ -x .venv-deploy/bin/python ]; then python=.venv-deploy/bin/python; fi  # has PyYAML (scripts/validate-deploy.sh)

rule_file=k8s/optional/prometheus-rule.yaml

render() {
    "$python" - "$rule_file" <<'PY'
import sys
import yaml
rules = yaml.safe_load(open("monitoring/alerts.yml"))
document = {
    "apiVersion": "monitoring.coreos.com/v1",
    "kind": "PrometheusRule",
    "metadata": {"name": "markov-alerts", "namespace": "markov", "labels": {"app.kubernetes.io/part-of": "markov"}},
    "spec": {"groups": rules["groups"]},
}
with open(sys.argv[1], "w") as handle:
    handle.write("# Optional: markov's alerting rules for the Prometheus Operator (a PrometheusRule custom resource).\n"
                 "# Generated from monitoring/alerts.yml by `scripts/test-monitoring.sh render`: edit that file, not this\n"
                 "# one (make test fails while they differ). Apply where the operator runs: kubectl apply -f " + sys.argv[1] + "\n"
                 "# (your Prometheus's ruleSelector may need these labels). What each alert means: docs/deploy.md, Alerts.\n")
    yaml.safe_dump(document, handle, sort_keys=False, width=120, allow_unicode=True)
PY
}

check() {
    command -v promtool >/dev/null || { echo "promtool not found: run scripts/install-deps.sh" >&2; exit 1; }
    promtool check rules monitoring/alerts.yml
    promtool check config --syntax-only monitoring/prometheus.yml
    promtool test rules monitoring/alerts.test.yml
    # The dashboard: it parses, its panels are whole, and every query is valid PromQL (each becomes a recording
    # rule that promtool checks).
    local queries
    queries=$(mktemp --suffix .yml)
    python3 - "$queries" <<'PY'
import json, sys
dashboard = json.load(open("monitoring/dashboard.json"))
problems, rules = [], []
ids = [panel.get("id") for panel in dashboard["panels"]]
if len(set(ids)) != len(ids):
    problems.append("panel ids are not unique")
for panel in dashboard["panels"]:
    if not panel.get("title") or not panel.get("targets"):
        problems.append(f"panel {panel.get('id')}: no title or no queries")
    for target in panel.get("targets", []):
        expr = target["expr"].replace("$__rate_interval", "5m").replace("$job", "markov.*")
        rules.append({"record": f"dashboard:panel_{panel['id']}_{target['refId']}", "expr": expr})
if problems:
    sys.exit("monitoring/dashboard.json: " + "; ".join(problems))
json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(sys.argv[1], "w"))
print(f"monitoring/dashboard.json: {len(dashboard['panels'])} panels, {len(rules)} queries")
PY
    promtool check rules "$queries"
    rm -f "$queries"
    "$python" - "$rule_file" <<'PY'
import sys
import yaml
rules = yaml.safe_load(open("monitoring/alerts.yml"))["groups"]
resource = yaml.safe_load(open(sys.argv[1]))
if resource.get("kind") != "PrometheusRule" or resource["spec"]["groups"] != rules:
    sys.exit(f"{sys.argv[1]} does not hold monitoring/alerts.yml's rules: run scripts/test-monitoring.sh render")
print(f"{sys.argv[1]}: the same {sum(len(g['rules']) for g in rules)} rules as monitoring/alerts.yml")
PY
}

e2e() {
    local markov=$1
    command -v prometheus >/dev/null || { echo "prometheus not found: run scripts/install-deps.sh" >&2; exit 1; }
    python3 - "$markov" <<'PY'
"""A real Prometheus, the shipped rules, a real trainer on a private Redis: a fault fires an alert that clears."""
import json, os, shutil, signal, socket, subprocess, sys, tempfile, time, urllib.request

markov = sys.argv[1]
work = tempfile.mkdtemp(prefix="markov-monitoring-")
processes = []

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

def start(command, log, **kw):
    process = subprocess.Popen(command, stdout=open(os.path.join(work, log), "w"), stderr=subprocess.STDOUT, **kw)
    processes.append(process)
    return process

def query(port, expression):
    url = f"http://127.0.0.1:{port}/api/v1/query?query=" + urllib.parse.quote(expression)
    return json.load(urllib.request.urlopen(url, timeout=5))["data"]["result"]

def alerts(port):
    return json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/alerts", timeout=5))["data"]["alerts"]

def wait(what, predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(1)
    sys.exit(f"monitoring e2e: timed out waiting for {what} (logs in {work})")

def start_redis(port):
    return start(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"], f"redis-{time.time()}.log")

import urllib.parse
ok = False
try:
    redis_port, metrics_port, prometheus_port = free_port(), free_port(), free_port()
    redis = start_redis(redis_port)
    env = dict(os.environ, REDIS_URL=f"redis://127.0.0.1:{redis_port}", MARKOV_HTTP_PORT=str(metrics_port),
               MARKOV_PARTITIONS="2", LOG_LEVEL="warning")
    time.sleep(0.5)
    start([markov, "trainer"], "trainer.log", env=env)
    shutil.copy("monitoring/alerts.yml", os.path.join(work, "alerts.yml"))
    with open(os.path.join(work, "prometheus.yml"), "w") as handle:
        handle.write(f"""global:
  scrape_interval: 2s
  scrape_timeout: 2s
  evaluation_interval: 2s
rule_files: [alerts.yml]
scrape_configs:
  - job_name: markov-trainer
    static_configs: [{{targets: ["127.0.0.1:{metrics_port}"]}}]
""")
    subprocess.run(["promtool", "check", "config", os.path.join(work, "prometheus.yml")], check=True)
    start(["prometheus", f"--config.file={work}/prometheus.yml", f"--storage.tsdb.path={work}/data",
           f"--web.listen-address=127.0.0.1:{prometheus_port}"], "prometheus.log")
    wait("the trainer scraped and ready", lambda: any(r["value"][1] == "1" for r in query(prometheus_port, 'markov_ready{job="markov-trainer"}')), 60)
    wait("the trainer's partitions owned", lambda: len(query(prometheus_port, "markov_trainer_partition_owned == 1")) == 2, 60)
    print("monitoring e2e: trainer scraped, ready, owning both partitions; stopping its Redis")
    redis.terminate(); redis.wait()
    wait("MarkovRoleNotReady pending", lambda: any(a["labels"]["alertname"] == "MarkovRoleNotReady" for a in alerts(prometheus_port)), 60)
    started = time.monotonic()
    wait("MarkovRoleNotReady firing", lambda: any(a["labels"]["alertname"] == "MarkovRoleNotReady" and a["state"] == "firing" for a in alerts(prometheus_port)), 200)
    print(f"monitoring e2e: MarkovRoleNotReady firing {time.monotonic() - started:.0f} s after it went pending; restarting Redis")
    redis = start_redis(redis_port)
    wait("MarkovRoleNotReady cleared", lambda: not any(a["labels"]["alertname"] == "MarkovRoleNotReady" for a in alerts(prometheus_port)), 60)
    print("monitoring e2e: MarkovRoleNotReady cleared after recovery")
    ok = True
finally:
    for process in reversed(processes):
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
if ok:
    shutil.rmtree(work, ignore_errors=True)
PY
}

case "${1:-check}" in
render) render; echo "wrote $rule_file" ;;
check) check ;;
e2e) e2e "${2:?usage: scripts/test-monitoring.sh e2e MARKOV_BINARY}" ;;
*) echo "usage: scripts/test-monitoring.sh [check|render|e2e MARKOV]" >&2; exit 2 ;;
esac
