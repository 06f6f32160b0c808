"""A GPU image that sees no GPU, in a real image: the cpu image (torch 2.0.1 with CUDA 11.7 from PyPI, no GPU here)
told it is a CUDA or ROCm image the way a GPU image says so (``TORCHRIG_ACCELERATOR``, baked into every image).

The suites must not quietly measure the CPU and pass: bench stops with exit 2 naming what is missing and writes
no record; smoke fails its verdict naming the same; ``--device cpu`` runs on the CPU on purpose and every record
says so. With fakes of the device facts this is tested in tests/bench/test_bench_device.py and
tests/tasks/test_gpu_requirements.py; this is the same path with the image's torch, Python and entry points.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any

import docker
import pytest

from torchrig.engine import Output, container, run

pytestmark = pytest.mark.docker

UID = 4242  # a host UID the image has no passwd entry for, as most users' are

SCRIPT = r"""
cd /tmp
python -m bench --tiny --results /tmp/auto -k gemm; echo "bench-auto rc=$?"
echo "bench-auto records=$(ls /tmp/auto/bench 2>/dev/null | wc -l)"
python -m tasks --only smoke --results /tmp/smoke --quiet; echo "smoke rc=$?"
cat /tmp/smoke/task/*.json 2>/dev/null | tr -d '\n'; echo
python -m bench --tiny --device cpu --results /tmp/cpu -k 'gemm and fp32'; echo "bench-cpu rc=$?"
cat /tmp/cpu/bench/*.json 2>/dev/null | head -c 200000 | tr -d '\n'; echo
"""


def _run(client: docker.DockerClient, image: str, accelerator: str) -> str:
    out = io.StringIO()
    spec = container(env_id="cpu", accelerator="cpu", image=image, purpose="test-gpu-image-no-gpu",
                     command=["sh", "-c", SCRIPT], uid=UID, gid=UID, network_mode="none",
                     environment={"TORCHRIG_ACCELERATOR": accelerator})
    result = run(client, spec, keep=False, output=Output(out=out), timeout=900)
    assert result.exit_code == 0, out.getvalue()  # the script's own status; each step's is printed
    return out.getvalue()


def _records(text: str, marker: str) -> list[dict[str, Any]]:
    """The JSON records printed after ``marker`` (one line of concatenated objects)."""
    line = text.split(marker, 1)[1].splitlines()[1]
    decoder, found, i = json.JSONDecoder(), [], 0
    while i < len(line):
        obj, i = decoder.raw_decode(line, i)
        found.append(obj)
        while i < len(line) and line[i].isspace():
            i += 1
    return found


@pytest.mark.parametrize(("accelerator", "missing"), [
    ("cuda", "no NVIDIA device is in the container"),
    ("rocm", "/dev/kfd is not in the container"),
])
def test_a_gpu_image_without_its_gpu_refuses_the_cpu_unless_asked(cpu_image: Any, docker_client: docker.DockerClient,
                                                                  accelerator: str, missing: str) -> None:
    text = _run(docker_client, cpu_image.image_id, accelerator)
    assert "bench-auto rc=2" in text, text
    assert "bench-auto records=0" in text, "no record may claim a GPU environment ran on the CPU"
    assert re.search(rf"bench: .*{re.escape(missing)}", text), text
    assert "--device cpu" in text, "the message says how to run on the CPU on purpose"

    assert "smoke rc=1" in text, text
    (smoke,) = _records(text, "smoke rc=1")
    assert smoke["verdict"] == "fail"
    assert any(missing in w for w in smoke["warnings"]), smoke["warnings"]

    assert "bench-cpu rc=0" in text, text
    records = _records(text, "bench-cpu rc=0")
    assert records, text
    for r in records:
        assert any("measured on the CPU by request" in w for w in r["warnings"]), r["warnings"]
