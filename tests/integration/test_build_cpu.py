"""The real ``cpu`` environment, end to end: local base -> CA bundle -> torch 2.0.1 from PyPI -> a usable image.

Built once per machine by the ``cpu_image`` fixture (reused while its inputs are unchanged). The matrix's index
(download.pytorch.org) is unreachable here, so the build uses the PyPI override; the committed
locks/cpu@pypi.org-simple.txt is resolved against PyPI, so this build installs from it (uv, hash-checked).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import docker
import pytest

from tests.integration.images_support import CPU_PYPI_BUDGET_MB, ROOT, make_wheel
from torchrig.images import BuiltImage

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PROBE = """import json, os, pwd, sys, torch, torchvision
print(json.dumps({"torch": torch.__version__, "torchvision": torchvision.__version__,
                  "python": "%d.%d" % sys.version_info[:2], "user": pwd.getpwuid(os.getuid()).pw_name,
                  "uid": os.getuid(), "sum": float(torch.ones(3).sum()),
                  "env": {k: v for k, v in os.environ.items() if k.startswith(("TORCHRIG_", "NVIDIA_", "PIP_"))}}))
"""


def _run(client: docker.DockerClient, image: str, cmd: list[str], **kw: object) -> str:
    return bytes(client.containers.run(image, cmd, remove=True, network_disabled=True, **kw)).decode()


def test_torch_imports_as_the_non_root_user(docker_client: docker.DockerClient, cpu_image: BuiltImage) -> None:
    out = json.loads(_run(docker_client, cpu_image.image_id, ["python", "-c", PROBE]).strip().splitlines()[-1])
    assert out["torch"].split("+")[0] == "2.0.1"
    assert out["torchvision"].split("+")[0] == "0.15.2"
    assert out["python"] == "3.11"
    assert (out["user"], out["uid"]) == ("torchrig", 1000)
    assert out["sum"] == 3.0
    assert out["env"]["TORCHRIG_ENV_ID"] == "cpu"
    assert out["env"]["TORCHRIG_TORCH_VERSION"] == "2.0.1"
    assert out["env"]["TORCHRIG_ACCELERATOR"] == "cpu"
    assert out["env"]["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"


def test_labels_say_what_is_inside(cpu_image: BuiltImage) -> None:
    labels = cpu_image.labels
    assert labels["org.opencontainers.image.version"] == "2.0.1-cpu-py3.11"
    for key in ("title", "version", "revision", "created", "source"):
        assert labels[f"org.opencontainers.image.{key}"], key
    assert (labels["io.torchrig.env"], labels["io.torchrig.torch"], labels["io.torchrig.python"],
            labels["io.torchrig.accelerator"]) == ("cpu", "2.0.1", "3.11", "cpu")
    assert labels["io.torchrig.index"] == "https://pypi.org/simple"
    lock = ROOT / "locks" / "cpu@pypi.org-simple.txt"  # the lock for the index this build uses (PyPI), not cpu.txt
    assert labels["io.torchrig.lock"] == hashlib.sha256(lock.read_bytes()).hexdigest(), \
        "built from the committed lock resolved against PyPI, the index this build uses"
    assert labels["io.torchrig.lock.file"] == "locks/cpu@pypi.org-simple.txt"


def test_no_pip_or_apt_caches_and_no_build_leftovers(docker_client: docker.DockerClient,
                                                     cpu_image: BuiltImage) -> None:
    leftovers = "/home/torchrig/.cache/pip /root/.cache/pip /tmp/torchrig-build-ca.pem /etc/apt/apt.conf.d/99torchrig*"
    # what the build added (the base's own files, e.g. Debian's /usr/share/python-wheels, are not its doing)
    added = "/opt /home /root /tmp /etc/torchrig /workspace /var/cache"
    script = (f"for p in {leftovers}; do [ -e $p ] && echo LEFT $p; done; "
              f"find {added} -xdev \\( -name '*.whl' -o -path '*/pip/http*' \\) 2>/dev/null | head; "
              "ls /var/lib/apt/lists | grep -v -x -e partial -e lock | head")
    assert _run(docker_client, cpu_image.image_id, ["bash", "-c", script], user="0").strip() == ""


def test_a_later_pip_install_cannot_replace_torch(docker_client: docker.DockerClient, cpu_image: BuiltImage,
                                                  tmp_path: Path) -> None:
    """PIP_CONSTRAINT pins torch: installing another torch fails; with the constraint off, the same install works."""
    make_wheel(tmp_path, "torch", "2.1.0", {"torch/__init__.py": "__version__ = '2.1.0'\n"})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(tmp_path, arcname="wheels", filter=lambda i: i.replace(uid=1000, gid=1000, mode=0o755))
    install = "pip install --dry-run --no-index --find-links /tmp/wheels torch==2.1.0"
    script = (f"{install} > /tmp/a.log 2>&1; echo \"constrained rc=$?\"; cat /tmp/a.log; echo ----; "
              f"PIP_CONSTRAINT= {install} > /tmp/b.log 2>&1; echo \"free rc=$?\"; cat /tmp/b.log")
    container = docker_client.containers.create(cpu_image.image_id, ["bash", "-c", script], network_disabled=True)
    try:
        container.put_archive("/tmp", buf.getvalue())
        container.start()
        container.wait(timeout=120)
        out = container.logs().decode()
    finally:
        container.remove(force=True)
    constrained, free = out.split("----", 1)
    assert constrained.startswith("constrained rc=1"), constrained[-1500:]
    assert "torch==2.0.1" in constrained, "pip names the constraint that stops it"
    assert free.strip().startswith("free rc=0"), free[-1500:]
    assert "Would install torch-2.1.0" in free


def test_size_is_close_to_the_payload_and_within_budget(cpu_image: BuiltImage) -> None:
    print(f"\n{cpu_image.summary()}")
    assert cpu_image.ratio <= 1.10, cpu_image.summary()
    assert cpu_image.size_bytes <= CPU_PYPI_BUDGET_MB * 1_000_000
