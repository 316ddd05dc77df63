#!/usr/bin/env python3
"""Renders every overlay of deploy/ and checks what comes out, offline.

Run by deploy/check.sh, which installs the pinned tools first:

    check.py --kubectl PATH [--kubectl PATH ...] [--kubernetes-version V ...]

For each overlay under deploy/overlays (rendered with secrets.env.example as
its secrets.env, in a copy of deploy/):

* every kubectl given renders it (`kubectl kustomize`); the renderings must
  agree (apart from generated-name hashes and base64 line wrapping);
* every Kubernetes object validates, strictly (no unknown fields), against
  the Kubernetes schemas bundled with kubernetes-validate, for each version
  asked for;
* the KEDA objects validate, strictly, against the openAPIV3Schema of KEDA's
  CRDs vendored in deploy/keda/;
* every BIRDSONG_* name in the output is a setting of common/src/config.rs;
* references resolve (Secret and ConfigMap keys, the ScaledObject's target
  and authentication), the roles have probes on the ports their listen
  settings give, requests and limits, the worker's thread count matches its
  CPU limit, the KEDA trigger watches the classify queue the settings name,
  the migration Job comes before the roles (with the ServiceAccount it runs
  as), every pod runs as a rendered ServiceAccount without a Kubernetes API
  token, an IAM role annotation is an IAM role ARN, and the PostgreSQL
  connections the roles can open stay within PostgreSQL's default limit.
"""

import argparse
import base64
import copy
import math
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import jsonschema
import kubernetes_validate
import yaml

DEPLOY = pathlib.Path(__file__).resolve().parent
ROOT = DEPLOY.parent
ROLES = ("api", "worker", "retrainer")
# The setting each role's health endpoints listen on.
LISTEN = {
    "api": "BIRDSONG_API_LISTEN",
    "worker": "BIRDSONG_METRICS_LISTEN",
    "retrainer": "BIRDSONG_RETRAINER_LISTEN",
}
# PostgreSQL's default max_connections less superuser_reserved_connections.
PG_DEFAULT_CONNECTIONS = 100 - 3
# Labels deploy/apply.sh applies first, before waiting for the migration.
FIRST_PHASE = ("config", "migrate")

failures = []


def fail(where, message):
    failures.append(f"{where}: {message}")


def settings():
    """The settings of common/src/config.rs: name -> default."""
    text = (ROOT / "common/src/config.rs").read_text()
    found = dict(re.findall(r'\bs\(\s*"(BIRDSONG_[A-Z0-9_]+)",\s*"((?:[^"\\]|\\.)*)"', text))
    if len(found) < 20:
        sys.exit(f"read only {len(found)} settings from common/src/config.rs: has its form changed?")
    return found


def render(kubectl, overlay):
    out = subprocess.run(
        [kubectl, "kustomize", str(overlay)], capture_output=True, text=True
    )
    if out.returncode != 0:
        sys.exit(f"{kubectl} kustomize {overlay} failed:\n{out.stderr}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def kind_name(doc):
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def normalised(docs):
    """Documents with generated-name hashes removed and Secret data decoded."""
    hashed = {}
    for d in docs:
        if d["kind"] in ("Secret", "ConfigMap"):
            name = d["metadata"]["name"]
            hashed[name] = re.sub(r"-[a-z0-9]{10}$", "", name)
    text = yaml.safe_dump(docs, sort_keys=True)
    for name, plain in hashed.items():
        text = text.replace(name, plain + "-HASH")
    out = yaml.safe_load(text)
    for d in out:
        if d["kind"] == "Secret":
            d["data"] = {
                k: base64.b64decode("".join(v.split())).decode() for k, v in d.get("data", {}).items()
            }
    return sorted(out, key=kind_name)


def strict(schema):
    """A CRD schema that rejects unknown fields, as the API server's strict
    field validation does (structural schemas prune them otherwise)."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
    return schema


def crd_schemas():
    schemas = {}
    for path in sorted((DEPLOY / "keda").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group = crd["spec"]["group"]
        kind = crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                schemas[(f"{group}/{version['name']}", kind)] = strict(
                    version["schema"]["openAPIV3Schema"]
                )
    return schemas


def validate(docs, where, versions, crds):
    for d in docs:
        key = (d.get("apiVersion"), d.get("kind"))
        if key in crds:
            errors = sorted(
                jsonschema.Draft4Validator(crds[key]).iter_errors(d), key=lambda e: list(e.path)
            )
            for e in errors:
                fail(f"{where} {kind_name(d)}", f"KEDA CRD schema: {'/'.join(map(str, e.path))}: {e.message}")
            if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", d["metadata"].get("name", "")):
                fail(f"{where} {kind_name(d)}", "metadata.name is not a DNS-1123 label")
            continue
        if key[0] and key[0].endswith("keda.sh/v1alpha1"):
            fail(f"{where} {kind_name(d)}", "a KEDA kind with no vendored CRD in deploy/keda")
            continue
        for version in versions:
            try:
                kubernetes_validate.validate(d, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                fail(f"{where} {kind_name(d)}", f"Kubernetes {version}: {'/'.join(map(str, e.path))}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError:
                fail(f"{where} {kind_name(d)}", f"no Kubernetes {version} schema for this kind")


def strings(node):
    if isinstance(node, dict):
        for k, v in node.items():
            yield str(k)
            yield from strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from strings(v)
    elif node is not None:
        yield str(node)


def check_names(docs, where, known):
    seen = set()
    for d in docs:
        for s in strings(d):
            for name in re.findall(r"BIRDSONG_[A-Z0-9_]*[A-Z0-9]", s):
                seen.add(name)
                if name not in known:
                    fail(f"{where} {kind_name(d)}", f"{name} is not a setting of common/src/config.rs")
    if len(seen) < 10:
        fail(where, f"only {len(seen)} BIRDSONG_* names: are the roles configured?")
    return seen


def cpu(quantity):
    q = str(quantity)
    return int(q[:-1]) / 1000 if q.endswith("m") else float(q)


def check_semantics(docs, where, known):
    by = {}
    for d in docs:
        by.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    secrets = {
        n: set(d.get("data", {})) | set(d.get("stringData", {})) for n, d in by.get("Secret", {}).items()
    }
    configmaps = {n: d.get("data", {}) for n, d in by.get("ConfigMap", {}).items()}

    def pod_env(where, pod):
        """Resolves every variable a pod's first container gets; checks refs."""
        env = {}
        c = pod["containers"][0]
        for src in c.get("envFrom", []):
            if "configMapRef" in src:
                name = src["configMapRef"]["name"]
                if name not in configmaps:
                    fail(where, f"envFrom ConfigMap {name} is not rendered")
                env.update(configmaps.get(name, {}))
            if "secretRef" in src:
                name = src["secretRef"]["name"]
                if name not in secrets:
                    fail(where, f"envFrom Secret {name} is not rendered")
                env.update({k: "<secret>" for k in secrets.get(name, ())})
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                if ref["key"] not in secrets.get(ref["name"], ()):
                    fail(where, f"{e['name']}: Secret {ref['name']} has no key {ref['key']}")
                env[e["name"]] = "<secret>"
            ref = e.get("valueFrom", {}).get("configMapKeyRef")
            if ref:
                if ref["key"] not in configmaps.get(ref["name"], {}):
                    fail(where, f"{e['name']}: ConfigMap {ref['name']} has no key {ref['key']}")
                env[e["name"]] = configmaps.get(ref["name"], {}).get(ref["key"])
            if "value" in e:
                env[e["name"]] = e["value"]
        return env

    def resources(where, c):
        r = c.get("resources", {})
        for part in ("requests", "limits"):
            for res in ("cpu", "memory"):
                if res not in r.get(part, {}):
                    fail(where, f"no {res} in resources.{part}")

    accounts = by.get("ServiceAccount", {})

    def identity(where, pod):
        """The pod runs as a rendered ServiceAccount, without an API token."""
        name = pod.get("serviceAccountName")
        if not name:
            fail(where, "no serviceAccountName (it would run as the namespace's default account)")
        elif name not in accounts:
            fail(where, f"ServiceAccount {name} is not rendered")
        elif pod.get("automountServiceAccountToken", accounts[name].get("automountServiceAccountToken", True)):
            fail(where, "mounts a Kubernetes API token it does not need")

    for name, sa in accounts.items():
        arn = sa["metadata"].get("annotations", {}).get("eks.amazonaws.com/role-arn")
        if arn is not None and not re.fullmatch(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+", arn):
            fail(f"{where} ServiceAccount/{name}", f"eks.amazonaws.com/role-arn {arn!r} is not an IAM role ARN")

    deployments = by.get("Deployment", {})
    envs = {}
    for role in ROLES:
        name = f"birdsong-{role}"
        here = f"{where} Deployment/{name}"
        d = deployments.get(name)
        if not d:
            fail(where, f"no Deployment {name}")
            continue
        pod = d["spec"]["template"]["spec"]
        c = pod["containers"][0]
        if c.get("command", [None])[0] != name:
            fail(here, f"does not run {name}")
        identity(here, pod)
        env = envs[role] = pod_env(here, pod)
        for needed in ("BIRDSONG_DATABASE_URL", "BIRDSONG_AMQP_URL", "BIRDSONG_S3_ENDPOINT", "BIRDSONG_S3_BUCKET"):
            if needed not in env:
                fail(here, f"{needed} is not set")
        resources(here, c)
        listen = env.get(LISTEN[role], known.get(LISTEN[role], ""))
        host, _, port = listen.rpartition(":")
        if host != "0.0.0.0":
            fail(here, f"{LISTEN[role]}={listen}: probes and other pods cannot reach it")
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
            get = c.get(probe, {}).get("httpGet")
            if not get:
                fail(here, f"no HTTP {probe}")
                continue
            if get.get("path") != path:
                fail(here, f"{probe} asks {get.get('path')}, not {path}")
            p = ports.get(get["port"], get["port"])
            if str(p) != port:
                fail(here, f"{probe} on port {p}, but {LISTEN[role]} listens on {port}")
        grace = pod.get("terminationGracePeriodSeconds", 30)
        if role == "worker":
            if "replicas" in d["spec"]:
                fail(here, "sets replicas, which KEDA owns (each apply would reset them)")
            if grace < 60:
                fail(here, f"terminationGracePeriodSeconds {grace} < 60")
            limit = c.get("resources", {}).get("limits", {}).get("cpu")
            threads = env.get("BIRDSONG_WORKER_THREADS")
            if limit is None or threads is None or int(threads) != math.ceil(cpu(limit)):
                fail(here, f"BIRDSONG_WORKER_THREADS={threads} does not match its CPU limit {limit}")
        if role == "retrainer":
            if d["spec"].get("replicas") != 1 or d["spec"].get("strategy", {}).get("type") != "Recreate":
                fail(here, "the retrainer must be one replica with the Recreate strategy")
            if grace < 120:
                fail(here, f"terminationGracePeriodSeconds {grace} < 120")
        if role == "api":
            svc = by.get("Service", {}).get(name)
            if not svc:
                fail(here, "no Service")
            elif not set(svc["spec"]["selector"].items()) <= set(d["spec"]["template"]["metadata"]["labels"].items()):
                fail(here, "the Service does not select the api pods")

    # The migration Job, and what apply.sh applies before waiting for it.
    job = by.get("Job", {}).get("birdsong-migrate")
    here = f"{where} Job/birdsong-migrate"
    if not job:
        fail(where, "no migration Job birdsong-migrate")
    else:
        pod = job["spec"]["template"]["spec"]
        if pod["containers"][0].get("command", [None])[0] != "birdsong-migrate":
            fail(here, "does not run birdsong-migrate")
        identity(here, pod)
        env = envs["migrate"] = pod_env(here, pod)
        if "BIRDSONG_DATABASE_URL" not in env:
            fail(here, "BIRDSONG_DATABASE_URL is not set")
        resources(here, pod["containers"][0])
        first = {
            kind_name(d)
            for d in docs
            if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") in FIRST_PHASE
        }
        needed = {"Job/birdsong-migrate"}
        if pod.get("serviceAccountName"):
            needed.add(f"ServiceAccount/{pod['serviceAccountName']}")
        c = pod["containers"][0]
        needed |= {f"ConfigMap/{s['configMapRef']['name']}" for s in c.get("envFrom", []) if "configMapRef" in s}
        needed |= {
            f"Secret/{e['valueFrom']['secretKeyRef']['name']}"
            for e in c.get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {})
        }
        for n in sorted(needed - first):
            fail(here, f"{n} is not labelled for the first phase of apply.sh")
        for n in sorted(first - needed):
            if n.startswith(("Deployment/", "ScaledObject/")):
                fail(here, f"{n} would start with the migration, not after it")

    # KEDA.
    scaled = by.get("ScaledObject", {})
    if len(scaled) != 1:
        fail(where, f"{len(scaled)} ScaledObjects, expected one for the workers")
    for name, so in scaled.items():
        here = f"{where} ScaledObject/{name}"
        target = so["spec"]["scaleTargetRef"]
        if target.get("kind", "Deployment") != "Deployment" or target["name"] != "birdsong-worker":
            fail(here, f"scales {target}, not Deployment/birdsong-worker")
        triggers = so["spec"].get("triggers", [])
        if len(triggers) != 1 or triggers[0]["type"] != "rabbitmq":
            fail(here, "expected one rabbitmq trigger")
            continue
        t = triggers[0]
        meta = t["metadata"]
        env = envs.get("worker", {})
        queue = env.get("BIRDSONG_QUEUE_PREFIX", known["BIRDSONG_QUEUE_PREFIX"]) + env.get(
            "BIRDSONG_CLASSIFY_QUEUE", known["BIRDSONG_CLASSIFY_QUEUE"]
        )
        if meta.get("queueName") != queue:
            fail(here, f"watches queue {meta.get('queueName')!r}; the workers consume {queue!r}")
        if meta.get("mode") != "QueueLength" or not str(meta.get("value", "")).isdigit():
            fail(here, "expected mode QueueLength with an integer value")
        if "host" in meta:
            fail(here, "the broker URL (with its password) belongs in the TriggerAuthentication")
        auth = t.get("authenticationRef", {}).get("name")
        ta = by.get("TriggerAuthentication", {}).get(auth)
        if not ta:
            fail(here, f"TriggerAuthentication {auth} is not rendered")
            continue
        refs = {r["parameter"]: r for r in ta["spec"].get("secretTargetRef", [])}
        host = refs.get("host")
        if not host:
            fail(here, f"TriggerAuthentication {auth} gives no host")
        elif host["key"] not in secrets.get(host["name"], ()):
            fail(here, f"TriggerAuthentication {auth}: Secret {host['name']} has no key {host['key']}")
        elif host["key"] != "BIRDSONG_AMQP_URL":
            fail(here, "KEDA should read the broker the workers use (BIRDSONG_AMQP_URL)")

    # PostgreSQL connections: the most every role can hold at once.
    pool = lambda role: int(envs.get(role, {}).get("BIRDSONG_DATABASE_MAX_CONNECTIONS", known["BIRDSONG_DATABASE_MAX_CONNECTIONS"]))
    replicas = {
        "api": deployments.get("birdsong-api", {}).get("spec", {}).get("replicas", 1),
        "worker": max((so["spec"].get("maxReplicaCount", 100) for so in scaled.values()), default=1),
        "retrainer": 1,
        "migrate": 1,
    }
    total = sum(replicas[r] * pool(r) for r in replicas if r in envs)
    budget = ", ".join(f"{r} {replicas[r]}x{pool(r)}" for r in replicas if r in envs)
    print(f"  {where}: PostgreSQL connections at most {total} ({budget})")
    if total > PG_DEFAULT_CONNECTIONS:
        fail(where, f"the roles may open {total} PostgreSQL connections, over the default limit {PG_DEFAULT_CONNECTIONS}")


def main():
    sys.stdout.reconfigure(line_buffering=True)
    ap = argparse.ArgumentParser()
    ap.add_argument("--kubectl", action="append", required=True)
    ap.add_argument("--kubernetes-version", action="append")
    args = ap.parse_args()
    versions = args.kubernetes_version or ["1.30.0", "1.37.0"]
    known = settings()
    crds = crd_schemas()
    if not {"ScaledObject", "TriggerAuthentication"} <= {k for _, k in crds}:
        sys.exit("deploy/keda lacks the ScaledObject or TriggerAuthentication CRD")

    with tempfile.TemporaryDirectory() as tmp:
        copy_ = pathlib.Path(tmp) / "deploy"
        shutil.copytree(DEPLOY, copy_, ignore=shutil.ignore_patterns("secrets.env", "__pycache__"))
        overlays = sorted(p for p in (copy_ / "overlays").iterdir() if (p / "kustomization.yaml").exists())
        if not overlays:
            sys.exit("no overlays under deploy/overlays")
        for overlay in overlays:
            where = f"overlays/{overlay.name}"
            shutil.copy(overlay / "secrets.env.example", overlay / "secrets.env")
            renderings = [(k, render(k, overlay)) for k in args.kubectl]
            docs = renderings[0][1]
            for k, other in renderings[1:]:
                if normalised(other) != normalised(docs):
                    fail(where, f"{k} renders it differently from {renderings[0][0]}")
            validate(docs, where, versions, crds)
            names = check_names(docs, where, known)
            check_semantics(docs, where, known)
            kinds = sorted({d["kind"] for d in docs})
            print(
                f"  {where}: {len(docs)} objects ({', '.join(kinds)}), "
                f"{len(names)} BIRDSONG_* names, rendered by {len(renderings)} kubectl"
            )

    if failures:
        print("\n".join(["deploy check FAILED:"] + [f"  {f}" for f in failures]), file=sys.stderr)
        sys.exit(1)
    print(f"deploy check: every overlay renders and validates (Kubernetes {', '.join(versions)}, KEDA CRDs)")


if __name__ == "__main__":
    main()
