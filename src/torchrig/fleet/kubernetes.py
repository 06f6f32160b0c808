"""Kubernetes: an Indexed Job with one pod per node, applied with the official client, and its pods' states.

The pods spread over nodes (a topology spread constraint on the host name, ``DoNotSchedule``), ask for the
environment's accelerator (``nvidia.com/gpu`` / ``amd.com/gpu`` limits; nothing for cpu), may select a GPU model
(``nvidia.com/gpu.product``), get ``/dev/shm`` from a memory-backed emptyDir, run as the image's non-root user, and
may be queued by Kueue (``kueue.x-k8s.io/queue-name``). Each pod writes its records to a local emptyDir and, when
the suite ends, moves them onto the PersistentVolumeClaim in one rename: ``<pvc>/<job>/<index>-<node>/`` -- the
same layout as a Slurm job's, so ``torchrig report`` and ``torchrig fleet`` read both alike.

The ``kubernetes`` package is optional (``pip install 'torchrig[fleet]'``); ``--dry-run`` needs nothing.
"""

from __future__ import annotations

import importlib
import re
import secrets
from dataclasses import dataclass
from typing import Any

from torchrig.errors import SchedulerError, UsageError
from torchrig.fleet.plan import FleetPlan, sh_words
from torchrig.fleet.state import ElementState
from torchrig.results.contract import DATA_IN, HOSTNAME_ENV, RESULTS_IN

__all__ = [
    "FLEET_MOUNT",
    "GPU_PRODUCT_LABEL",
    "QUEUE_LABEL",
    "KubernetesOptions",
    "apply",
    "job_manifest",
    "parse_pods",
    "query",
]

FLEET_MOUNT = "/fleet"  # where the PVC is mounted in the pods
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
_RESOURCE = {"cuda": "nvidia.com/gpu", "rocm": "amd.com/gpu"}
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"


@dataclass(frozen=True, kw_only=True)
class KubernetesOptions:
    pvc: str
    namespace: str = "default"
    name: str | None = None  # default: torchrig-<env>-<suite>-<random>
    queue: str | None = None
    gpu_product: str | None = None
    gpus_per_node: int = 1
    uid: int = 1000  # the image's user (images/Dockerfile TORCHRIG_UID)
    gid: int = 1000

    def __post_init__(self) -> None:
        for flag, value in (("--pvc", self.pvc), ("--namespace", self.namespace), ("--name", self.name)):
            if value is not None and not (_NAME.match(value) and len(value) <= 63):
                raise UsageError(f"{flag} {value!r} is not a Kubernetes name (lower-case letters, digits and '-', "
                                 "at most 63 characters)")
        if self.uid == 0:
            raise UsageError("--uid 0: the pods run as the image's non-root user (runAsNonRoot); give its UID")
        if self.gpus_per_node < 1:
            raise UsageError(f"--gpus-per-node {self.gpus_per_node}: give at least 1")


def _job_name(plan: FleetPlan, opts: KubernetesOptions) -> str:
    if opts.name:
        return opts.name
    # The pods' hostnames are <job>-<index>-<random>: keep the job name well inside 63 characters.
    return f"torchrig-{plan.env.id}-{plan.suite}-{secrets.token_hex(3)}"[:52].rstrip("-")


def _pod_script(plan: FleetPlan) -> str:
    """POSIX sh run in the pod: the suites, then exit.json, then the node's folder onto the PVC in one rename."""
    names = {"index": "JOB_COMPLETION_INDEX"}
    lines = [
        'job=$TORCHRIG_FLEET_JOB; index=$JOB_COMPLETION_INDEX; host=$NODE_NAME; node="$index-$host"',
        f'jobdir={FLEET_MOUNT}/$job; mkdir -p "$jobdir"',
        'started=$(date -u +%FT%TZ); t0=$(date +%s); rc=0; failed=""',
    ]
    for suite in plan.suites:
        lines += [
            f"{{ {sh_words(plan.command(suite), names)}; echo $? >/tmp/{suite}.rc; }} 2>&1 | "
            f"tee -a {RESULTS_IN}/node.log",
            f"code=$(cat /tmp/{suite}.rc)",
            f'if [ "$code" != 0 ]; then [ "$rc" != 0 ] || rc=$code; failed="$failed {suite} exit $code"; fi',
        ]
    lines += [
        'failed=${failed# }',
        "printf '{\"schema\": \"torchrig.fleet-node\", \"version\": 1, \"job\": \"%s\", \"index\": %d, "
        "\"host\": \"%s\", \"folder\": \"%s\", \"exit_code\": %d, \"why\": \"%s\", \"started\": \"%s\", "
        "\"ended\": \"%s\", \"elapsed_s\": %d}\\n' \"$job\" \"$index\" \"$host\" \"$node\" \"$rc\" \"$failed\" "
        f"\"$started\" \"$(date -u +%FT%TZ)\" \"$(( $(date +%s) - t0 ))\" >{RESULTS_IN}/exit.json",
        f'rm -rf "$jobdir/.$node.tmp" && cp -R {RESULTS_IN} "$jobdir/.$node.tmp" && '
        f'mv -T "$jobdir/.$node.tmp" "$jobdir/$node"',
        'exit "$rc"',
    ]
    return "\n".join(lines) + "\n"


def _quantity(size: str) -> str:
    """Docker's ``8g`` -> Kubernetes' ``8Gi``."""
    m = re.fullmatch(r"(\d+)([bkmgt]?)b?", size.strip().lower())
    if not m:
        raise UsageError(f"--shm-size {size!r}: give a size like 8g or 512m")
    unit = {"": "", "b": "", "k": "Ki", "m": "Mi", "g": "Gi", "t": "Ti"}[m.group(2)]
    return m.group(1) + unit


def job_manifest(plan: FleetPlan, opts: KubernetesOptions) -> dict[str, Any]:
    """The Indexed Job for ``plan`` (a plain dict, as ``kubectl apply -f`` would read it from YAML)."""
    name = _job_name(plan, opts)
    labels = {"app.kubernetes.io/name": "torchrig", "app.kubernetes.io/component": "fleet",
              "torchrig.env": plan.env.id, "torchrig.job": name}
    job_labels = {**labels, **({QUEUE_LABEL: opts.queue} if opts.queue else {})}
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in plan.environment().items()
                                 if k != HOSTNAME_ENV]
    env += [
        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": HOSTNAME_ENV, "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "TORCHRIG_FLEET_JOB", "value": name},
    ]
    container: dict[str, Any] = {
        "name": "suite",
        "image": plan.image,
        "command": ["/bin/sh", "-c", _pod_script(plan)],
        "env": env,
        "workingDir": "/tmp",
        "volumeMounts": [
            {"name": "results", "mountPath": RESULTS_IN},
            {"name": "data", "mountPath": DATA_IN},
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "fleet", "mountPath": FLEET_MOUNT},
        ],
        "securityContext": {"allowPrivilegeEscalation": False},
    }
    if plan.gpu:
        resource = _RESOURCE[plan.env.accelerator]
        container["resources"] = {"limits": {resource: opts.gpus_per_node}}
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "securityContext": {"runAsUser": opts.uid, "runAsGroup": opts.gid, "runAsNonRoot": True,
                            "fsGroup": opts.gid},
        "topologySpreadConstraints": [{
            "maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"torchrig.job": name}},
        }],
        "containers": [container],
        "volumes": [
            {"name": "results", "emptyDir": {}},
            {"name": "data", "emptyDir": {}},
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": _quantity(plan.shm_size)}},
            {"name": "fleet", "persistentVolumeClaim": {"claimName": opts.pvc}},
        ],
    }
    if plan.ipc_host:
        pod["hostIPC"] = True
    if opts.gpu_product:
        pod["nodeSelector"] = {GPU_PRODUCT_LABEL: opts.gpu_product}
    spec: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": plan.nodes,
        "parallelism": plan.nodes,
        # Every index is independent: one node failing neither stops nor retries the others.
        "backoffLimitPerIndex": 0,
        "maxFailedIndexes": plan.nodes,
        "template": {"metadata": {"labels": labels}, "spec": pod},
    }
    if plan.timeout_s:
        spec["activeDeadlineSeconds"] = int(plan.timeout_s)
    if opts.queue:
        spec["suspend"] = True  # Kueue unsuspends it when the queue admits it
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": opts.namespace, "labels": job_labels}, "spec": spec}


def _client() -> Any:
    try:
        return importlib.import_module("kubernetes")
    except ImportError:
        raise SchedulerError("applying a Kubernetes Job needs the official client: pip install 'torchrig[fleet]' "
                             "(or `pip install kubernetes`), or write the manifest with --dry-run and "
                             "`kubectl apply -f` it") from None


def _connect(k8s: Any) -> Any:
    try:
        k8s.config.load_kube_config()
    except Exception:  # noqa: BLE001 - no kubeconfig: maybe we run inside the cluster
        try:
            k8s.config.load_incluster_config()
        except Exception as e:  # noqa: BLE001 - neither: say what to do
            raise SchedulerError(f"no Kubernetes cluster configured (~/.kube/config or in-cluster): {e}") from None
    return k8s.client.ApiClient()


def apply(manifest: dict[str, Any]) -> str:
    """Create the Job with the official client; its name."""
    k8s = _client()
    api = k8s.client.BatchV1Api(_connect(k8s))
    namespace = manifest["metadata"]["namespace"]
    try:
        api.create_namespaced_job(namespace=namespace, body=manifest)
    except k8s.client.exceptions.ApiException as e:
        raise SchedulerError(f"Kubernetes refused the Job: {e.status} {e.reason}: {e.body}") from None
    return str(manifest["metadata"]["name"])


def parse_pods(pods: list[dict[str, Any]]) -> list[ElementState]:
    """Pods (the client's ``to_dict()`` form) -> one state per completion index, in Slurm's words."""
    states: dict[int, ElementState] = {}
    for pod in pods:
        meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
        index_text = (meta.get("annotations") or {}).get(_INDEX_ANNOTATION, "")
        if not str(index_text).isdigit():
            continue
        terminated = next(((c.get("state") or {}).get("terminated") for c in status.get("container_statuses") or []
                           if (c.get("state") or {}).get("terminated")), None)
        phase = status.get("phase") or "Unknown"
        code, reason = None, status.get("reason")
        if terminated:
            code, reason = terminated.get("exit_code"), terminated.get("reason") or reason
        state = {"Pending": "PENDING", "Running": "RUNNING", "Succeeded": "COMPLETED"}.get(phase, "FAILED")
        if reason == "OOMKilled":
            state = "OUT_OF_MEMORY"
        elif reason == "DeadlineExceeded":
            state = "TIMEOUT"
        elif phase == "Failed" and reason in ("NodeLost", "Evicted", "NodeShutdown"):
            state = "NODE_FAIL"
        elapsed = None
        if terminated and terminated.get("started_at") and terminated.get("finished_at"):
            elapsed = (terminated["finished_at"] - terminated["started_at"]).total_seconds()
        index = int(index_text)
        previous = states.get(index)
        if previous is None or previous.done:  # a retried index: the running pod is the current one
            states[index] = ElementState(index=index, state=state, exit_code=code, elapsed_s=elapsed,
                                         node=spec.get("node_name"), reason=reason)
    return [states[i] for i in sorted(states)]


def query(job: str, namespace: str) -> list[ElementState]:
    """The Job's pods through the API, as element states."""
    k8s = _client()
    api = k8s.client.CoreV1Api(_connect(k8s))
    try:
        pods = api.list_namespaced_pod(namespace, label_selector=f"torchrig.job={job}")
    except k8s.client.exceptions.ApiException as e:
        raise SchedulerError(f"could not list the pods of {job} in {namespace}: {e.status} {e.reason}") from None
    return parse_pods([p.to_dict() for p in pods.items])
