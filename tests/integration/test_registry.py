"""Push and pull through a real registry (Debian's docker-registry on 127.0.0.1), and a push to a dead one.

A small torchrig image (the ``small`` environment, built by the real Dockerfile from the local base) keeps this
fast; the push/pull code path is the same for the multi-GB ones.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.integration.images_support import ROOT, FakeCA, HttpsIndex, free_port, write_matrix
from torchrig.images import BuildOptions, BuiltImage, ensure_image
from torchrig.images.pin import bases_file, read_pins
from torchrig.matrix import ImageRef, Matrix, load_matrix

pytestmark = pytest.mark.docker


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    """A registry on 127.0.0.1:<free port> with storage in a temp dir, stopped afterwards."""
    binary = shutil.which("docker-registry") or "/usr/bin/docker-registry"
    if not Path(binary).exists():
        pytest.skip("Debian's docker-registry is not installed (apt-get install docker-registry)")
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(f"""version: 0.1
log: {{level: warn}}
storage:
  filesystem: {{rootdirectory: {tmp_path / "storage"}}}
  delete: {{enabled: true}}
http:
  addr: 127.0.0.1:{port}
""")
    log = tmp_path / "registry.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([binary, "serve", str(config)], stdout=out, stderr=subprocess.STDOUT)
    address = f"127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.build_opener(urllib.request.ProxyHandler({})).open(f"http://{address}/v2/",
                                                                                  timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"docker-registry exited: {log.read_text()[-2000:]}")
                time.sleep(0.1)
        yield address
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _cli(matrix: Matrix, *args: str, registry: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]), "TORCHRIG_REGISTRY": registry}
    return subprocess.run([sys.executable, "-m", "torchrig", "--matrix", str(matrix.path), *args],
                          capture_output=True, text=True, env=env, timeout=600)


def _tags(address: str, repo: str) -> list[str]:
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
            f"http://{address}/v2/{repo}/tags/list", timeout=5) as r:
        return sorted(json.load(r)["tags"])


def test_push_pull_round_trip(docker_client: docker.DockerClient, small_built: BuiltImage, small_matrix: Matrix,
                              registry: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCHRIG_REGISTRY", registry)
    ref = load_matrix(small_matrix.path).get("small").tags("runtime")  # the registry is read when loading
    assert ref.immutable.startswith(f"{registry}/torchrig-test:")
    for name in (ref.immutable, ref.alias):
        docker_client.images.get(small_built.image_id).tag(*name.rsplit(":", 1))
    try:
        t0 = time.monotonic()
        r = _cli(small_matrix, "push", "small", registry=registry)
        push_s = time.monotonic() - t0
        assert r.returncode == 0, r.stderr
        assert "layers" in r.stderr and "MB transferred" in r.stderr, "per-layer progress is shown"
        assert _tags(registry, "torchrig-test") == sorted([ref.immutable.rsplit(":", 1)[1],
                                                           ref.alias.rsplit(":", 1)[1]])

        for name in (ref.immutable, ref.alias):
            docker_client.images.remove(name, noprune=True)
        t0 = time.monotonic()
        r = _cli(small_matrix, "pull", "small", registry=registry)
        pull_s = time.monotonic() - t0
        assert r.returncode == 0, r.stderr
        assert docker_client.images.get(ref.immutable).id == small_built.image_id, "the same image came back"
        assert docker_client.images.get(ref.alias).id == small_built.image_id
        print(f"\npush {push_s:.1f} s, pull {pull_s:.1f} s ({small_built.size_bytes / 1e6:.0f} MB image)")
    finally:
        for name in (ref.immutable, ref.alias):
            if docker_client.images.list(name=name):
                docker_client.images.remove(name, noprune=True)


def test_push_to_a_dead_registry_fails_with_a_clear_message(docker_client: docker.DockerClient,
                                                            small_built: BuiltImage, small_matrix: Matrix,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("TORCHRIG_REGISTRY", dead)
    ref = load_matrix(small_matrix.path).get("small").tags("runtime")
    for name in (ref.immutable, ref.alias):
        docker_client.images.get(small_built.image_id).tag(*name.rsplit(":", 1))
    try:
        r = _cli(small_matrix, "push", "small", registry=dead)
        assert r.returncode == 5, r.stderr
        assert f"cannot reach registry {dead}: is it running? Set TORCHRIG_REGISTRY" in r.stderr
        assert "Traceback" not in r.stderr
    finally:
        for name in (ref.immutable, ref.alias):
            docker_client.images.remove(name, noprune=True)


def test_pull_of_an_image_the_registry_lacks_fails_clearly(small_matrix: Matrix, registry: str) -> None:
    r = _cli(small_matrix, "pull", "small", registry=registry)
    assert r.returncode == 5, r.stderr
    assert "does not have that image" in r.stderr or "not found" in r.stderr


def test_pin_bases_records_the_registry_digest_and_a_build_from_it_carries_it(  # noqa: PLR0917 - fixtures
        docker_client: docker.DockerClient, local_base: str, https_index: HttpsIndex, fake_ca: FakeCA,
        registry: str, tmp_path: Path) -> None:
    """`torchrig pin-bases` asks the registry what the base's tag points at; the build uses tag@digest and says so."""
    repo, tag = f"{registry}/torchrig-base", "bookworm"
    base = f"{repo}:{tag}"
    docker_client.images.get(local_base).tag(repo, tag)
    built = None
    try:
        for line in docker_client.images.push(repo, tag=tag, stream=True, decode=True):
            assert "error" not in line, line
        matrix = write_matrix(tmp_path / "matrix.yaml", index=https_index.url, base=base)
        r = _cli(matrix, "pin-bases", "small", registry="")
        assert r.returncode == 0, r.stderr
        pins = read_pins(bases_file(matrix.path))
        digest = str(docker_client.images.get_registry_data(base).id)
        assert pins == {base: digest} and digest.startswith("sha256:")
        assert f"{base}: {digest} (new)" in r.stdout + r.stderr

        options = BuildOptions(ca_bundle=fake_ca.bundle, root=ROOT, bases_file=bases_file(matrix.path),
                               ref=ImageRef(immutable="torchrig-test-pinned:1", alias="torchrig-test-pinned:small"))
        built = ensure_image(matrix.get("small"), "runtime", options, client=docker_client, log=print)
        assert built.labels["org.opencontainers.image.base.digest"] == digest
        assert built.labels["org.opencontainers.image.base.name"] == base
    finally:
        if built is not None:
            for name in (built.ref.immutable, built.ref.alias):
                if docker_client.images.list(name=name):
                    docker_client.images.remove(name, noprune=True)
        docker_client.images.remove(base, noprune=True)
