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

import base64
import contextlib
import csv
import hashlib
import http.server
import io
import os
import shutil
import socket
import ssl
import subprocess
import tarfile
import threading
import uuid
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from torchrig.base import ensure_base
from torchrig.images import BuildOptions, BuiltImage, default_root, ensure_image
from torchrig.matrix import Environment, Matrix, load_matrix

ROOT = default_root()
# PyPI's torch 2.0.1 wheel is the CUDA 11.7 build: with its nvidia-* wheels the cpu image is about 5.2 GB
# (measured here: see docs/images.md). The budget sits ~10% above that, so growth beyond noise still fails.
CPU_PYPI_BUDGET_MB = 5800
PYPI = "https://pypi.org/simple"


def _say(line: str) -> None:
    print(line, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def host_ca_bundle() -> Path:
    for var in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        if os.environ.get(var) and Path(os.environ[var]).is_file():
            return Path(os.environ[var])
    return Path(ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt")


# ------------------------------------------------------------------------------------------- engine, images


@pytest.fixture(scope="session")
def docker_client() -> Iterator[object]:
    from torchrig.docker_client import connect

    client = connect()
    yield client
    client.close()


@pytest.fixture(scope="session")
def local_base(docker_client: object) -> str:
    if shutil.which("debootstrap") is None or os.geteuid() != 0:
        pytest.skip("the local base needs debootstrap and root (torchrig base-local)")
    return ensure_base("bookworm", client=docker_client, log=_say).ref  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def matrix() -> Matrix:
    return load_matrix(ROOT / "matrix.yaml")


def cpu_options(local_base: str, **kw: object) -> BuildOptions:
    """How the suite builds ``cpu`` here: local base, PyPI, the host's CA bundle, a budget for PyPI's wheels."""
    return BuildOptions.from_environ(base_image=local_base, index_url=PYPI, ca_bundle=host_ca_bundle(),
                                     size_budget_mb=CPU_PYPI_BUDGET_MB, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def cpu_image(docker_client: object, local_base: str, matrix: Matrix) -> BuiltImage:
    env = matrix.get("cpu")
    return ensure_image(env, "runtime", cpu_options(local_base), client=docker_client, log=_say)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ fake CA, HTTPS index


@dataclass(frozen=True)
class FakeCA:
    cert: Path
    key: Path
    server_cert: Path
    server_key: Path
    marker: str  # the CA's unique common name
    bundle: Path  # the host's real bundle + this CA

    def needles(self) -> list[bytes]:
        """Byte strings that appear wherever a copy of the CA does: its name and lines of its base64 body."""
        body = [ln for ln in self.cert.read_text().splitlines() if ln and not ln.startswith("-----")]
        return [self.marker.encode(), *(ln.encode() for ln in body[2:-2] if len(ln) == 64)]


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="session")
def fake_ca(tmp_path_factory: pytest.TempPathFactory) -> FakeCA:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test CA")
    d = tmp_path_factory.mktemp("fake-ca")
    marker = f"torchrig-test-ca-{uuid.uuid4().hex}"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={marker}",
             "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"))
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", str(d / "srv.key"),
             "-out", str(d / "srv.csr"))
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    _openssl("x509", "-req", "-in", str(d / "srv.csr"), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"),
             "-CAcreateserial", "-days", "2", "-extfile", str(d / "ext.cnf"), "-out", str(d / "srv.pem"))
    bundle = d / "bundle.pem"
    bundle.write_bytes(host_ca_bundle().read_bytes().rstrip(b"\n") + b"\n" + (d / "ca.pem").read_bytes())
    return FakeCA(cert=d / "ca.pem", key=d / "ca.key", server_cert=d / "srv.pem", server_key=d / "srv.key",
                  marker=marker, bundle=bundle)


def make_wheel(directory: Path, name: str, version: str, files: dict[str, str],
               requires: Sequence[str] = ()) -> Path:
    """A minimal pure-Python wheel (what pip needs: METADATA, WHEEL, RECORD)."""
    dist = f"{name.replace('-', '_')}-{version}"
    path = directory / f"{dist}-py3-none-any.whl"
    meta = [f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", *(f"Requires-Dist: {r}\n" for r in requires)]
    contents = {**files, f"{dist}.dist-info/METADATA": "".join(meta),
                f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: torchrig-tests\nRoot-Is-Purelib: true\n"
                                           "Tag: py3-none-any\n"}
    rows = []
    for arc, text in contents.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        rows.append([arc, f"sha256={digest}", str(len(text.encode()))])
    record = io.StringIO()
    csv.writer(record, lineterminator="\n").writerows([*rows, [f"{dist}.dist-info/RECORD", "", ""]])
    contents[f"{dist}.dist-info/RECORD"] = record.getvalue()
    with zipfile.ZipFile(path, "w") as zf:
        for arc, text in contents.items():
            zf.writestr(zipfile.ZipInfo(arc, date_time=(2020, 1, 1, 0, 0, 0)), text)
    return path


@pytest.fixture(scope="session")
def fake_wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """torch 2.0.1 / torchvision 0.15.2 stand-ins (a few bytes each) and one extra."""
    d = tmp_path_factory.mktemp("wheels")
    make_wheel(d, "torch", "2.0.1", {"torch/__init__.py": '__version__ = "2.0.1"\n'})
    make_wheel(d, "torchvision", "0.15.2", {"torchvision/__init__.py": '__version__ = "0.15.2"\n'},
               requires=["torch==2.0.1"])
    make_wheel(d, "torchrig-fake-extra", "1.0", {"torchrig_fake_extra/__init__.py": "VALUE = 42\n"})
    return d


class _IndexHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass(frozen=True)
class HttpsIndex:
    url: str  # https://127.0.0.1:PORT/simple
    wheels: Path


@pytest.fixture(scope="session")
def https_index(tmp_path_factory: pytest.TempPathFactory, fake_wheels: Path, fake_ca: FakeCA) -> Iterator[HttpsIndex]:
    """A PEP 503 index of ``fake_wheels`` over HTTPS on 127.0.0.1, its certificate signed by ``fake_ca``."""
    root = tmp_path_factory.mktemp("index")
    for whl in sorted(fake_wheels.glob("*.whl")):
        project = whl.name.split("-")[0].replace("_", "-").lower()
        (root / "simple" / project).mkdir(parents=True, exist_ok=True)
        (root / "files").mkdir(exist_ok=True)
        shutil.copy(whl, root / "files" / whl.name)
        digest = hashlib.sha256(whl.read_bytes()).hexdigest()
        (root / "simple" / project / "index.html").write_text(
            f'<html><body><a href="../../files/{whl.name}#sha256={digest}">{whl.name}</a></body></html>\n')
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


def write_matrix(path: Path, *, index: str, base: str, extra_envs: str = "") -> Matrix:
    """A matrix with the ``small`` environment (fake torch from ``index``), local image names only."""
    path.write_text(f"""schema_version: 1
registry: ""
image: torchrig-test
environments:
  - id: small
    description: fake torch wheels from a local HTTPS index (integration tests)
    accelerator: cpu
    torch: "2.0.1"
    python: "3.11"
    index: {index}
    dockerfile: {ROOT / "images" / "Dockerfile"}
    targets: {{runtime: "{base}"}}
    extras: ["torchrig-fake-extra==1.0"]
    size_budget_mb: {{runtime: 400}}
{extra_envs}""")
    return load_matrix(path)


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


def image_bytes_contain(client: object, image: str, needles: Sequence[bytes]) -> list[str]:
    """Where any needle occurs in the image: `docker save` (every layer), its config and its history."""
    import json

    found: list[str] = []
    raw = b"".join(client.api.get_image(image, chunk_size=1 << 20))  # type: ignore[attr-defined]
    with tarfile.open(fileobj=io.BytesIO(raw)) as outer:
        for member in outer.getmembers():
            if not member.isfile():
                continue
            data = outer.extractfile(member).read()  # type: ignore[union-attr]
            blobs = [(member.name, data)]
            if member.name.endswith("layer.tar"):
                with contextlib.suppress(tarfile.TarError), tarfile.open(fileobj=io.BytesIO(data)) as layer:
                    blobs += [(f"{member.name}:{m.name}", layer.extractfile(m).read())  # type: ignore[union-attr]
                              for m in layer.getmembers() if m.isfile()]
            found += [name for name, blob in blobs if any(n in blob for n in needles)]
    meta = json.dumps(client.api.inspect_image(image)).encode() + \
        json.dumps(client.api.history(image)).encode()  # type: ignore[attr-defined]
    found += ["inspect/history" for n in needles if n in meta]
    return found
