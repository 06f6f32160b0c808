"""Helpers for the image integration tests (imported by conftest.py and the test modules).

Plain functions and data classes; the fixtures that use them live in conftest.py.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import io
import json
import os
import shutil
import socket
import ssl
import subprocess
import tarfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from torchrig.images import BuildOptions, default_root
from torchrig.matrix import Matrix, load_matrix
from torchrig.settings import Settings

ROOT = default_root()

# PyPI's torch 2.0.1 wheel is the CUDA 11.7 build: with its nvidia-* wheels the cpu image is about 5.2 GB
# (measured here: see docs/images.md). The budget sits ~10% above that, so growth beyond noise still fails.
CPU_PYPI_BUDGET_MB = 5800
PYPI = "https://pypi.org/simple"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def host_ca_bundle() -> Path:
    for var in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        if os.environ.get(var) and Path(os.environ[var]).is_file():
            return Path(os.environ[var])
    return Path(ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt")


def cpu_options(local_base: str, **kw: Any) -> BuildOptions:
    """How the suite builds ``cpu`` here: local base, PyPI, the host's CA bundle, a budget for PyPI's wheels (and,
    from the environment as the CLI reads it, the size-measurement cache and keep-containers)."""
    flags = {"base-image": local_base, "index-url": PYPI, "ca-bundle": str(host_ca_bundle()),
             "size-budget-mb": CPU_PYPI_BUDGET_MB}
    return replace(BuildOptions.from_settings(Settings.from_environ(flags=flags)), **kw)


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


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


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


@dataclass(frozen=True)
class HttpsIndex:
    url: str  # https://127.0.0.1:PORT/simple
    wheels: Path


def extra_env(eid: str, *, torch: str, python: str, index: str, base: str) -> str:
    """One more environment for :func:`write_matrix`'s ``extra_envs``: ``torch`` from ``index``, runtime ``base``."""
    return f"""  - id: {eid}
    accelerator: cpu
    torch: "{torch}"
    python: "{python}"
    index: {index}
    dockerfile: {DOCKERFILE}
    targets: {{runtime: "{base}"}}
"""


# The real images/Dockerfile, copied beside a test matrix: matrix.yaml may only name a Dockerfile inside its own
# folder. Not under images/: a matrix folder with images/ would be taken for the checkout (code, locks, helper).
DOCKERFILE = "dockerfile/Dockerfile"


def write_matrix(path: Path, *, index: str, base: str, extra_envs: str = "") -> Matrix:
    """A matrix with the ``small`` environment (fake torch from ``index``), local image names only."""
    (path.parent / "dockerfile").mkdir(exist_ok=True)
    shutil.copyfile(ROOT / "images" / "Dockerfile", path.parent / DOCKERFILE)
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
    dockerfile: {DOCKERFILE}
    targets: {{runtime: "{base}", devel: "{base}"}}
    extras: ["torchrig-fake-extra==1.0"]
    size_budget_mb: {{runtime: 400, devel: 1000}}
{extra_envs}""")
    return load_matrix(path)


def image_bytes_contain(client: object, image: str, needles: Sequence[bytes], *, above: str = "") -> list[str]:
    """Where any needle occurs in the image: `docker save` (every layer), its config and its history.

    ``above``: a base image whose layers are left out (only what the build added is searched): a Debian base lists
    ``/usr/share/python-wheels/setuptools-66.1.1-py3-none-any.whl`` in dpkg's file lists, and that is not a copy.
    """
    found: list[str] = []
    skip: set[str] = set()
    if above:
        skip = {d.removeprefix("sha256:") for d in
                client.api.inspect_image(above)["RootFS"]["Layers"]}  # type: ignore[attr-defined]
    raw = b"".join(client.api.get_image(image, chunk_size=1 << 20))  # type: ignore[attr-defined]
    with tarfile.open(fileobj=io.BytesIO(raw)) as outer:
        for member in outer.getmembers():
            if not member.isfile():
                continue
            data = outer.extractfile(member).read()  # type: ignore[union-attr]
            if skip and hashlib.sha256(data).hexdigest() in skip:
                continue
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
