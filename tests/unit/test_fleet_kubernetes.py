"""The Kubernetes Indexed Job per accelerator, validated against the Kubernetes schemas (kubernetes-validate,
offline), and the pods' states mapped onto Slurm's words."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from torchrig.__main__ import main
from torchrig.errors import UsageError
from torchrig.fleet import FLEET_MOUNT, FleetPlan, KubernetesOptions, job_manifest
from torchrig.fleet.kubernetes import parse_pods
from torchrig.matrix import Matrix, load_matrix

ROOT = Path(__file__).resolve().parents[2]
K8S_VERSION = kubernetes_validate.latest_version()


@pytest.fixture(scope="module")
def matrix() -> Matrix:
    return load_matrix(ROOT / "matrix.yaml")


def manifest(matrix: Matrix, env: str, *, nodes: int = 3, args: tuple[str, ...] = (), **opts: Any) -> dict[str, Any]:
    e = matrix.get(env)
    plan = FleetPlan.with_placeholders(args, env=e, image=e.tags().immutable, nodes=nodes, results=Path(FLEET_MOUNT),
                                       quick=True)
    return job_manifest(plan, KubernetesOptions(pvc="fleet-results", **opts))


def validate(m: dict[str, Any]) -> None:
    # strict: unknown fields are errors too (a typo like `topologySpreadConstraint` would pass otherwise)
    kubernetes_validate.validate(m, K8S_VERSION, strict=True)


@pytest.mark.parametrize("env", ["cpu", "cuda121", "rocm", "cuda130", "rocm64"])
def test_manifest_validates_against_the_schema(matrix: Matrix, env: str) -> None:
    m = manifest(matrix, env, queue="team-a", gpu_product="NVIDIA-H100-80GB-HBM3" if "cuda" in env else None,
                 gpus_per_node=8)
    validate(m)
    validate(yaml.safe_load(yaml.safe_dump(m)))  # what --dry-run prints


def test_a_schema_violation_is_caught() -> None:
    # the validator is not a rubber stamp: the same Job with a wrong type fails
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "x"},
                                      "spec": {"completions": "three", "template": {"spec": {"containers": []}}}},
                                     K8S_VERSION, strict=True)


def _pod(m: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = m["spec"]["template"]["spec"]
    return pod


def test_gpu_limits_by_accelerator(matrix: Matrix) -> None:
    limits = {env: _pod(manifest(matrix, env, gpus_per_node=4))["containers"][0].get("resources", {}).get("limits")
              for env in ("cpu", "cuda121", "rocm")}
    # quantities are strings (the client >= 37 refuses integers); CPU and memory default per GPU, plus the shm
    assert limits == {"cpu": {"cpu": "4", "memory": "24Gi"},
                      "cuda121": {"cpu": "16", "memory": "72Gi", "nvidia.com/gpu": "4"},
                      "rocm": {"cpu": "16", "memory": "72Gi", "amd.com/gpu": "4"}}


def test_requests_equal_limits_and_flags_set_them(matrix: Matrix) -> None:
    res = _pod(manifest(matrix, "cuda121", cpu="12", memory="100Gi"))["containers"][0]["resources"]
    assert res == {"requests": {"cpu": "12", "memory": "100Gi"},
                   "limits": {"cpu": "12", "memory": "100Gi", "nvidia.com/gpu": "1"}}
    with pytest.raises(UsageError, match="counts against the pod's memory limit"):
        manifest(matrix, "cuda121", memory="8Gi")  # not more than the 8g /dev/shm


def test_pod_security(matrix: Matrix) -> None:
    for env, seccomp in (("cpu", "RuntimeDefault"), ("cuda121", "RuntimeDefault"), ("rocm", "Unconfined")):
        pod = _pod(manifest(matrix, env))
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["seccompProfile"] == {"type": seccomp}
        assert pod["containers"][0]["securityContext"] == {
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
            "runAsUser": 1000, "runAsGroup": 1000}


def test_indexed_spread_non_root_shm_pvc(matrix: Matrix) -> None:
    m = manifest(matrix, "cuda121", nodes=16)
    spec, pod = m["spec"], _pod(m)
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 16, 16)
    assert spec["backoffLimitPerIndex"] == 0 and spec["maxFailedIndexes"] == 16  # a failed node stops no other
    (spread,) = pod["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname" and spread["whenUnsatisfiable"] == "DoNotSchedule"
    assert spread["labelSelector"]["matchLabels"] == {"torchrig.job": m["metadata"]["name"]}
    assert m["spec"]["template"]["metadata"]["labels"]["torchrig.job"] == m["metadata"]["name"]
    assert pod["securityContext"] == {"runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": True, "fsGroup": 1000,
                                      "seccompProfile": {"type": "RuntimeDefault"}}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}
    assert volumes["fleet"]["persistentVolumeClaim"] == {"claimName": "fleet-results"}
    mounts = {v["name"]: v["mountPath"] for v in pod["containers"][0]["volumeMounts"]}
    assert mounts == {"results": "/results", "data": "/data", "dshm": "/dev/shm", "fleet": FLEET_MOUNT}
    assert "nodeSelector" not in pod and "suspend" not in spec
    assert "kueue.x-k8s.io/queue-name" not in m["metadata"]["labels"]


def test_queue_product_and_uid(matrix: Matrix) -> None:
    m = manifest(matrix, "cuda121", queue="team-a", gpu_product="NVIDIA-A100-SXM4-80GB", uid=2000, gid=3000)
    assert m["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a" and m["spec"]["suspend"] is True
    assert _pod(m)["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert _pod(m)["securityContext"]["runAsUser"] == 2000 and _pod(m)["securityContext"]["fsGroup"] == 3000


def test_the_pod_script_runs_the_suite_and_publishes(matrix: Matrix) -> None:
    m = manifest(matrix, "cpu", args=("--seed", "{index}"))
    command = _pod(m)["containers"][0]["command"]
    assert command[:2] == ["/bin/sh", "-c"]
    proc = subprocess.run(["sh", "-n"], input=command[2], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert 'python -m tasks --results /results --quick --synthetic-cifar --seed "${JOB_COMPLETION_INDEX}"' in command[2]
    assert 'mv -T "$jobdir/.$node.tmp" "$jobdir/$node"' in command[2]
    env = {e["name"]: e for e in _pod(m)["containers"][0]["env"]}
    assert env["TORCHRIG_HOSTNAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["TORCHRIG_FLEET_JOB"]["value"] == m["metadata"]["name"]


@pytest.mark.parametrize(("opts", "message"), [
    ({"pvc": "Bad_Name"}, "not a Kubernetes name"),
    ({"pvc": "ok", "uid": 0}, "non-root"),
    ({"pvc": "ok", "gpus_per_node": 0}, "at least 1"),
    ({"pvc": "ok", "gid": -1}, "int32 range"),
    ({"pvc": "ok", "cpu": "0"}, "more than zero"),
    ({"pvc": "ok", "cpu": "2Gi"}, "counted in cores"),
    ({"pvc": "ok", "memory": "16g"}, "Kubernetes spells it 16Gi"),
    ({"pvc": "ok", "memory": "512m"}, "milli-bytes"),
    ({"pvc": "ok", "memory": "-1Gi"}, "not a Kubernetes quantity"),
])
def test_options_refused(opts: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        KubernetesOptions(**opts)


def test_dry_run_writes_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "job.yaml"
    rc = main(["--matrix", str(ROOT / "matrix.yaml"), "submit", "rocm", "--to", "kubernetes", "--pvc", "res",
               "--nodes", "2", "--name", "rocm-fleet", "--dry-run", "--output", str(out)])
    assert rc == 0 and "kubectl apply -f" in capsys.readouterr().err
    m = yaml.safe_load(out.read_text())
    validate(m)
    assert m["metadata"]["name"] == "rocm-fleet"
    assert _pod(m)["containers"][0]["resources"]["limits"]["amd.com/gpu"] == "1"


def test_submit_refuses_slurm_options_and_a_missing_pvc(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--matrix", str(ROOT / "matrix.yaml"), "submit", "cpu", "--to", "kubernetes", "--dry-run"]
    assert main(base) == 2 and "--pvc NAME" in capsys.readouterr().err
    assert main([*base, "--pvc", "r", "--partition", "gpu"]) == 2 and "Slurm options" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- pod states

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def pod(index: int, phase: str, *, code: int | None = None, reason: str | None = None,
        node: str = "n1", pod_reason: str | None = None) -> dict[str, Any]:
    state: dict[str, Any] = {"running": {"started_at": T0}}
    if code is not None:
        state = {"terminated": {"exit_code": code, "reason": reason, "started_at": T0,
                                "finished_at": T0 + dt.timedelta(seconds=90)}}
    return {"metadata": {"annotations": {"batch.kubernetes.io/job-completion-index": str(index)}},
            "spec": {"node_name": node}, "status": {"phase": phase, "reason": pod_reason,
                                                    "container_statuses": [{"state": state}]}}


def test_pod_states() -> None:
    states = parse_pods([
        pod(0, "Succeeded", code=0, reason="Completed"),
        pod(1, "Failed", code=137, reason="OOMKilled"),
        pod(2, "Failed", code=1, reason="Error"),
        pod(3, "Running"),
        pod(4, "Failed", pod_reason="Evicted"),
        pod(5, "Failed", code=143, reason="DeadlineExceeded"),
    ])
    by = {s.index: s for s in states}
    assert by[0].state == "COMPLETED" and not by[0].failed and by[0].elapsed_s == 90
    assert by[1].state == "OUT_OF_MEMORY" and by[1].exit_code == 137 and by[1].failed
    assert by[2].state == "FAILED" and by[2].exit_code == 1
    assert by[3].state == "RUNNING" and not by[3].done
    assert by[4].state == "NODE_FAIL"
    assert by[5].state == "TIMEOUT"


# ------------------------------------------------------------------------- the client (a stand-in module)


class _ApiException(Exception):
    def __init__(self, status: int, reason: str, body: str = "") -> None:
        super().__init__(reason)
        self.status, self.reason, self.body = status, reason, body


class _Pod:
    def __init__(self, d: dict[str, Any]) -> None:
        self.d = d

    def to_dict(self) -> dict[str, Any]:
        return self.d


def fake_kubernetes(calls: list[tuple[str, Any]], *, refuse: bool = False, kubeconfig: bool = True) -> Any:
    """The parts of the official client torchrig uses: config loading, BatchV1Api, CoreV1Api, ApiException."""
    from types import SimpleNamespace

    def load_kube_config(config_file: str | None = None) -> None:
        if not kubeconfig:
            raise RuntimeError("no ~/.kube/config")
        calls.append(("config", "kube"))

    def load_incluster_config() -> None:
        raise RuntimeError("not in a cluster")

    class BatchV1Api:
        def __init__(self, api: object) -> None:
            pass

        def create_namespaced_job(self, namespace: str, body: Any, _request_timeout: Any = None) -> None:
            if refuse:
                raise _ApiException(409, "Conflict", "jobs.batch already exists")
            calls.append(("create", (namespace, body.metadata.name)))

    class CoreV1Api:
        def __init__(self, api: object) -> None:
            pass

        def list_namespaced_pod(self, namespace: str, label_selector: str, _request_timeout: Any = None) -> Any:
            calls.append(("list", (namespace, label_selector)))
            return SimpleNamespace(items=[_Pod(pod(0, "Succeeded", code=0)), _Pod(pod(1, "Running"))])

    import kubernetes.client

    client = SimpleNamespace(ApiClient=kubernetes.client.ApiClient, Configuration=kubernetes.client.Configuration,
                             BatchV1Api=BatchV1Api, CoreV1Api=CoreV1Api,
                             exceptions=SimpleNamespace(ApiException=_ApiException))
    return SimpleNamespace(__version__="stand-in", config=SimpleNamespace(load_kube_config=load_kube_config,
                                                  load_incluster_config=load_incluster_config), client=client)


def _use(monkeypatch: pytest.MonkeyPatch, module: Any) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "kubernetes", module)


def test_submit_creates_the_job_with_the_client(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[tuple[str, Any]] = []
    _use(monkeypatch, fake_kubernetes(calls))
    rc = main(["--matrix", str(ROOT / "matrix.yaml"), "submit", "cpu", "--to", "kubernetes", "--pvc", "res",
               "--namespace", "ml", "--name", "cpu-fleet"])
    assert rc == 0 and calls == [("config", "kube"), ("create", ("ml", "cpu-fleet"))]
    assert "fleet collect cpu-fleet --on kubernetes --namespace ml" in capsys.readouterr().out


def test_a_refused_job_and_a_missing_cluster_are_clear(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--matrix", str(ROOT / "matrix.yaml"), "submit", "cpu", "--to", "kubernetes", "--pvc", "res",
            "--name", "cpu-fleet"]
    _use(monkeypatch, fake_kubernetes([], refuse=True))
    assert main(base) == 8 and "refused the Job cpu-fleet in default: 409 Conflict" in capsys.readouterr().err
    _use(monkeypatch, fake_kubernetes([], kubeconfig=False))
    assert main(base) == 8 and "no Kubernetes cluster configured" in capsys.readouterr().err
    monkeypatch.setitem(__import__("sys").modules, "kubernetes", None)  # not installed
    assert main(base) == 8 and "pip install 'torchrig[fleet]'" in capsys.readouterr().err


def test_status_reads_the_pods(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                               tmp_path: Path) -> None:
    calls: list[tuple[str, Any]] = []
    _use(monkeypatch, fake_kubernetes(calls))
    rc = main(["--matrix", str(ROOT / "matrix.yaml"), "fleet", "status", "cpu-fleet", "--on", "kubernetes",
               "--namespace", "ml", "--results", str(tmp_path)])
    assert rc == 0 and ("list", ("ml", "torchrig.job=cpu-fleet")) in calls
    out = capsys.readouterr().out
    assert re.search(r"^\s+0\s+n1\s+COMPLETED\s+0\s", out, re.M) and re.search(r"^\s+1\s+n1\s+RUNNING", out, re.M)
    assert "job cpu-fleet (kubernetes): 2 node(s); records in" in out and "failed" not in out
    assert "the records are not on this machine" in out
