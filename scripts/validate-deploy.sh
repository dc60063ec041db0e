#!/usr/bin/env bash
# Validates the deployment files offline: Dockerfile, docker-compose.yml and k8s/. No Docker engine and no
# Kubernetes cluster are needed (or used): every check is a schema or a structural check in Python.
#
#   scripts/validate-deploy.sh          # prints one line per file, exits non-zero on any failure
#
# - Dockerfile: parsed with dockerfile-parse; two stages, a numeric non-root USER, the exec-form ENTRYPOINT,
#   the SwiftPM resource bundle copied beside the binary; .dockerignore keeps .build out of the context.
# - docker-compose.yml: the Compose Specification JSON schema (the copy vendored in check-jsonschema), plus
#   the consistency rules the schema cannot express (references between services, profiles, health checks,
#   `$` interpolation).
# - k8s/: kustomization.yaml rendered offline (only `resources:` and `images:` are understood, and anything
#   else is refused rather than silently ignored), every object validated with kubernetes-validate against
#   the Kubernetes OpenAPI schemas in strict mode (unknown fields rejected), then cross-checked: references
#   resolve, security settings and probes are on every bot container, gateway shards add up.
# - k8s/optional/: custom resources (KEDA) have no schema offline; they are reported as skipped and get a
#   structural check only.
#
# Tools are installed, pinned, into .venv-deploy/ (not in git) on first use; later runs reuse it.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-deploy
# Oldest Kubernetes the manifests promise to work on, and the newest the pinned kubernetes-validate knows.
k8s_versions="1.30.0 1.37.0"
requirements=(
    kubernetes-validate==1.37.0
    check-jsonschema==0.39.0
    dockerfile-parse==2.0.1
    PyYAML==6.0.3
)

if [ ! -x "$venv/bin/python" ]; then
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
        # Debian's own python3 ships venv separately.
        echo "installing python3-venv"
        sudo=""
        if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-venv
        rm -rf "$venv"
        python3 -m venv "$venv"
    fi
fi
# Reinstall only when the pins change.
if [ "$(cat "$venv/.requirements" 2>/dev/null || true)" != "${requirements[*]}" ]; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${requirements[@]}"
    echo "${requirements[*]}" >"$venv/.requirements"
fi

K8S_VERSIONS="$k8s_versions" RENDERED="$venv/rendered-k8s.yaml" CHECK_JSONSCHEMA="$venv/bin/check-jsonschema" \
    exec "$venv/bin/python" - <<'PY'
import os
import re
import signal
import subprocess
import sys

import kubernetes_validate
import yaml
from dockerfile_parse import DockerfileParser

signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends the output quietly
K8S_VERSIONS = os.environ["K8S_VERSIONS"].split()
SUBCOMMANDS = {"up", "gateway", "trainer", "responder", "train", "generate", "inspect", "settings",
               "forget-user", "register-commands", "delete-guild", "migrate", "relearn", "flags", "probe"}
# The variables docker-compose.yml may take from the shell; any other `$NAME` is a forgotten `$$`.
COMPOSE_VARIABLES = {"DISCORD_TOKEN", "REDIS_CLUSTER_NODES", "LOG_LEVEL"}
results = []  # one bool per reported check


def report(passed, path, detail):
    results.append(passed)
    print(f"{'PASS' if passed else 'FAIL'}  {path}: {detail}")


def report_problems(path, problems, detail):
    """One line for a file: PASS with `detail`, or FAIL followed by each problem indented."""
    report(not problems, path, detail if not problems else f"{len(problems)} problem(s)")
    for problem in problems:
        print(f"        - {problem}")


# ---------------------------------------------------------------------------------------------- Dockerfile

def check_dockerfile():
    path, problems = "Dockerfile", []
    if not os.path.exists(path):
        report(False, path, "missing")
        return
    parser = DockerfileParser(path=path)
    instructions = parser.structure
    known = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER",
             "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL", "COMMENT"}
    for item in instructions:
        if item["instruction"] not in known:
            problems.append(f"line {item['startline'] + 1}: unknown instruction {item['instruction']}")
    froms = [i for i, item in enumerate(instructions) if item["instruction"] == "FROM"]
    users = []
    if len(froms) < 2:
        problems.append("expected a multi-stage build (a build stage and a runtime stage)")
    else:
        build_from = instructions[froms[0]]["value"].split()
        if not (build_from[0].startswith("swift:") and [word.lower() for word in build_from[-2:]] == ["as", "build"]):
            problems.append(f"first stage should be `FROM swift:… AS build`, is `FROM {' '.join(build_from)}`")
        build_stage = instructions[froms[0]:froms[-1]]
        if not any(i["instruction"] == "RUN" and "--static-swift-stdlib" in i["value"] for i in build_stage):
            problems.append("the build stage does not build with --static-swift-stdlib")
        if not any(i["instruction"] == "RUN" and ".resources" in i["value"] for i in build_stage):
            problems.append("the build stage does not stage the SwiftPM resource bundles (*.resources)")
        final = instructions[froms[-1]:]
        if not any(i["instruction"] == "COPY" and "--from=build" in i["value"] for i in final):
            problems.append("the runtime stage copies nothing from the build stage")
        users = [i["value"].strip() for i in final if i["instruction"] == "USER"]
        if not users:
            problems.append("the runtime stage has no USER: it would run as root")
        else:
            user = users[-1].split(":")[0]
            if user in ("root", "0") or not user.isdigit():
                problems.append(f"USER {users[-1]}: use a numeric non-root uid (runAsNonRoot can verify only that)")
        entrypoints = [i["value"].strip() for i in final if i["instruction"] == "ENTRYPOINT"]
        if not entrypoints or not entrypoints[-1].startswith("["):
            problems.append("ENTRYPOINT missing or in shell form (SIGTERM would go to a shell, not markov)")
    ignore = open(".dockerignore").read().split() if os.path.exists(".dockerignore") else []
    for entry in (".build", ".git"):
        if entry not in ignore:
            problems.append(f".dockerignore does not exclude {entry}")
    stages = len(froms)
    report_problems(path, problems, f"parses; {stages} stages, final stage "
                    f"{parser.baseimage}, USER {users[-1] if users else '?'}, exec-form ENTRYPOINT")


# -------------------------------------------------------------------------------------- docker-compose.yml

def check_compose():
    path = "docker-compose.yml"
    if not os.path.exists(path):
        report(False, path, "missing")
        return
    schema = subprocess.run([os.environ["CHECK_JSONSCHEMA"], "--builtin-schema", "vendor.compose-spec", path],
                            capture_output=True, text=True)
    problems = [] if schema.returncode == 0 else \
        ["compose-spec schema: " + line for line in (schema.stdout + schema.stderr).strip().splitlines()]

    raw = open(path).read()
    doc = yaml.safe_load(raw)
    services = doc.get("services") or {}
    volumes = doc.get("volumes") or {}
    for name, svc in services.items():
        if "image" not in svc and "build" not in svc:
            problems.append(f"{name}: neither image nor build")
        build = svc.get("build")
        if build is not None:
            context = build if isinstance(build, str) else build.get("context", ".")
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            if not os.path.exists(os.path.join(context, dockerfile)):
                problems.append(f"{name}: build file {os.path.join(context, dockerfile)} does not exist")
            command = svc.get("command") or []
            command = command.split() if isinstance(command, str) else command
            if not command or command[0] not in SUBCOMMANDS:
                problems.append(f"{name}: command {command} is not a markov subcommand")
        depends = svc.get("depends_on") or {}
        depends = {d: {} for d in depends} if isinstance(depends, list) else depends
        for dep, spec in depends.items():
            if dep not in services:
                problems.append(f"{name}: depends on undefined service {dep}")
                continue
            # A service that always runs may not require one that only runs under a profile.
            if not svc.get("profiles") and services[dep].get("profiles") and spec.get("required", True):
                problems.append(f"{name}: requires {dep}, which only exists under profile(s) "
                                f"{services[dep]['profiles']}; add `required: false`")
            condition = spec.get("condition", "service_started")
            if condition == "service_healthy" and "healthcheck" not in services[dep]:
                problems.append(f"{name}: waits for {dep} to be healthy, but {dep} has no healthcheck")
        for volume in svc.get("volumes") or []:
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source and not source.startswith((".", "/", "~")) and source not in volumes:
                problems.append(f"{name}: named volume {source} is not declared under volumes:")
    if "healthcheck" not in services.get("redis", {}):
        problems.append("redis: no healthcheck")
    # Compose interpolates `$NAME` and `${NAME…}` everywhere; a literal `$` (e.g. for a shell) must be `$$`.
    code = "\n".join(line for line in raw.splitlines() if not line.lstrip().startswith("#"))
    for variable in sorted(set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", code.replace("$$", "")))):
        if variable not in COMPOSE_VARIABLES:
            problems.append(f"${variable} would be interpolated by Compose; write $${variable} for a literal $")
    profiles = sorted({p for svc in services.values() for p in svc.get("profiles") or []})
    report_problems(path, problems, f"valid against the Compose Specification schema; {len(services)} services "
                    f"(profiles: {', '.join(profiles) or 'none'}), references, health checks and $ consistent")


# ------------------------------------------------------------------------------------------------------ k8s

def load_documents(path):
    with open(path) as stream:
        return [d for d in yaml.safe_load_all(stream) if d]


def render_kustomization():
    """What `kubectl apply -k k8s/` would send, for the kustomize features this repository uses."""
    path, problems = "k8s/kustomization.yaml", []
    kustomization = yaml.safe_load(open(path))
    unsupported = set(kustomization) - {"apiVersion", "kind", "resources", "images"}
    if unsupported:
        problems.append(f"uses {sorted(unsupported)}, which this offline renderer does not implement: "
                        "teach scripts/validate-deploy.sh first")
    resources = kustomization.get("resources") or []
    for resource in resources:
        if not os.path.isfile(os.path.join("k8s", resource)):
            problems.append(f"resource {resource} is not a file in k8s/")
    for name in sorted(os.listdir("k8s")):
        if name.endswith((".yaml", ".yml")) and name != "kustomization.yaml" and name not in resources:
            problems.append(f"k8s/{name} is not listed in resources: (optional manifests go in k8s/optional/)")
    rendered = []  # (file, object)
    for resource in resources:
        file = os.path.join("k8s", resource)
        if os.path.isfile(file):
            rendered += [(file, obj) for obj in load_documents(file)]
    # `images:` rewrites the image of every container whose image name matches.
    for image in kustomization.get("images") or []:
        for _, obj in rendered:
            for container in containers_of(obj):
                name, _, tag = container["image"].partition(":")
                if name == image["name"]:
                    new_name = image.get("newName", name)
                    if "digest" in image:
                        container["image"] = f"{new_name}@{image['digest']}"
                    else:
                        container["image"] = f"{new_name}:{image.get('newTag', tag or 'latest')}"
    with open(os.environ["RENDERED"], "w") as out:
        yaml.safe_dump_all([obj for _, obj in rendered], out, sort_keys=False)
    report_problems(path, problems, f"rendered offline: {len(resources)} files, {len(rendered)} objects "
                    f"(written to {os.environ['RENDERED']})")
    return rendered


def pod_spec(obj):
    if obj.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return obj["spec"]["template"]["spec"]
    return None


def containers_of(obj):
    spec = pod_spec(obj)
    return (spec.get("initContainers") or []) + (spec.get("containers") or []) if spec else []


def schema_check(file, objects):
    problems, names = [], []
    for obj in objects:
        label = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        names.append(label)
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                where = ".".join(str(p) for p in error.path) or "(top)"
                problems.append(f"{label} against Kubernetes {version}: {where}: {error.message}")
            except kubernetes_validate.SchemaNotFoundError:
                problems.append(f"{label}: no schema for {obj.get('apiVersion')} {obj.get('kind')} "
                                f"in Kubernetes {version} (a typo, or a custom resource that belongs in k8s/optional/)")
    versions = " and ".join(v.rsplit(".", 1)[0] for v in K8S_VERSIONS)
    report_problems(file, problems, f"{', '.join(names)}: valid against Kubernetes {versions} (strict)")


def cross_check(rendered):
    """Rules between objects that no schema can see: what `kubectl apply` accepts but the pods would trip on."""
    problems = []
    objects = [obj for _, obj in rendered]
    by_kind = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], {})[obj["metadata"]["name"]] = obj
    namespaces = set(by_kind.get("Namespace", {}))
    config = by_kind.get("ConfigMap", {}).get("markov-config", {}).get("data", {})
    http_port = int(config.get("MARKOV_HTTP_PORT", "9090"))

    for obj in objects:
        kind, name = obj["kind"], obj["metadata"]["name"]
        namespace = obj["metadata"].get("namespace")
        if kind != "Namespace" and namespace not in namespaces:
            problems.append(f"{kind}/{name}: namespace {namespace!r} is not one of the rendered Namespaces")

    def selects(selector, labels):
        return all(labels.get(k) == v for k, v in (selector or {}).items())

    workloads = [o for o in objects if pod_spec(o) is not None]
    for obj in workloads:
        kind, name, spec = obj["kind"], obj["metadata"]["name"], pod_spec(obj)
        pod_labels = obj["spec"]["template"]["metadata"].get("labels", {})
        if not selects(obj["spec"]["selector"].get("matchLabels"), pod_labels):
            problems.append(f"{kind}/{name}: selector does not match its own pod labels")
        if kind == "StatefulSet":
            service = by_kind.get("Service", {}).get(obj["spec"].get("serviceName"))
            if not service or service["spec"].get("clusterIP") != "None":
                problems.append(f"StatefulSet/{name}: serviceName must name a headless Service")
        pod_security = spec.get("securityContext", {})
        if pod_security.get("runAsNonRoot") is not True:
            problems.append(f"{kind}/{name}: pod securityContext.runAsNonRoot is not true")
        if pod_security.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{kind}/{name}: pod seccompProfile is not RuntimeDefault")
        if spec.get("terminationGracePeriodSeconds") != 30:
            problems.append(f"{kind}/{name}: terminationGracePeriodSeconds is not 30")
        mounted = {m["mountPath"]: m["name"] for c in containers_of(obj) for m in c.get("volumeMounts", [])}
        empty_dirs = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
        if mounted.get("/tmp") not in empty_dirs:
            problems.append(f"{kind}/{name}: /tmp is not an emptyDir (the root filesystem is read-only)")
        for container in containers_of(obj):
            where = f"{kind}/{name} container {container['name']}"
            security = container.get("securityContext", {})
            if security.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation is not false")
            if security.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: readOnlyRootFilesystem is not true")
            if "ALL" not in security.get("capabilities", {}).get("drop", []):
                problems.append(f"{where}: capabilities do not drop ALL")
            resources = container.get("resources", {})
            for part in ("requests", "limits"):
                if not {"cpu", "memory"} <= set(resources.get(part, {})):
                    problems.append(f"{where}: resources.{part} lacks cpu or memory")
            for source in container.get("envFrom", []):
                ref = source.get("configMapRef") or source.get("secretRef")
                kind_of = "ConfigMap" if "configMapRef" in source else "Secret"
                if ref and ref["name"] not in by_kind.get(kind_of, {}):
                    problems.append(f"{where}: envFrom names a missing {kind_of} {ref['name']}")
            for env in container.get("env", []):
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    secret = by_kind.get("Secret", {}).get(ref["name"])
                    data = {**(secret or {}).get("data", {}), **(secret or {}).get("stringData", {})}
                    if ref["key"] not in data:
                        problems.append(f"{where}: secretKeyRef {ref['name']}/{ref['key']} does not exist")
            if not container["image"].split("@")[0].split(":")[0].endswith("markov"):
                continue
            # The bot's own containers: uid of the image, probes on the HTTP port, reachable Redis.
            if pod_security.get("runAsUser") != 10001:
                problems.append(f"{where}: runAsUser is not 10001 (the image's user)")
            args = container.get("args", [])
            if not args or args[0] not in SUBCOMMANDS:
                problems.append(f"{where}: args {args} do not start with a markov subcommand")
            ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
            if ports.get("http") != http_port:
                problems.append(f"{where}: no containerPort named http on MARKOV_HTTP_PORT {http_port}")
            for probe, path in (("livenessProbe", "/health"), ("readinessProbe", "/ready")):
                get = container.get(probe, {}).get("httpGet", {})
                if get.get("path") != path or get.get("port") != "http":
                    problems.append(f"{where}: {probe} is not httpGet {path} on port http")
            if pod_labels.get("app.kubernetes.io/part-of") != "markov":
                problems.append(f"{where}: pod lacks app.kubernetes.io/part-of: markov, so the "
                                "NetworkPolicy will not let it reach Redis")
            if args and args[0] == "gateway":
                def flag(flag_name):
                    return int(args[args.index(flag_name) + 1]) if flag_name in args else None
                problems.extend(gateway_problems(where, kind, args, obj["spec"].get("replicas", 1)))

    for hpa in by_kind.get("HorizontalPodAutoscaler", {}).values():
        target = hpa["spec"]["scaleTargetRef"]
        if target["name"] not in by_kind.get(target["kind"], {}):
            problems.append(f"HorizontalPodAutoscaler/{hpa['metadata']['name']}: target "
                            f"{target['kind']}/{target['name']} does not exist")
    for kind in ("PodDisruptionBudget", "Service", "NetworkPolicy"):
        for obj in by_kind.get(kind, {}).values():
            selector = (obj["spec"].get("selector") or {})
            selector = selector.get("matchLabels", selector) if kind != "NetworkPolicy" \
                else obj["spec"]["podSelector"].get("matchLabels", {})
            if not any(selects(selector, w["spec"]["template"]["metadata"].get("labels", {})) for w in workloads):
                problems.append(f"{kind}/{obj['metadata']['name']}: selector {selector} matches no pod")
    for role in ("gateway", "trainer", "responder"):
        if role not in by_kind.get("PodDisruptionBudget", {}):
            problems.append(f"{role}: no PodDisruptionBudget")
    for role in ("gateway", "trainer", "responder"):
        if role not in by_kind.get("HorizontalPodAutoscaler", {}):
            problems.append(f"{role}: no HorizontalPodAutoscaler")
    report_problems("k8s/ (rendered)", problems, f"{len(objects)} objects cross-checked: references, "
                    "security contexts, probes, resources, /tmp, shard ranges")
    return by_kind


def gateway_problems(where, kind, args, replicas):
    """A leased gateway (a Deployment) takes no shard list; a static one (a StatefulSet) covers every shard."""
    def flag(flag_name):
        return args[args.index(flag_name) + 1] if flag_name in args else None
    per_pod, count = flag("--shards-per-pod"), flag("--shard-count")
    if kind == "Deployment":
        if per_pod is not None or flag("--shards") is not None:
            return [f"{where}: a gateway Deployment shares the shards through leases; --shards and --shards-per-pod "
                    "belong to the StatefulSet option"]
        return []
    if kind != "StatefulSet":
        return [f"{where}: the gateway is a Deployment (leased shards) or a StatefulSet (its ordinal picks its shards)"]
    if per_pod is None or count is None or int(per_pod) * replicas != int(count):
        return [f"{where}: {replicas} replicas x --shards-per-pod {per_pod} != --shard-count {count}: "
                "some shards would have no pod"]
    return []


def check_optional(by_kind):
    directory = "k8s/optional"
    for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
        if not name.endswith((".yaml", ".yml")):
            continue
        file, problems = os.path.join(directory, name), []
        custom = []
        for obj in load_documents(file):
            try:
                kubernetes_validate.validate(obj, K8S_VERSIONS[-1], strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                custom.append(obj)
            except kubernetes_validate.ValidationError as error:
                problems.append(f"{obj.get('kind')}: {'.'.join(map(str, error.path))}: {error.message}")
        for obj in load_documents(file):
            if obj.get("kind") in ("Deployment", "StatefulSet"):
                for container in obj["spec"]["template"]["spec"].get("containers", []):
                    args = container.get("args") or []
                    if args and args[0] == "gateway":
                        problems.extend(gateway_problems(f"{obj['kind']}/{obj['metadata']['name']}", obj["kind"], args,
                                                         obj["spec"].get("replicas", 1)))
        for obj in custom:
            print(f"SKIP  {file}: {obj['kind']} ({obj['apiVersion']}) is a custom resource; no schema offline, "
                  "checked structurally only")
            if obj["kind"] == "ScaledObject":
                target = obj["spec"]["scaleTargetRef"]
                if target["name"] not in by_kind.get(target.get("kind", "Deployment"), {}):
                    problems.append(f"scaleTargetRef {target['name']} is not a rendered Deployment")
                for trigger in obj["spec"].get("triggers", []):
                    # KEDA reads trigger metadata as a map of strings; a bare number is rejected.
                    for key, value in (trigger.get("metadata") or {}).items():
                        if not isinstance(value, str):
                            problems.append(f"trigger {trigger.get('type')}: metadata.{key} must be a string")
                if not obj["spec"].get("triggers"):
                    problems.append("no triggers")
        report_problems(file, problems, "structure consistent with the rendered manifests")


def guarded(label, check, *args, fallback=None):
    """Runs one check; a file that does not even parse (or has an unexpected shape) is a FAIL line too."""
    try:
        return check(*args)
    except Exception as error:  # noqa: BLE001 - any crash of a check is that file's failure
        report(False, label, f"could not be checked: {type(error).__name__}: {error}".replace("\n", " "))
        return fallback


guarded("Dockerfile", check_dockerfile)
guarded("docker-compose.yml", check_compose)
rendered = guarded("k8s/kustomization.yaml", render_kustomization, fallback=[])
files = {}
for file, obj in rendered:
    files.setdefault(file, []).append(obj)
for file, objects in files.items():
    guarded(file, schema_check, file, objects)
by_kind = guarded("k8s/ (rendered)", cross_check, rendered, fallback={})
guarded("k8s/optional", check_optional, by_kind)

failed = results.count(False)
if failed:
    print(f"deploy files: {failed} of {len(results)} checks FAILED")
    sys.exit(1)
print(f"deploy files: all {len(results)} checks passed (validated offline, not run)")
PY
