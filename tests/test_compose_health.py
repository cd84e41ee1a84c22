"""Static tier: every long-running service has a healthcheck in compose.yaml, the worker's
and Beat's the very commands of the Kubernetes probes, and the containers' memory limits
are the Kubernetes manifests' and the worker's per-process memory cap follows from its.

Healthchecks are read as scripts/local.py plans them (the argv Docker runs, `$$`
unescaped), which is also how the run tier runs them (tests/test_health.py).
"""

import pytest

from harness import manifests
from harness.composefile import compose_model
from harness.localstack import local_runner
from harness.variants import ALL_VARIANTS, deployment_variants, variant_id

# Every service that runs until stopped has a healthcheck; the app runs once.
LONG_RUNNING = ("worker", "beat", "flower")
MIB = 2**20


def planned_checks(project) -> dict[str, list[str] | None]:
    """Each Celery service's healthcheck argv, as scripts/local.py plans it."""
    plan = local_runner(project).plan(compose_model(project))
    return {process["service"]: process["healthcheck"] for process in plan}


@pytest.mark.parametrize("variant", ALL_VARIANTS, ids=variant_id)
def test_compose_every_long_running_service_has_a_healthcheck(bake, variant):
    """The worker, Beat and Flower (where chosen) each have a healthcheck; the app has none."""
    checks = planned_checks(bake(variant))
    for service in set(LONG_RUNNING) & set(checks):
        assert checks[service], service
    assert checks["app"] is None


@pytest.mark.parametrize("variant", deployment_variants("use_kubernetes"), ids=variant_id)
def test_compose_health_checks_are_the_kubernetes_probes(bake, variant):
    """The worker's and Beat's healthchecks run the liveness probes' own commands (the
    worker's startup probe too), reading the same liveness file; Flower's asks the path
    that Flower's probes ask."""
    project = bake(variant)
    services = compose_model(project)["services"]
    checks = planned_checks(project)
    for _, container in manifests.containers(manifests.build(project, "dev")):
        name = container["name"]
        if name not in LONG_RUNNING:
            continue
        if name == "flower":
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthcheck"
            assert "/healthcheck" in " ".join(checks[name])
            continue
        assert checks[name] == container["livenessProbe"]["exec"]["command"], name
        if "startupProbe" in container:
            assert checks[name] == container["startupProbe"]["exec"]["command"], name
        variable = f"CELERY_{name.upper()}_LIVENESS_FILE"
        in_pod = {v["name"]: v.get("value") for v in container["env"]}
        assert in_pod[variable] == services[name]["environment"][variable], name


@pytest.mark.parametrize("variant", deployment_variants("use_kubernetes"), ids=variant_id)
def test_compose_memory_limits_are_the_kubernetes_limits(bake, variant):
    """Each Celery service's memory limit in compose.yaml equals its container's limit in
    the manifests; the worker's pool processes are each capped below an even share of it,
    under Compose and under Kubernetes alike."""
    project = bake(variant)
    services = compose_model(project)["services"]
    for _, container in manifests.containers(manifests.build(project, "dev")):
        name = container["name"]
        if name not in manifests.CELERY_CONTAINERS:
            continue
        limit = int(services[name]["deploy"]["resources"]["limits"]["memory"])
        assert limit == manifests.quantity_bytes(container["resources"]["limits"]["memory"])
        if name != "worker":
            continue
        (ref,) = [
            v["valueFrom"]["resourceFieldRef"]
            for v in container["env"]
            if v["name"] == "CELERY_WORKER_MEMORY_LIMIT_MIB"
        ]
        from_pod = manifests.resource_field(container, ref)
        from_compose = int(services["worker"]["environment"]["CELERY_WORKER_MEMORY_LIMIT_MIB"])
        assert from_pod * MIB == from_compose * MIB == limit
        env = dict(services["worker"]["environment"])
        settings = manifests.celery_settings(project, env)
        per_child_bytes = settings["worker_max_memory_per_child"] * 1024
        assert 0 < per_child_bytes * settings["worker_concurrency"] < limit
