"""The Job against the OLDEST official Kubernetes client `torchrig[fleet]` admits (the extra's lower bound in
pyproject.toml): every manifest becomes that client's V1Job (client-side validation on) and comes back unchanged,
so no field is refused or silently dropped by an older model. tests/unit/test_fleet_k8s_client.py does the same
with the installed (current) client.

The client lives in its own venv: give its interpreter with TORCHRIG_K8S_OLDEST_PYTHON (e.g.
``python -m venv /tmp/k8s-oldest && /tmp/k8s-oldest/bin/pip install kubernetes==28.1.0``), or let the test make
one under pytest's temporary folder (needs PyPI; skipped with the reason when pip cannot install it).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from torchrig.fleet import FLEET_MOUNT, FleetPlan, KubernetesOptions, job_manifest
from torchrig.matrix import load_matrix

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

# Run by the old client's interpreter: the same deserialize-and-compare as torchrig.fleet.kubernetes.client_job
# (torchrig itself is not installed there).
_CHECK = r"""
import inspect, json, sys
from types import SimpleNamespace
import kubernetes
from kubernetes import client
results = []
for m in json.load(sys.stdin):
    cfg = client.Configuration()
    cfg.client_side_validation = True
    api = client.ApiClient(cfg)
    text = json.dumps(m)
    try:
        if "response_text" in inspect.signature(api.deserialize).parameters:
            job = api.deserialize(text, "V1Job", "application/json")
        else:
            job = api.deserialize(SimpleNamespace(data=text), "V1Job")
    except Exception as e:
        results.append("refused: %s: %s" % (type(e).__name__, e))
        continue
    back = api.sanitize_for_serialization(job)
    results.append("ok" if back == m else "changed: " + json.dumps(back, sort_keys=True)[:2000])
print(json.dumps({"version": kubernetes.__version__, "results": results}))
"""


def oldest_supported() -> str:
    # (no tomllib: Python 3.10 is supported) the `fleet = ["kubernetes>=N"]` line of the extras
    m = re.search(r'^fleet = \["kubernetes>=([\d.]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert m, "pyproject.toml's fleet extra should give kubernetes a lower bound"
    return m.group(1)


@pytest.fixture(scope="module")
def old_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    given = os.environ.get("TORCHRIG_K8S_OLDEST_PYTHON")
    if given:
        return given
    venv = tmp_path_factory.mktemp("k8s-oldest")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    pin = oldest_supported()
    proc = subprocess.run([python, "-m", "pip", "install", "-q", f"kubernetes=={pin}.*" if pin.count(".") < 2
                           else f"kubernetes=={pin}"], capture_output=True, text=True, timeout=600)
    if proc.returncode:
        pytest.skip(f"cannot install kubernetes {pin} from the index: {proc.stderr.strip()[-300:]}")
    return python


def _manifests() -> list[dict[str, Any]]:
    matrix = load_matrix(ROOT / "matrix.yaml")
    out = []
    for env in matrix.environments:
        extras: list[dict[str, Any]] = [{}, {"queue": "team-a", "gpu_product": "NVIDIA-H100-80GB-HBM3",
                                             "gpus_per_node": 8, "cpu": "500m", "memory": "100Gi"}]
        for extra in extras:
            plan = FleetPlan.with_placeholders((), env=env, image=env.tags().immutable, nodes=4, quick=True,
                                               results=Path(FLEET_MOUNT), timeout_s=3600.0, ipc_host=bool(extra))
            out.append(job_manifest(plan, KubernetesOptions(pvc="res", name=f"job-{env.id}", **extra)))
    return out


def test_the_oldest_supported_client_takes_every_job(old_python: str) -> None:
    manifests = _manifests()
    proc = subprocess.run([old_python, "-c", _CHECK], input=json.dumps(manifests), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    if not os.environ.get("TORCHRIG_K8S_OLDEST_PYTHON"):
        assert answer["version"].split(".")[0] == oldest_supported().split(".")[0]
    bad = {f"{m['metadata']['name']} #{i}": r
           for i, (m, r) in enumerate(zip(manifests, answer["results"], strict=True)) if r != "ok"}
    assert not bad, f"kubernetes {answer['version']}: {bad}"
