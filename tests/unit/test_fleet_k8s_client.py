"""The GPU Job against the REAL official Kubernetes client (the version `torchrig[fleet]` resolves; the oldest
supported one is checked by tests/integration/test_k8s_client_oldest.py): every generated manifest becomes the
client's own V1Job with client-side validation on and comes back unchanged; quantities are checked flags; a refused,
unreachable or unconfigured API server is a message naming it (exit 8), never a urllib3 traceback."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torchrig.__main__ import main
from torchrig.errors import UsageError
from torchrig.fleet import FLEET_MOUNT, FleetPlan, KubernetesOptions, job_manifest
from torchrig.fleet.kubernetes import client_job
from torchrig.fleet.quantity import parse_quantity
from torchrig.matrix import load_matrix

kubernetes = pytest.importorskip("kubernetes", reason="the fleet extra: pip install 'torchrig[fleet]'")

ROOT = Path(__file__).resolve().parents[2]
MATRIX = load_matrix(ROOT / "matrix.yaml")

_names = st.from_regex(r"[a-z][a-z0-9-]{0,20}[a-z0-9]", fullmatch=True)
_cpu = st.one_of(st.integers(1, 256).map(str), st.integers(1, 64000).map(lambda n: f"{n}m"))
_memory = st.tuples(st.integers(9, 4096), st.sampled_from(["Gi", "G"])).map(lambda t: f"{t[0]}{t[1]}")


@st.composite
def manifests(draw: st.DrawFn) -> dict[str, Any]:
    env = draw(st.sampled_from(MATRIX.environments))
    plan = FleetPlan.with_placeholders(
        (), env=env, image=env.tags().immutable, nodes=draw(st.integers(1, 64)), results=Path(FLEET_MOUNT),
        quick=draw(st.booleans()), suite=draw(st.sampled_from(["tasks", "bench", "both"])),
        timeout_s=draw(st.none() | st.integers(1, 10**6).map(float)), shm_size=draw(st.sampled_from(["1g", "8g"])),
        ipc_host=draw(st.booleans()), use_gpu=draw(st.booleans()))
    opts = KubernetesOptions(pvc=draw(_names), namespace=draw(_names), queue=draw(st.none() | _names),
                             gpu_product=draw(st.none() | st.just("NVIDIA-H100-80GB-HBM3")),
                             gpus_per_node=draw(st.integers(1, 8)), uid=draw(st.integers(1, 65534)),
                             gid=draw(st.integers(0, 65534)), cpu=draw(st.none() | _cpu),
                             memory=draw(st.none() | _memory))
    return job_manifest(plan, opts)


@settings(max_examples=40, deadline=None)
@given(m=manifests())
def test_every_generated_job_is_a_client_v1job(m: dict[str, Any]) -> None:
    job = client_job(kubernetes, m)  # raises UsageError when the client refuses or drops a field
    assert job.metadata.name == m["metadata"]["name"]
    resources = m["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert all(isinstance(v, str) for part in resources.values() for v in part.values())


def _gpu_job() -> dict[str, Any]:
    env = MATRIX.get("cuda121")
    plan = FleetPlan.with_placeholders((), env=env, image=env.tags().immutable, nodes=2, results=Path(FLEET_MOUNT))
    return job_manifest(plan, KubernetesOptions(pvc="res", name="gpu-job", gpus_per_node=8))


def test_the_client_is_no_rubber_stamp() -> None:
    # Regression (issue 20): the GPU limit was the integer 8; client 37's models refuse that before any request.
    m = _gpu_job()
    m["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = 8
    with pytest.raises(UsageError, match=r"nvidia\.com/gpu"):
        client_job(kubernetes, m)
    m = _gpu_job()
    m["spec"]["template"]["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalaton"] = False  # typo
    with pytest.raises(UsageError, match="allowPrivilegeEscalaton"):
        client_job(kubernetes, m)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=12), kind=st.sampled_from(["cpu", "memory"]))
def test_any_quantity_text_is_a_quantity_or_a_usage_error(text: str, kind: Any) -> None:
    try:
        q = parse_quantity("--" + kind, text, kind=kind)
    except UsageError as e:
        assert e.return_code == 2 and f"--{kind}" in str(e)
    else:
        assert q.value > 0 and str(q) == text.strip()


# ----------------------------------------------------------------- a real client against a local API server


class _Api(BaseHTTPRequestHandler):
    status = 201
    requests: ClassVar[list[tuple[str, str]]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        type(self).requests.append((self.command, self.path))
        if self.status >= 400:
            out = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "AlreadyExists",
                   "message": 'jobs.batch "gpu-job" already exists', "code": self.status}
        elif self.command == "POST":
            out = json.loads(body)
        else:
            out = {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [{
                "metadata": {"name": "p0", "annotations": {"batch.kubernetes.io/job-completion-index": "0"}},
                "spec": {"nodeName": "n1", "containers": [{"name": "suite", "image": "x"}]},
                "status": {"phase": "Failed", "containerStatuses": [{
                    "name": "suite", "image": "x", "imageID": "", "ready": False, "restartCount": 0,
                    "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled",
                                             "startedAt": "2026-01-01T00:00:00Z",
                                             "finishedAt": "2026-01-01T00:01:30Z"}}}]}}]}
        data = json.dumps(out).encode()
        self.send_response(self.status if self.command == "POST" or self.status >= 400 else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def api_server() -> Iterator[tuple[str, type[_Api]]]:
    handler = type("Handler", (_Api,), {"status": 201, "requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def _kubeconfig(tmp_path: Path, server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = {"apiVersion": "v1", "kind": "Config", "current-context": "t",
           "clusters": [{"name": "c", "cluster": {"server": server}}],
           "users": [{"name": "u", "user": {"token": "t"}}],
           "contexts": [{"name": "t", "context": {"cluster": "c", "user": "u"}}]}
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(cfg))
    monkeypatch.setenv("KUBECONFIG", str(path))
    for var in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        monkeypatch.delenv(var, raising=False)


SUBMIT = ["--matrix", str(ROOT / "matrix.yaml"), "submit", "cuda121", "--to", "kubernetes", "--pvc", "res",
          "--name", "gpu-job", "--gpus-per-node", "8"]


def test_submit_posts_a_valid_job(api_server: tuple[str, type[_Api]], tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    url, handler = api_server
    _kubeconfig(tmp_path, url, monkeypatch)
    assert main(SUBMIT) == 0, capsys.readouterr().err
    assert handler.requests == [("POST", "/apis/batch/v1/namespaces/default/jobs")]
    assert "created Job gpu-job in default" in capsys.readouterr().out
    assert main(["--matrix", str(ROOT / "matrix.yaml"), "fleet", "status", "gpu-job", "--on", "kubernetes",
                 "--results", str(tmp_path)]) == 1  # a failed node: exit 1
    # the real client's to_dict() (camelCase in >= 37) read right: the state, exit code, node and elapsed time
    out = capsys.readouterr().out
    assert re.search(r"^\s+0\s+n1\s+OUT_OF_MEMORY\s+137\s", out, re.M), out


def test_a_refusal_names_the_server(api_server: tuple[str, type[_Api]], tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    url, handler = api_server
    handler.status = 409
    _kubeconfig(tmp_path, url, monkeypatch)
    assert main(SUBMIT) == 8
    err = capsys.readouterr().err
    assert f"Kubernetes at {url} refused the Job gpu-job in default: 409" in err and "Traceback" not in err


def test_an_unreachable_server_is_a_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    # Regression (issue 17 item 6, issue 20): a raw urllib3 MaxRetryError traceback before.
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _kubeconfig(tmp_path, f"https://127.0.0.1:{port}", monkeypatch)
    assert main(SUBMIT) == 8
    err = capsys.readouterr().err
    assert f"the Kubernetes API server https://127.0.0.1:{port} did not answer" in err
    assert "Traceback" not in err and "--dry-run" in err
    assert main(["--matrix", str(ROOT / "matrix.yaml"), "fleet", "status", "gpu-job", "--on", "kubernetes",
                 "--results", str(tmp_path)]) == 8
    assert "did not answer" in capsys.readouterr().err


def test_no_kubeconfig_is_a_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        monkeypatch.delenv(var, raising=False)
    assert main(SUBMIT) == 8
    err = capsys.readouterr().err
    assert "no Kubernetes cluster configured" in err and "KUBECONFIG" in err and "Traceback" not in err
