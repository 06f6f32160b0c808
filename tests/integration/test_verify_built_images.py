"""`torchrig verify` and the SBOM on the real engine, with the small image (fake torch wheels, seconds to build).

A fresh image verifies clean (its SBOM regenerated from it has the label's digest); an image derived from one that
`pip install`s one more package fails with that package named; the SBOM a build keeps is valid CycloneDX.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from tests.integration.images_support import ROOT, FakeCA, make_wheel
from torchrig.images import BuildOptions, BuiltImage, build_image
from torchrig.images.sbom import SBOM_LABEL, sboms_dir
from torchrig.matrix import Environment, ImageRef, Matrix

pytestmark = pytest.mark.docker


def _cli(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]), "TORCHRIG_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "torchrig", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_a_fresh_image_verifies_clean(small_built: BuiltImage, small_matrix: Matrix, tmp_path: Path) -> None:
    assert small_built.labels[SBOM_LABEL], "every built image carries its SBOM's digest"
    r = _cli("--matrix", str(small_matrix.path), "verify", "small", cache=tmp_path)
    print(r.stdout, r.stderr)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "✓ SBOM        regenerated from the image" in r.stdout
    assert "✓ torch       2.0.1" in r.stdout and "no drift" in r.stdout


@pytest.fixture
def kept(docker_client: docker.DockerClient, small_env: Environment, fake_ca: FakeCA,
         tmp_path: Path) -> Iterator[tuple[BuiltImage, Path]]:
    """The small image built with a cache directory: its SBOM is kept in <cache>/sboms."""
    cache = tmp_path / "cache"
    ref = ImageRef(immutable="torchrig-test:verify", alias="torchrig-test:verify-alias")
    built = build_image(small_env, "runtime", BuildOptions(ca_bundle=fake_ca.bundle, root=ROOT, ref=ref,
                                                           cache_dir=cache), client=docker_client, log=print)
    try:
        yield built, cache
    finally:
        for name in (ref.immutable, ref.alias):
            docker_client.images.remove(name)


def _derived(client: docker.DockerClient, image_id: str, wheel: Path) -> str:
    """FROM the image + one more package, installed offline from a wheel copied into the context."""
    dockerfile = (f"FROM {image_id}\nCOPY {wheel.name} /tmp/{wheel.name}\n"
                  f"RUN python -m pip install --no-index --no-deps /tmp/{wheel.name}\n").encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for arc, data in (("Dockerfile", dockerfile), (wheel.name, wheel.read_bytes())):
            info = tarfile.TarInfo(arc)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    image, _ = client.images.build(fileobj=buf, custom_context=True, rm=True, forcerm=True, network_mode="none")
    return str(image.id)


def test_an_image_that_pip_installed_one_more_package_fails_naming_it(
        docker_client: docker.DockerClient, kept: tuple[BuiltImage, Path], tmp_path: Path) -> None:
    built, cache = kept
    stored = sboms_dir(cache) / f"{built.image_id.removeprefix('sha256:')}.cdx.json"
    assert stored.is_file(), "the build kept its SBOM beside the size records"
    doc = json.loads(stored.read_bytes())
    validation = pytest.importorskip("cyclonedx.validation.json", reason="cyclonedx-python-lib (the test extra)")
    from cyclonedx.schema import SchemaVersion

    assert validation.JsonStrictValidator(SchemaVersion.V1_5).validate_str(stored.read_text()) is None
    names = {c["name"] for c in doc["components"]}
    assert {"torch", "torchvision", "torchrig-fake-extra", "pip"} <= names

    clean = _cli("verify", built.image_id, cache=cache)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "packages and" in clean.stdout and str(stored) in clean.stdout, clean.stdout

    wheel = make_wheel(tmp_path, "requests", "2.32.3", {"requests/__init__.py": "__version__ = '2.32.3'\n"})
    derived = _derived(docker_client, built.image_id, wheel)
    try:
        r = _cli("verify", derived, cache=cache)
        print(r.stdout, r.stderr)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "      extra: requests 2.32.3" in r.stdout
        assert "layer(s) on top of those the SBOM lists" in r.stdout
        assert "Traceback" not in r.stderr
        # without the kept copy the digest still tells (the regenerated SBOM is not the label's)
        bare = _cli("verify", derived, cache=tmp_path / "empty")
        assert bare.returncode == 1 and "regenerated from the image, it is sha256" in bare.stdout, bare.stdout
    finally:
        docker_client.images.remove(derived)


def test_an_absent_image_is_a_clear_error(tmp_path: Path) -> None:
    r = _cli("verify", "torchrig-test:no-such-image", cache=tmp_path)
    assert r.returncode == 2 and "no image torchrig-test:no-such-image on this Docker engine" in r.stderr
    assert "Traceback" not in r.stderr
