"""What is installed in an image, read inside it: the Python, every distribution, torch's build, and torchrig's files.

One throwaway container (network off) goes through the one container lifecycle (:func:`torchrig.engine.run`) and
runs a standard-library script with the image's ``python``: ``importlib.metadata`` lists the distributions (the
names and versions pip sees), torch's ``version.py`` is *read* rather than imported (its ``cuda``/``hip`` say the
build; importing torch would take seconds and can fail without a GPU), and the files torchrig put in
``/etc/torchrig`` come back as text: the requirement files the build installed from (with a lock: its sections,
every line hash-pinned). Both the SBOM (:mod:`torchrig.images.sbom`) and ``torchrig
verify`` (:mod:`torchrig.images.verify`) start from this :class:`Installed`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torchrig.engine.lifecycle import run_python
from torchrig.errors import RunError
from torchrig.matrix import canonical_name

if TYPE_CHECKING:
    import docker

__all__ = [
    "INSPECT_TIMEOUT_S",
    "REQUIREMENT_FILES",
    "Installed",
    "Package",
    "TorchBuild",
    "inspect_installed",
    "local_label",
    "locked_entries",
    "parse_inspection",
    "public_version",
]

INSPECT_TIMEOUT_S = 120.0
# The requirement files the Dockerfile installs from (images/plan.py writes them); with a lock, its two sections.
REQUIREMENT_FILES = ("/etc/torchrig/requirements-torch.txt", "/etc/torchrig/requirements-extras.txt")

# Runs inside the image (network off, standard library only; Python >= 3.8).
_SCRIPT = """import ast, importlib.metadata as md, importlib.util, json, os, platform, re, sys
pkgs = {}
for d in md.distributions():
    name = d.metadata["Name"]
    if name:
        pkgs.setdefault(re.sub(r"[-_.]+", "-", name).lower(), {"name": name, "version": d.version})
torch = None
spec = importlib.util.find_spec("torch")
if spec is not None and spec.submodule_search_locations:
    torch = {"cuda": None, "hip": None}
    path = os.path.join(list(spec.submodule_search_locations)[0], "version.py")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            for node in ast.parse(f.read()).body:
                # `cuda = '11.7'` (torch 2.0), `cuda: Optional[str] = '13.0'` (later releases)
                target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else (
                    node.target if isinstance(node, ast.AnnAssign) else None)
                if isinstance(target, ast.Name) and target.id in ("cuda", "hip") and \
                        isinstance(node.value, ast.Constant):
                    torch[target.id] = node.value.value
files = {}
for p in %(files)r:
    if os.path.isfile(p):
        with open(p, encoding="utf-8") as f:
            files[p] = f.read()
print(json.dumps({"python": platform.python_version(), "implementation": sys.implementation.name,
                  "executable": sys.executable, "packages": sorted(pkgs.values(), key=lambda p: p["name"].lower()),
                  "torch": torch, "files": files}))
"""


@dataclass(frozen=True, kw_only=True)
class Package:
    name: str  # as its metadata spells it
    version: str

    @property
    def key(self) -> str:
        return canonical_name(self.name)


@dataclass(frozen=True, kw_only=True)
class TorchBuild:
    """torch's build as its ``version.py`` records it: ``cuda`` ("11.7") or ``hip`` ("5.4.22803"), else None."""

    cuda: str | None = None
    hip: str | None = None


@dataclass(frozen=True, kw_only=True)
class Installed:
    python: str  # "3.11.2"
    implementation: str
    executable: str
    packages: tuple[Package, ...]
    torch: TorchBuild | None  # None: no torch package in the image
    files: Mapping[str, str] = field(default_factory=dict)  # path in the image -> text (those that exist)

    def versions(self) -> dict[str, Package]:
        """Canonical name -> package."""
        return {p.key: p for p in self.packages}

    def version_of(self, name: str) -> str | None:
        p = self.versions().get(canonical_name(name))
        return p.version if p else None

    @property
    def requirement_texts(self) -> tuple[str, ...]:
        return tuple(self.files[p] for p in REQUIREMENT_FILES if p in self.files)


def public_version(version: str) -> str:
    """``2.0.1+cu117`` -> ``2.0.1``."""
    return version.split("+", 1)[0]


def local_label(version: str) -> str | None:
    """``2.0.1+cu117`` -> ``cu117``; None without a local label (PyPI's default builds)."""
    return version.split("+", 1)[1] if "+" in version else None


_ENTRY_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")
_HASH_RE = re.compile(r"--hash=sha256:([0-9a-f]{64})")


def locked_entries(texts: tuple[str, ...]) -> dict[str, tuple[str, str, tuple[str, ...]]]:
    """Canonical name -> (name, version, sha256 hex digests) for every hash-pinned ``NAME==VERSION --hash=...``
    line of requirement files (a lock's sections); unpinned lines (an unlocked build's) are left out."""
    out: dict[str, tuple[str, str, tuple[str, ...]]] = {}
    for text in texts:
        for line in text.replace("\\\n", " ").splitlines():
            m = _ENTRY_RE.match(line.strip())
            hashes = tuple(_HASH_RE.findall(line))
            if m and hashes:
                out[canonical_name(m.group(1))] = (m.group(1), m.group(2), hashes)
    return out


def parse_inspection(text: str) -> Installed:
    """The script's JSON answer (its last line of stdout) as an :class:`Installed`; ValueError when it is not one."""
    lines = text.strip().splitlines()
    if not lines:
        raise ValueError("no output")
    data: Any = json.loads(lines[-1])
    if not isinstance(data, dict) or not isinstance(data.get("packages"), list):
        raise ValueError(f"not an inspection: {lines[-1][:200]!r}")
    torch = data.get("torch")
    return Installed(
        python=str(data["python"]), implementation=str(data.get("implementation", "")),
        executable=str(data.get("executable", "")),
        packages=tuple(Package(name=str(p["name"]), version=str(p["version"])) for p in data["packages"]),
        torch=TorchBuild(cuda=torch.get("cuda"), hip=torch.get("hip")) if isinstance(torch, dict) else None,
        files={str(k): str(v) for k, v in (data.get("files") or {}).items()},
    )


def inspect_installed(client: docker.DockerClient, image: str, *, env_id: str, keep: bool = False,
                      timeout: float = INSPECT_TIMEOUT_S) -> Installed:
    """Read what ``image`` has installed, in a ``torchrig-<env>-inspect-*`` container (removed unless ``keep``).

    Raises RunError when the image has no ``python`` or the script fails or prints something else.
    """
    out = run_python(client, image, _SCRIPT % {"files": REQUIREMENT_FILES}, env_id=env_id, purpose="inspect",
                     keep=keep, timeout=timeout)
    try:
        return parse_inspection(out)
    except (ValueError, KeyError, TypeError) as e:
        raise RunError(f"reading the installed packages of {image} gave no answer ({e}): {out[-300:]!r}") from None
