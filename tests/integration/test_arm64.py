"""arm64 under emulation on an amd64 host: the arm64 local base, a small arm64 image built from it through the
Docker SDK, run (uname -m, the imports), and a two-platform OCI image index pushed to a local registry.

The emulated work is kept small: the arm64 base's debootstrap runs once per machine (its tarball is cached under
~/.cache/torchrig/base like the amd64 one's; about 3 min cold on 2 quiet cores, 9-10 min on busy ones) and the
image is the ``small`` environment's (fake py3-none-any torch wheels, which install on aarch64 as well).
Needs qemu-user-static + binfmt-support (.ci/run installs and registers them).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from tests.integration.images_support import DOCKERFILE, ROOT, FakeCA, HttpsIndex, write_matrix
from tests.integration.test_registry import registry  # noqa: F401 - the fixture: a registry on 127.0.0.1, stopped afterwards
from torchrig.errors import HostCheckError
from torchrig.images import BuildOptions, BuiltImage, ensure_image
from torchrig.images.base import ensure_base, require_emulation
from torchrig.matrix import Environment, Matrix
from torchrig.settings import Settings

pytestmark = pytest.mark.docker
MANIFESTS = ("application/vnd.docker.distribution.manifest.v2+json", "application/vnd.oci.image.manifest.v1+json")

_MULTI = """  - id: multi
    description: the small environment for two platforms (integration tests)
    accelerator: cpu
    torch: "2.0.1"
    python: "3.11"
    index: {index}
    dockerfile: {dockerfile}
    targets: {{runtime: "{base}"}}
    extras: ["torchrig-fake-extra==1.0"]
    size_budget_mb: {{runtime: 400}}
    platforms: [linux/amd64, linux/arm64]
"""


def _say(line: str) -> None:
    print(line, flush=True)


@pytest.fixture(scope="module")
def arm64_base(docker_client: docker.DockerClient) -> str:
    try:
        require_emulation("arm64")
    except HostCheckError as e:
        if "docker" in os.environ.get("TORCHRIG_REQUIRE", ""):
            pytest.fail(str(e), pytrace=False)
        pytest.skip(str(e))
    if shutil.which("debootstrap") is None or os.geteuid() != 0:
        pytest.skip("the local base needs debootstrap and root (torchrig base-local --arch arm64)")
    settings = Settings.from_environ()
    return ensure_base("bookworm", arch="arm64", client=docker_client, cache_dir=settings.cache_dir,
                       mirror=settings.debian_mirror, log=_say).ref


@pytest.fixture(scope="module")
def multi_matrix(tmp_path_factory: pytest.TempPathFactory, https_index: HttpsIndex, local_base: str) -> Matrix:
    path = tmp_path_factory.mktemp("multi") / "matrix.yaml"
    return write_matrix(path, index=https_index.url, base=local_base,
                        extra_envs=_MULTI.format(index=https_index.url, dockerfile=DOCKERFILE, base=local_base))


@pytest.fixture(scope="module")
def multi_env(multi_matrix: Matrix) -> Environment:
    return multi_matrix.get("multi")


@pytest.fixture(scope="module")
def arm64_built(docker_client: docker.DockerClient, multi_env: Environment, arm64_base: str,
                fake_ca: FakeCA) -> Iterator[BuiltImage]:
    options = BuildOptions(ca_bundle=fake_ca.bundle, root=ROOT, platform="linux/arm64", base_image=arm64_base)
    built = ensure_image(multi_env, "runtime", options, client=docker_client, log=_say)
    yield built
    for name in (built.ref.immutable, built.ref.alias):  # ~200 MB; the base and its tarball stay (the cache)
        with contextlib.suppress(docker.errors.APIError):
            docker_client.images.remove(name)


def test_the_arm64_image_is_arm64_runs_aarch64_and_imports_its_packages(docker_client: docker.DockerClient,
                                                                        arm64_built: BuiltImage) -> None:
    image = docker_client.images.get(arm64_built.image_id)
    assert image.attrs["Architecture"] == "arm64" and image.attrs["Os"] == "linux"
    assert arm64_built.labels["io.torchrig.platform"] == "linux/arm64"
    assert arm64_built.ref.immutable.endswith("-arm64") and arm64_built.ref.alias == "torchrig-test:multi-arm64"
    script = ("uname -m; python -c 'import platform, torch, torchvision, torchrig_fake_extra, torchrig.results; "
              "print(platform.machine(), torch.__version__, torchvision.__version__, torchrig_fake_extra.VALUE)'")
    out = docker_client.containers.run(arm64_built.image_id, ["bash", "-c", script], remove=True,
                                       network_disabled=True).decode()
    assert out.split() == ["aarch64", "aarch64", "2.0.1", "0.15.2", "42"], out


def test_a_platform_the_row_does_not_list_is_refused_with_its_platforms(small_matrix: Matrix) -> None:
    r = subprocess.run([sys.executable, "-m", "torchrig", "--matrix", str(small_matrix.path), "build", "small",
                        "--platform", "linux/arm64"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert r.returncode == 2, r.stderr
    assert "small does not build for linux/arm64: its platforms are linux/amd64" in r.stderr


def _registry_get(address: str, path: str, accept: str) -> tuple[Any, dict[str, str]]:
    req = urllib.request.Request(f"http://{address}/v2/{path}", headers={"Accept": accept})
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=10) as r:
        return json.loads(r.read()), dict(r.headers)


def test_push_puts_a_two_platform_index_in_the_registry(docker_client: docker.DockerClient, arm64_built: BuiltImage,
                                                        small_built: BuiltImage, multi_matrix: Matrix,
                                                        registry: str) -> None:  # noqa: F811
    """multi's amd64 image is small's (same Dockerfile, wheels and tag): tagged, not built a second time."""
    tag = f"{registry}/torchrig-test:2.0.1-cpu-py3.11"
    docker_client.images.get(small_built.image_id).tag(*tag.rsplit(":", 1))
    docker_client.images.get(arm64_built.image_id).tag(*f"{tag}-arm64".rsplit(":", 1))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TORCHRIG_REGISTRY": registry}
    try:
        r = subprocess.run([sys.executable, "-m", "torchrig", "--matrix", str(multi_matrix.path), "push", "multi"],
                           capture_output=True, text=True, timeout=300, env=env)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "image index sha256:" in r.stderr
        index = "application/vnd.oci.image.index.v1+json"
        doc, headers = _registry_get(registry, "torchrig-test/manifests/2.0.1-cpu-py3.11", index)
        assert headers["Content-Type"].startswith(index)
        platforms = {(m["platform"]["os"], m["platform"]["architecture"]): m["digest"] for m in doc["manifests"]}
        assert set(platforms) == {("linux", "amd64"), ("linux", "arm64")}
        assert _registry_get(registry, "torchrig-test/manifests/multi", index)[0] == doc
        for (_, arch), digest in platforms.items():  # each entry is that platform's image: its config says so
            manifest, _ = _registry_get(registry, f"torchrig-test/manifests/{digest}", ", ".join(MANIFESTS))
            config, _ = _registry_get(registry, f"torchrig-test/blobs/{manifest['config']['digest']}", "*/*")
            assert config["architecture"] == arch
        # the engine pulling the tag picks this host's platform from the index
        docker_client.images.remove(tag, noprune=True)
        assert docker_client.images.pull(tag).id == small_built.image_id
    finally:
        for name in (tag, f"{tag}-amd64", f"{tag}-arm64"):
            if docker_client.images.list(name=name):
                docker_client.images.remove(name, noprune=True)
