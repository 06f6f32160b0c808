"""Shared fixtures for the integration tests (real Docker engine): session-scoped and cached across runs.

Stable names other test modules rely on:

* ``docker_client`` -- a connected ``docker.DockerClient``.
* ``local_base`` -- ``"torchrig-base:bookworm"``, made by debootstrap once per machine (tarball cached under
  ~/.cache/torchrig/base) and imported once.
* ``cpu_image`` -- the BuiltImage of the real ``cpu`` environment (runtime), built from ``local_base`` with torch
  2.0.1 from PyPI through the host's CA bundle, once: a later session reuses it (``ensure_image``: same inputs ->
  same image). The PyTorch CPU index is unreachable here; PyPI's 2.0.1 is the CUDA 11.7 build (runs on CPU), so
  the matrix's 1600 MB budget is replaced by :data:`CPU_PYPI_BUDGET_MB`.

For tests that need *a* torchrig image but not torch itself, ``small_env`` is an environment built by the real
images/Dockerfile from fake ``torch``/``torchvision`` wheels served by an HTTPS index on 127.0.0.1 whose
certificate comes from a freshly generated CA (``fake_ca``): seconds to build, offline, and a build that only
succeeds if the CA bundle reached pip.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import shutil
import ssl
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.images_support import (
    ROOT,
    FakeCA,
    HttpsIndex,
    cpu_options,
    host_ca_bundle,
    make_wheel,
    openssl,
    write_matrix,
)
from torchrig.images import BuildOptions, BuiltImage, ensure_image
from torchrig.images.base import ensure_base
from torchrig.matrix import Environment, Matrix, load_matrix
from torchrig.settings import Settings


def _say(line: str) -> None:
    print(line, flush=True)


# ------------------------------------------------------------------------------------------- engine, images


@pytest.fixture(scope="session")
def docker_client() -> Iterator[object]:
    from torchrig.engine.client import connect

    client = connect()
    yield client
    client.close()


@pytest.fixture(scope="session")
def local_base(docker_client: object) -> str:
    if shutil.which("debootstrap") is None or os.geteuid() != 0:
        pytest.skip("the local base needs debootstrap and root (torchrig base-local)")
    settings = Settings.from_environ()
    return ensure_base("bookworm", client=docker_client, cache_dir=settings.cache_dir,  # type: ignore[arg-type]
                       mirror=settings.debian_mirror, log=_say).ref


@pytest.fixture(scope="session")
def matrix() -> Matrix:
    return load_matrix(ROOT / "matrix.yaml")


@pytest.fixture(scope="session")
def cpu_image(docker_client: object, local_base: str, matrix: Matrix) -> BuiltImage:
    env = matrix.get("cpu")
    return ensure_image(env, "runtime", cpu_options(local_base), client=docker_client, log=_say)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ fake CA, HTTPS index


@pytest.fixture(scope="session")
def fake_ca(tmp_path_factory: pytest.TempPathFactory) -> FakeCA:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test CA")
    d = tmp_path_factory.mktemp("fake-ca")
    marker = f"torchrig-test-ca-{uuid.uuid4().hex}"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={marker}",
             "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"))
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", str(d / "srv.key"),
             "-out", str(d / "srv.csr"))
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    openssl("x509", "-req", "-in", str(d / "srv.csr"), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"),
             "-CAcreateserial", "-days", "2", "-extfile", str(d / "ext.cnf"), "-out", str(d / "srv.pem"))
    bundle = d / "bundle.pem"
    bundle.write_bytes(host_ca_bundle().read_bytes().rstrip(b"\n") + b"\n" + (d / "ca.pem").read_bytes())
    return FakeCA(cert=d / "ca.pem", key=d / "ca.key", server_cert=d / "srv.pem", server_key=d / "srv.key",
                  marker=marker, bundle=bundle)


@pytest.fixture(scope="session")
def fake_wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """torch 2.0.1 / torchvision 0.15.2 / pytest / pytest-benchmark stand-ins (a few bytes each) and one extra."""
    d = tmp_path_factory.mktemp("wheels")
    make_wheel(d, "torch", "2.0.1", {"torch/__init__.py": '__version__ = "2.0.1"\n'})
    make_wheel(d, "torchvision", "0.15.2", {"torchvision/__init__.py": '__version__ = "0.15.2"\n'},
               requires=["torch==2.0.1"])
    make_wheel(d, "torchrig-fake-extra", "1.0", {"torchrig_fake_extra/__init__.py": "VALUE = 42\n"})
    # a torch whose torch.compile supports Python 3.11: its runtime image gets a C compiler
    make_wheel(d, "torch", "2.1.0", {"torch/__init__.py": '__version__ = "2.1.0"\n'})
    make_wheel(d, "torchvision", "0.16.0", {"torchvision/__init__.py": '__version__ = "0.16.0"\n'},
               requires=["torch==2.1.0"])
    # every image carries what runs the benchmarks (matrix.IMAGE_EXTRAS): stand-ins, as the index is offline
    make_wheel(d, "pytest", "8.0.0", {"pytest/__init__.py": '__version__ = "8.0.0"\n'})
    make_wheel(d, "pytest-benchmark", "4.0.0", {"pytest_benchmark/__init__.py": '__version__ = "4.0.0"\n'},
               requires=["pytest>=3.8"])
    # compat.yaml's runtime pins for torch < 2.2 (setuptools<82: pkg_resources) and < 2.3 (numpy<2): stand-ins too;
    # setuptools at the version the base's venv already has, so the build keeps it instead of swapping in a fake
    make_wheel(d, "setuptools", "66.1.1", {"setuptools/__init__.py": '__version__ = "66.1.1"\n',
                                           "pkg_resources/__init__.py": ""})
    make_wheel(d, "numpy", "1.26.4", {"numpy/__init__.py": '__version__ = "1.26.4"\n'})
    return d


class _IndexHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="session")
def https_index(tmp_path_factory: pytest.TempPathFactory, fake_wheels: Path, fake_ca: FakeCA) -> Iterator[HttpsIndex]:
    """A PEP 503 index of ``fake_wheels`` over HTTPS on 127.0.0.1, its certificate signed by ``fake_ca``."""
    root = tmp_path_factory.mktemp("index")
    (root / "files").mkdir()
    links: dict[str, list[str]] = {}
    for whl in sorted(fake_wheels.glob("*.whl")):
        project = whl.name.split("-")[0].replace("_", "-").lower()
        shutil.copy(whl, root / "files" / whl.name)
        digest = hashlib.sha256(whl.read_bytes()).hexdigest()
        links.setdefault(project, []).append(f'<a href="../../files/{whl.name}#sha256={digest}">{whl.name}</a>')
    for project, anchors in links.items():
        (root / "simple" / project).mkdir(parents=True)
        (root / "simple" / project / "index.html").write_text(f"<html><body>{''.join(anchors)}</body></html>\n")
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a: _IndexHandler(*a, directory=str(root)))  # type: ignore[misc]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(fake_ca.server_cert), str(fake_ca.server_key))
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield HttpsIndex(url=f"https://127.0.0.1:{server.server_address[1]}/simple", wheels=fake_wheels)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def small_matrix(tmp_path_factory: pytest.TempPathFactory, https_index: HttpsIndex, local_base: str) -> Matrix:
    return write_matrix(tmp_path_factory.mktemp("matrix") / "matrix.yaml", index=https_index.url, base=local_base)


@pytest.fixture(scope="session")
def small_env(small_matrix: Matrix) -> Environment:
    return small_matrix.get("small")


@pytest.fixture(scope="session")
def small_built(docker_client: object, small_env: Environment, fake_ca: FakeCA) -> BuiltImage:
    """The ``small`` environment's image (a couple of hundred MB: the local base + a venv)."""
    options = BuildOptions(ca_bundle=fake_ca.bundle, root=ROOT)
    return ensure_image(small_env, "runtime", options, client=docker_client, log=_say)  # type: ignore[arg-type]


