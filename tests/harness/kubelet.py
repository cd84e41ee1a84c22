"""A Kubernetes pod's container as a local process of a LocalStack, the way the kubelet
would start it: the manifest's command and args, the environment built from the
ConfigMap and Secret (harness.manifests), on this stack's servers."""

from harness import manifests
from harness.localstack import LocalProcess, LocalStack, node_name


def worker_hostname(pod: str) -> str:
    """The --hostname a worker pod's process gets: each pod has a host name of its own."""
    return f"{pod}@%h"


def pod_node(pod: str) -> str:
    """The Celery node name a worker pod answers as."""
    return node_name(worker_hostname(pod))


def kubelet_process(
    servers: LocalStack, objects: list[dict], component: str, pod: str
) -> LocalProcess:
    """A pod's `component` container (its Deployment's or Job's) as a local process: the
    manifest's command and args, and the environment the kubelet builds from the
    ConfigMap and Secret, except what differs on one host. The broker and backend URLs
    point at this stack's servers (the static tier proves the dev Secret's are compose's,
    which scripts/local.py points here the same way); each emptyDir mount is a folder of
    the pod's own; a worker gets --hostname, a node name of its own, as each pod has a
    host name of its own."""
    kind = "Job" if component == "app" else "Deployment"
    container = manifests.workload_container(objects, kind, component)
    environment = manifests.container_environment(objects, container)
    local = servers.environment("worker")
    for url in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
        environment[url] = local[url]
    for mount in container.get("volumeMounts", []):
        folder = servers.workdir / pod / mount["name"]
        folder.mkdir(parents=True)
        environment = {
            name: value.replace(mount["mountPath"], str(folder), 1)
            if value.startswith(mount["mountPath"])
            else value
            for name, value in environment.items()
        }
    program, *args = manifests.container_argv(container, environment)
    argv = [str(servers.venv / "bin" / program), *args]
    if component == "worker":
        argv.append(f"--hostname={worker_hostname(pod)}")
    return servers.launch(pod, argv, {**servers.host_environment(), **environment})
