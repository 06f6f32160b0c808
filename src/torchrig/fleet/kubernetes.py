"""Kubernetes: an Indexed Job with one pod per node, applied with the official client, and its pods' states.

The pods spread over nodes (a topology spread constraint on the host name, ``DoNotSchedule``), ask for the
environment's accelerator (``nvidia.com/gpu`` / ``amd.com/gpu`` limits, quantities as strings; nothing for cpu),
CPU and memory requests equal to their limits (Guaranteed QoS: steady benchmark timings), may select a GPU model
(``nvidia.com/gpu.product``), get ``/dev/shm`` from a memory-backed emptyDir, run as the image's non-root user with
no service-account token, no privilege escalation, no capabilities and the runtime's default seccomp profile
(ROCm: unconfined, as ``docker run`` gets it; docs/fleet.md lists what remains), and may be queued by Kueue
(``kueue.x-k8s.io/queue-name``). Each pod writes its records to a local emptyDir and, when
the suite ends, moves them onto the PersistentVolumeClaim in one rename: ``<pvc>/<job>/<index>-<node>/`` -- the
same layout as a Slurm job's, so ``torchrig report`` and ``torchrig fleet`` read both alike.

The ``kubernetes`` package is optional (``pip install 'torchrig[fleet]'``); ``--dry-run`` needs nothing. Before
any request the manifest goes through the client's own ``V1Job`` model (:func:`client_job`), so a field the
client refuses is a message here, not a traceback; an API server that does not answer is named in the message.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import secrets
from dataclasses import dataclass, field
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from torchrig.container import IMAGE_GID, IMAGE_UID, LABEL, SuiteContainer
from torchrig.errors import SchedulerError, UsageError
from torchrig.fleet.plan import FleetPlan, NodeFacts, sh_words
from torchrig.fleet.pod import FLEET_MOUNT, pod_container, volume_name
from torchrig.fleet.quantity import Quantity, docker_size_to_quantity, parse_quantity
from torchrig.fleet.state import ElementState
from torchrig.results.contract import RESULTS_IN

__all__ = [
    "CHECKOV_ACCEPTED",
    "FLEET_MOUNT",
    "GPU_PRODUCT_LABEL",
    "QUEUE_LABEL",
    "KubernetesOptions",
    "apply",
    "client_job",
    "image_by_digest",
    "job_manifest",
    "parse_pods",
    "pod_container",
    "query",
]

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
_RESOURCE = {"cuda": "nvidia.com/gpu", "rocm": "amd.com/gpu"}
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
# Per GPU (or per pod, for a cpu environment) when --cpu / --memory are not given; the memory-backed /dev/shm
# counts against the memory limit, so the default memory adds the shm size on top.
DEFAULT_CPU_PER_GPU = 4
DEFAULT_MEMORY_PER_GPU_GI = 16
# checkov findings that stay on the Jobs, each with its reason in docs/fleet.md ("Policy scan"); `nox -s checkov`
# fails on any other. A test keeps this list and the docs' table equal.
CHECKOV_ACCEPTED = ("CKV_K8S_43", "CKV_K8S_40", "CKV_K8S_21", "CKV_K8S_22", "CKV_K8S_31", "CKV2_K8S_6", "CKV_K8S_18")
_TIMEOUT = (10, 60)  # (connect, read) seconds for every API call: an unreachable server must not hang submit


@dataclass(frozen=True, kw_only=True)
class KubernetesOptions:
    pvc: str
    namespace: str = "default"
    name: str | None = None  # default: torchrig-<env>-<suite>-<random>
    queue: str | None = None
    gpu_product: str | None = None
    gpus_per_node: int = 1
    uid: int = IMAGE_UID  # the image's user (images/Dockerfile TORCHRIG_UID)
    gid: int = IMAGE_GID
    cpu: str | None = None  # request = limit; default DEFAULT_CPU_PER_GPU per GPU
    memory: str | None = None  # request = limit; default DEFAULT_MEMORY_PER_GPU_GI per GPU + the shm size
    _cpu: Quantity | None = field(init=False, repr=False, compare=False, default=None)
    _memory: Quantity | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        for flag, value in (("--pvc", self.pvc), ("--namespace", self.namespace), ("--name", self.name)):
            if value is not None and not (_NAME.match(value) and len(value) <= 63):
                raise UsageError(f"{flag} {value!r} is not a Kubernetes name (lower-case letters, digits and '-', "
                                 "at most 63 characters)")
        if self.uid == 0:
            raise UsageError("--uid 0: the pods run as the image's non-root user (runAsNonRoot); give its UID")
        for flag, number in (("--uid", self.uid), ("--gid", self.gid)):
            if not 0 <= number <= 2**31 - 1:
                raise UsageError(f"{flag} {number}: give a number from 0 to 2147483647 (Kubernetes' int32 range)")
        if self.gpus_per_node < 1:
            raise UsageError(f"--gpus-per-node {self.gpus_per_node}: give at least 1")
        if self.cpu is not None:
            object.__setattr__(self, "_cpu", parse_quantity("--cpu", self.cpu, kind="cpu"))
        if self.memory is not None:
            object.__setattr__(self, "_memory", parse_quantity("--memory", self.memory, kind="memory"))

    def resources(self, plan: FleetPlan) -> dict[str, dict[str, str]]:
        """Requests = limits (Guaranteed QoS): CPU, memory and, for a GPU plan, the accelerator; all strings."""
        shm = docker_size_to_quantity("--shm-size", plan.shm_size)
        units = self.gpus_per_node if plan.gpu else 1
        cpu = str(self._cpu or units * DEFAULT_CPU_PER_GPU)
        if self._memory is None:
            memory = f"{units * DEFAULT_MEMORY_PER_GPU_GI + _ceil_gi(shm.value)}Gi"
        elif self._memory.value <= shm.value:
            raise UsageError(f"--memory {self.memory}: not more than --shm-size {plan.shm_size} ({shm}); /dev/shm is a "
                             "memory-backed emptyDir and counts against the pod's memory limit: give more memory "
                             "or a smaller --shm-size")
        else:
            memory = str(self._memory)
        limits = {"cpu": cpu, "memory": memory}
        if plan.gpu:
            limits[_RESOURCE[plan.env.accelerator]] = str(self.gpus_per_node)
        # Extended resources (GPUs) take no request other than the limit; Kubernetes copies it.
        requests = {"cpu": cpu, "memory": memory}
        return {"requests": requests, "limits": limits}


def _ceil_gi(size: Decimal) -> int:
    return int(-(-size // 2**30))


def _job_name(plan: FleetPlan, opts: KubernetesOptions) -> str:
    if opts.name:
        return opts.name
    # The pods' hostnames are <job>-<index>-<random>: keep the job name well inside 63 characters.
    return f"torchrig-{plan.env.id}-{plan.suite}-{secrets.token_hex(3)}"[:52].rstrip("-")


def _pod_script(containers: list[SuiteContainer]) -> str:
    """POSIX sh run in the pod: the suites, then exit.json, then the node's folder onto the PVC in one rename."""
    names = {"index": "JOB_COMPLETION_INDEX"}
    lines = [
        'job=$TORCHRIG_FLEET_JOB; index=$JOB_COMPLETION_INDEX; host=$NODE_NAME; node="$index-$host"',
        f'jobdir={FLEET_MOUNT}/$job; mkdir -p "$jobdir"',
        'started=$(date -u +%FT%TZ); t0=$(date +%s); rc=0; failed=""',
    ]
    for c in containers:
        suite = c.labels.get(LABEL, "suite")
        lines += [
            f"{{ {sh_words(c.command, names)}; echo $? >/tmp/{suite}.rc; }} 2>&1 | "
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


def job_manifest(plan: FleetPlan, opts: KubernetesOptions) -> dict[str, Any]:
    """The Indexed Job for ``plan`` (a plain dict, as ``kubectl apply -f`` would read it from YAML)."""
    name = _job_name(plan, opts)
    labels = {"app.kubernetes.io/name": "torchrig", "app.kubernetes.io/component": "fleet",
              "torchrig.env": plan.env.id, "torchrig.job": name}
    job_labels = {**labels, **({QUEUE_LABEL: opts.queue} if opts.queue else {})}
    node = NodeFacts(uid=opts.uid, gid=opts.gid)
    containers = [plan.container(suite, node) for suite in plan.suites]
    c = containers[0]  # the suites differ in their command only; one container runs them one after the other
    shm = docker_size_to_quantity("--shm-size", c.shm_size or plan.shm_size)
    container = pod_container(c, script=_pod_script(containers), job=name)
    container["resources"] = opts.resources(plan)
    # ROCm runs unconfined, as AMD's container guidance and engine.gpu_flags (seccomp=unconfined) run it under
    # Docker: the default profile admits mbind/set_mempolicy only with CAP_SYS_NICE, and the ROCm runtime uses them
    # for NUMA-aware host memory. Everything else keeps the runtime's default profile.
    seccomp = "Unconfined" if "seccomp=unconfined" in c.gpu.security_opt else "RuntimeDefault"
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,  # the suites never talk to the API server
        "securityContext": {"runAsUser": opts.uid, "runAsGroup": opts.gid, "runAsNonRoot": True,
                            "fsGroup": opts.gid, "seccompProfile": {"type": seccomp}},
        "topologySpreadConstraints": [{
            "maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"torchrig.job": name}},
        }],
        "containers": [container],
        "volumes": [
            *({"name": volume_name(m.target), "emptyDir": {}} for m in c.mounts),
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": str(shm)}},
            {"name": "fleet", "persistentVolumeClaim": {"claimName": opts.pvc}},
        ],
    }
    if c.ipc_host:
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
        # $KUBECONFIG as it is now (the client reads it once, at import); None: the client's ~/.kube/config
        k8s.config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)
    except Exception as kube:  # noqa: BLE001 - no kubeconfig: maybe we run inside the cluster
        try:
            k8s.config.load_incluster_config()
        except Exception as e:  # noqa: BLE001 - neither: say what to do
            raise SchedulerError(f"no Kubernetes cluster configured: the kubeconfig ($KUBECONFIG or ~/.kube/config) "
                                 f"gave {_first_line(kube)}, and this is not a pod in a cluster ({_first_line(e)}); "
                                 "point KUBECONFIG at your cluster's config, or write the manifest with --dry-run "
                                 "and `kubectl apply -f` it") from None
    return k8s.client.ApiClient()


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__


def _server(api_client: Any) -> str:
    return str(getattr(getattr(api_client, "configuration", None), "host", None) or "the API server")


def _call(k8s: Any, api_client: Any, what: str, fn: Any) -> Any:
    """``fn()`` with the client's errors as SchedulerError naming the server: refused, unreachable, or invalid."""
    server = _server(api_client)
    try:
        return fn()
    except k8s.client.exceptions.ApiException as e:
        body = _first_line(Exception(e.body)) if getattr(e, "body", None) else ""
        raise SchedulerError(f"Kubernetes at {server} refused {what}: {e.status} {e.reason}"
                             + (f": {body}" if body else "")) from None
    except Exception as e:
        if not _no_answer(e):
            raise
        raise SchedulerError(f"the Kubernetes API server {server} did not answer ({type(e).__name__}: "
                             f"{_first_line(e)}) while trying {what}: check that the cluster is up, that the "
                             "kubeconfig's server address is reachable from here (VPN, proxy), or write the "
                             "manifest with --dry-run and `kubectl apply -f` it") from None


def _no_answer(e: BaseException) -> bool:
    """urllib3's MaxRetryError, timeouts, refused connections, TLS and DNS failures: the server did not answer."""
    return isinstance(e, OSError) or type(e).__module__.split(".")[0] in ("urllib3", "ssl", "socket", "http")


def client_job(k8s: Any, manifest: dict[str, Any]) -> Any:
    """The manifest as the client's own ``V1Job`` (client-side validation on), through its deserializer -- the path
    a response takes, so every field is checked against the client's models. Raises UsageError naming the field
    the client refuses or drops (an old client that does not know a field silently loses it)."""
    cfg = k8s.client.Configuration()
    cfg.client_side_validation = True
    api = k8s.client.ApiClient(cfg)
    text = json.dumps(manifest)
    try:
        if "response_text" in inspect.signature(api.deserialize).parameters:  # client >= 37 (pydantic models)
            job = api.deserialize(text, "V1Job", "application/json")
        else:  # older clients read a response object's .data
            job = api.deserialize(SimpleNamespace(data=text), "V1Job")
    except (ValueError, TypeError) as e:  # pydantic's ValidationError is a ValueError
        raise UsageError(f"the kubernetes client {getattr(k8s, '__version__', '?')} refuses the Job: "
                         f"{' '.join(str(e).split())[:600]}") from None
    back = api.sanitize_for_serialization(job)
    if back != manifest:
        raise UsageError(f"the kubernetes client {getattr(k8s, '__version__', '?')} does not carry the whole Job "
                         f"(it drops or changes {', '.join(_differences(manifest, back))}): upgrade it with "
                         "pip install -U 'torchrig[fleet]'")
    return job


def _differences(want: Any, got: Any, path: str = "") -> list[str]:
    if isinstance(want, dict) and isinstance(got, dict):
        return [d for k in sorted(set(want) | set(got)) for d in _differences(want.get(k), got.get(k), f"{path}.{k}")]
    if isinstance(want, list) and isinstance(got, list) and len(want) == len(got):
        return [d for i, (w, g) in enumerate(zip(want, got, strict=True)) for d in _differences(w, g, f"{path}[{i}]")]
    return [] if want == got else [path.lstrip(".") or "the document"]


def image_by_digest(ref: str) -> str:
    """``ref`` as ``REPO@sha256:...``: as given when it names a digest, else the digest its tag points at in the
    registry now (asked through the local Docker engine, as ``torchrig pin-bases`` does; a pushed image is there)."""
    if "@sha256:" in ref:
        return ref
    from torchrig.engine.client import connect
    from torchrig.images.pin import resolve_digest

    repo = ref.rsplit(":", 1)[0] if ":" in ref.rsplit("/", 1)[-1] else ref
    return f"{repo}@{resolve_digest(connect(), ref)}"


def apply(manifest: dict[str, Any]) -> str:
    """Create the Job with the official client; its name."""
    k8s = _client()
    body = client_job(k8s, manifest)
    api_client = _connect(k8s)
    api = k8s.client.BatchV1Api(api_client)
    namespace = manifest["metadata"]["namespace"]
    _call(k8s, api_client, f"the Job {manifest['metadata']['name']} in {namespace}",
          lambda: api.create_namespaced_job(namespace=namespace, body=body, _request_timeout=_TIMEOUT))
    return str(manifest["metadata"]["name"])


_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")


def _snake_keys(obj: Any, *, depth: int = 0) -> Any:
    """Client >= 37's ``to_dict()`` spells keys as the API does (``containerStatuses``); older clients in
    snake_case (``container_statuses``). Read both as snake_case; annotation keys have no capitals to change."""
    if depth > 32:
        return obj
    if isinstance(obj, dict):
        return {(_CAMEL.sub(r"_\1", k).lower() if isinstance(k, str) and "/" not in k else k):
                _snake_keys(v, depth=depth + 1) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_snake_keys(v, depth=depth + 1) for v in obj]
    return obj


def parse_pods(pods: list[dict[str, Any]]) -> list[ElementState]:
    """Pods (the client's ``to_dict()`` form, either spelling) -> one state per completion index, in Slurm's
    words."""
    states: dict[int, ElementState] = {}
    for pod in map(_snake_keys, pods):
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
    api_client = _connect(k8s)
    api = k8s.client.CoreV1Api(api_client)
    pods = _call(k8s, api_client, f"listing the pods of {job} in {namespace}",
                 lambda: api.list_namespaced_pod(namespace, label_selector=f"torchrig.job={job}",
                                                 _request_timeout=_TIMEOUT))
    return parse_pods([p.to_dict() for p in pods.items])
