"""In the real `cpu` image, as host UID 4242 (no passwd entry in the image): the name getpass.getuser() needs
for inductor's cache directory comes from the container spec, and the compiler caches are writable.

torch 2.0.1 in the cpu image cannot torch.compile on Python 3.11 (dynamo supports <= 3.10 there), so the cache
directory is taken the way 2.0.1's ``torch._inductor.codecache.cache_dir()`` takes it (its default is formatted,
calling getpass.getuser(), even when TORCHINDUCTOR_CACHE_DIR is set); where compile is supported it also runs a
compiled function.
"""

from __future__ import annotations

import dataclasses
import io
import re
from typing import Any

import docker
import pytest

from torchrig.engine import Output, container, run

pytestmark = pytest.mark.docker

UID = 4242
PROBE = r"""
import getpass, os, sys, tempfile
import torch
user = getpass.getuser()
cache = os.environ.get("TORCHINDUCTOR_CACHE_DIR", f"{tempfile.gettempdir()}/torchinductor_{getpass.getuser()}")
triton = os.environ.get("TRITON_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".triton", "cache"))
for d in (cache, triton):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "probe"), "w") as f:
        f.write("ok")
compiled = "unsupported"
if sys.version_info < (3, 11) or torch.__version__ >= "2.1":
    f = torch.compile(lambda x: (x * 2).sum())
    compiled = str(float(f(torch.ones(4))))
print(f"uid={os.getuid()} user={user} cache={cache} triton={triton} compiled={compiled}")
"""


def _run(client: docker.DockerClient, image: str, **kw: Any) -> tuple[bool, str]:
    out = io.StringIO()
    spec = container(env_id="cpu", accelerator="cpu", image=image, purpose="test-any-uid",
                     command=["python", "-c", PROBE], **kw)
    result = run(client, spec, keep=False, output=Output(out=out), timeout=600)
    return result.ok, out.getvalue()


def test_uid_4242_gets_a_name_and_writable_compiler_caches(cpu_image: Any,
                                                           docker_client: docker.DockerClient) -> None:
    ok, text = _run(docker_client, cpu_image.image_id, uid=UID, gid=UID)
    assert ok, text
    m = re.search(r"uid=(\d+) user=(\S+) cache=(\S+) triton=(\S+) compiled=(\S+)", text)
    assert m, text
    assert m.group(1) == str(UID) and m.group(2) == "torchrig"
    assert m.group(3).endswith(f"_{UID}") and m.group(4).endswith(f"_{UID}")
    assert m.group(5) in ("unsupported", "8.0")


def test_without_the_spec_environment_the_same_uid_fails(cpu_image: Any, docker_client: docker.DockerClient) -> None:
    """The control: plain `--user 4242` with only HOME (what torchrig did before) raises in getpass.getuser()."""
    spec = container(env_id="cpu", accelerator="cpu", image=cpu_image.image_id, purpose="test-any-uid",
                     command=["python", "-c", PROBE])
    bare = dataclasses.replace(spec, user=f"{UID}:{UID}", environment={**spec.environment, "HOME": "/tmp"})
    out = io.StringIO()
    result = run(docker_client, bare, keep=False, output=Output(out=out), timeout=600)
    assert not result.ok and "uid not found" in out.getvalue()
