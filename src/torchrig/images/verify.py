"""``torchrig verify``: is an image what its lock, its SBOM and its environment say?

What is installed (:mod:`torchrig.images.installed`: read inside the image) is compared with

* the lock its ``io.torchrig.lock`` label names -- the checkout's ``locks/*.txt`` with that sha256, else the lock's
  sections the build copied into the image -- package by package (the venv's own pip/setuptools/wheel count only
  where the lock pins them);
* its SBOM (``io.torchrig.sbom.sha256``): regenerated from the image now, it must have the label's digest (the
  document is a function of the image alone); where the document itself is at hand (``--sbom FILE``, or the copy
  the build kept in the cache), its packages and layers are compared one by one, so the drift has names;
* the environment (matrix.yaml's for ``verify ENV``, else the image's ``io.torchrig.*`` labels): the Python
  minor, torch and torchvision versions and their build (``+cpu``/``+cu117``/``+rocm5.4.2``,
  ``torch.version.cuda``/``hip``).

The comparisons are pure functions of those facts (unit-tested with fake package lists); :func:`verify_image`
gathers the facts from the engine. Drift reads ``extra: requests 2.32.3``, ``changed: numpy 1.26.4 -> 2.0.0``,
``missing: ...``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from torchrig.errors import UsageError
from torchrig.images.installed import (
    Installed,
    TorchBuild,
    inspect_installed,
    local_label,
    locked_entries,
    public_version,
)
from torchrig.images.sbom import SBOM_LABEL, sbom_for, sbom_layers, sbom_packages, stored_sbom
from torchrig.matrix import Environment
from torchrig.results.reading import InputFileError, loads_json, read_bytes

if TYPE_CHECKING:
    import docker

__all__ = [
    "BOOTSTRAP",
    "Check",
    "Drift",
    "Expected",
    "Verdict",
    "check_lock",
    "check_sbom",
    "check_versions",
    "diff_packages",
    "verify_image",
]

Status = Literal["ok", "drift", "skipped"]
# What `python -m venv` puts in every venv: not in a lock unless an environment asks for it.
BOOTSTRAP = frozenset({"pip", "setuptools", "wheel"})
Packages = Mapping[str, tuple[str, str]]  # canonical name -> (name, version)


@dataclass(frozen=True)
class Drift:
    kind: Literal["extra", "missing", "changed"]
    name: str
    have: str | None  # installed version
    want: str | None  # the lock's / SBOM's version

    def __str__(self) -> str:
        match self.kind:
            case "extra":
                return f"extra: {self.name} {self.have}"
            case "missing":
                return f"missing: {self.name} {self.want}"
            case "changed":
                return f"changed: {self.name} {self.want} -> {self.have}"


def diff_packages(want: Packages, have: Packages, *, ignore_extra: frozenset[str] = frozenset()) -> list[Drift]:
    """What ``have`` (installed) adds to, lacks from or changes in ``want``, by canonical name, sorted."""
    out = []
    for key in sorted(want.keys() | have.keys()):
        if key not in have:
            out.append(Drift("missing", want[key][0], None, want[key][1]))
        elif key not in want:
            if key not in ignore_extra:
                out.append(Drift("extra", have[key][0], have[key][1], None))
        elif have[key][1] != want[key][1]:
            out.append(Drift("changed", have[key][0], have[key][1], want[key][1]))
    return out


@dataclass(frozen=True, kw_only=True)
class Check:
    name: str
    status: Status
    summary: str
    details: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Expected:
    """What the environment says the image holds."""

    source: str  # "matrix.yaml (cpu)", "the image's labels"
    torch: str
    torchvision: str
    python: str
    accelerator: str
    cuda: str | None
    rocm: str | None

    @classmethod
    def from_env(cls, env: Environment) -> Expected:
        return cls(source=f"matrix.yaml ({env.id})", torch=env.torch, torchvision=env.torchvision,
                   python=env.python, accelerator=env.accelerator, cuda=env.cuda, rocm=env.rocm)

    @classmethod
    def from_labels(cls, labels: Mapping[str, str]) -> Expected | None:
        keys = ("torch", "torchvision", "python", "accelerator")
        if not all(labels.get(f"io.torchrig.{k}") for k in keys):
            return None

        def opt(k: str) -> str | None:
            v = labels.get(f"io.torchrig.{k}")
            return None if v in (None, "", "none") else v

        return cls(source="the image's labels", torch=labels["io.torchrig.torch"],
                   torchvision=labels["io.torchrig.torchvision"], python=labels["io.torchrig.python"],
                   accelerator=labels["io.torchrig.accelerator"], cuda=opt("cuda"), rocm=opt("rocm"))

    @property
    def flavour(self) -> str:
        if self.accelerator == "cuda" and self.cuda:
            return "cu" + self.cuda.replace(".", "")
        if self.accelerator == "rocm" and self.rocm:
            return f"rocm{self.rocm}"
        return "cpu"


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def _build_problems(build: TorchBuild, want: Expected) -> tuple[list[str], str]:
    """torch.version.cuda/hip against the accelerator: (problems, a note for the summary)."""
    if want.accelerator == "cuda":
        if build.cuda is None:
            return [f"torch has no CUDA (torch.version.cuda is None), {want.source} wants CUDA {want.cuda}"], ""
        if want.cuda and _minor(build.cuda) != _minor(want.cuda):
            return [f"torch is built for CUDA {build.cuda}, {want.source} wants CUDA {want.cuda}"], ""
        return [], f"CUDA {build.cuda}"
    if want.accelerator == "rocm":
        if build.hip is None:
            return [f"torch has no ROCm (torch.version.hip is None), {want.source} wants ROCm {want.rocm}"], ""
        if want.rocm and _minor(build.hip) != _minor(want.rocm):
            return [f"torch is built for ROCm {build.hip}, {want.source} wants ROCm {want.rocm}"], ""
        return [], f"ROCm {build.hip}"
    if build.cuda or build.hip:
        gpu = f"CUDA {build.cuda}" if build.cuda else f"ROCm {build.hip}"
        return [], f"the index's default build, {gpu}: runs on the CPU"
    return [], ""


def _check_package(name: str, installed: Installed, want_version: str, want: Expected) -> Check:
    version = installed.version_of(name)
    if version is None:
        return Check(name=name, status="drift", summary=f"not installed ({want.source}: {want_version})",
                     details=(f"missing: {name} {want_version}",))
    problems = []
    if public_version(version) != want_version:
        problems.append(f"changed: {name} {want_version} -> {version}")
    local = local_label(version)
    if local is not None and local != want.flavour:
        problems.append(f"{name} {version} is the +{local} build, {want.source} is {want.flavour}")
    note = ""
    if name == "torch" and installed.torch is not None:
        more, note = _build_problems(installed.torch, want)
        problems += more
    if problems:
        return Check(name=name, status="drift", summary=f"{version}, {want.source}: {want_version} "
                     f"({want.flavour})", details=tuple(problems))
    return Check(name=name, status="ok", summary=version + (f" ({note})" if note else ""))


def check_versions(installed: Installed, want: Expected | None) -> list[Check]:
    """The Python minor and torch/torchvision (version and build) against the environment."""
    if want is None:
        return [Check(name="environment", status="skipped", summary="no environment given and the image has no "
                      "io.torchrig.* labels: Python and torch not checked (pass ENV)")]
    py = Check(name="python", status="ok", summary=f"{installed.python} ({want.source}: {want.python})")
    if _minor(installed.python) != want.python:
        py = Check(name="python", status="drift", summary=py.summary,
                   details=(f"changed: python {want.python} -> {installed.python}",))
    return [py, _check_package("torch", installed, want.torch, want),
            _check_package("torchvision", installed, want.torchvision, want)]


def check_labels(labels: Mapping[str, str], env: Environment) -> Check:
    """The image's io.torchrig.* labels against the environment it is verified as."""
    want = {"env": env.id, "torch": env.torch, "torchvision": env.torchvision, "python": env.python,
            "accelerator": env.accelerator, "cuda": env.cuda or "none", "rocm": env.rocm or "none"}
    off = [f"label io.torchrig.{k} is {labels.get(f'io.torchrig.{k}', '(none)')}, matrix.yaml says {v}"
           for k, v in want.items() if labels.get(f"io.torchrig.{k}") != v]
    if off:
        return Check(name="labels", status="drift", summary="the image was not built for this environment",
                     details=tuple(off))
    return Check(name="labels", status="ok", summary=f"built for {env.id} (torch {env.torch}, {env.flavour})")


def check_lock(installed: Installed, lock: Packages | None, *, label: str | None, source: str) -> Check:
    """Installed packages against the lock (``lock`` None: the image was not built from one, or it is gone)."""
    if label in (None, "", "none"):
        return Check(name="lock", status="skipped", summary="built without a lock (io.torchrig.lock=none)")
    if lock is None:
        return Check(name="lock", status="skipped", summary=f"the lock (sha256 {label[:12]}) is not here and the "
                     "image holds none of its sections: pass --lock FILE")
    have = {p.key: (p.name, p.version) for p in installed.packages}
    drift = diff_packages(lock, have, ignore_extra=BOOTSTRAP - lock.keys())
    if drift:
        return Check(name="lock", status="drift", summary=f"{len(drift)} difference(s) from {source}",
                     details=tuple(map(str, drift)))
    return Check(name="lock", status="ok", summary=f"{len(lock)} packages as pinned by {source}")


def check_sbom(installed: Installed, layers: Sequence[str], *, label: str | None, regenerated: str,
               doc: Mapping[str, Any] | None, sha256: str | None, source: str) -> Check:
    """The SBOM its label names against the one ``regenerated`` (its sha256) from the image now, and where the
    document is at hand (``doc``, its ``sha256``), against the installed packages and the image's layers."""
    if not label:
        return Check(name="SBOM", status="skipped", summary=f"the image has no {SBOM_LABEL} label (built before "
                     "torchrig wrote SBOMs, or not by `torchrig build`)")
    if doc is not None and sha256 != label:
        return Check(name="SBOM", status="drift", summary=f"{source} is sha256 {(sha256 or '')[:12]}, the label names "
                     f"{label[:12]}: it is not this image's SBOM")
    if doc is None:
        if regenerated == label:
            return Check(name="SBOM", status="ok", summary=f"regenerated from the image: sha256 {label[:12]}, as "
                         "its label says")
        return Check(name="SBOM", status="drift", summary=f"regenerated from the image, it is sha256 "
                     f"{regenerated[:12]}, not the label's {label[:12]}: the image changed since its build (or "
                     "torchrig's SBOM format did); pass --sbom FILE to see what differs")
    have = {p.key: (p.name, p.version) for p in installed.packages}
    drift = [str(d) for d in diff_packages(sbom_packages(doc), have)]
    described = sbom_layers(doc)
    if tuple(layers[:len(described)]) != described:
        drift.append("layers: the image's layers are not those the SBOM lists")
    elif len(layers) > len(described):
        drift.append(f"layers: {len(layers) - len(described)} layer(s) on top of those the SBOM lists (a derived "
                     "or modified image)")
    if drift:
        return Check(name="SBOM", status="drift", summary=f"{len(drift)} difference(s) from {source}",
                     details=tuple(drift))
    form = "" if regenerated == label else " (its form differs from what this torchrig writes: same content)"
    return Check(name="SBOM", status="ok", summary=f"{len(have)} packages and {len(described)} layers as {source} "
                 f"lists them (sha256 {label[:12]}){form}")


@dataclass(frozen=True, kw_only=True)
class Verdict:
    image: str
    image_id: str
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.status != "drift" for c in self.checks)

    def render(self) -> str:
        mark = {"ok": "✓", "drift": "✗", "skipped": "-"}
        lines = [f"{self.image} ({self.image_id[:19]})"]
        for c in self.checks:
            lines.append(f"  {mark[c.status]} {c.name:<11} {c.summary}")
            lines += [f"      {d}" for d in c.details]
        n = sum(c.status == "drift" for c in self.checks)
        lines.append("no drift: the image is what it says" if self.ok else
                     f"drift: {n} check(s) failed ({', '.join(c.name for c in self.checks if c.status == 'drift')})")
        return "\n".join(lines)


def _entries(text: str) -> dict[str, tuple[str, str]]:
    # a lock is a requirements file of hash-pinned entries: that is all the comparison needs of it
    return {k: (v[0], v[1]) for k, v in locked_entries((text,)).items()}


def _find_lock(sha: str, candidates: Sequence[Path]) -> tuple[Packages, str] | None:
    for path in candidates:
        try:
            data = read_bytes(path, kind="lock")
        except InputFileError:
            continue  # not a lock this image can have been built from
        if hashlib.sha256(data).hexdigest() == sha:
            return _entries(data.decode("utf-8", errors="replace")), str(path)
    return None


def _lock(labels: Mapping[str, str], installed: Installed, *, root: Path, env_id: str | None,
          lock_file: Path | None) -> tuple[Packages | None, str, Check | None]:
    """The lock to compare with, where it came from, and a drift check when --lock is not the image's lock."""
    sha = labels.get("io.torchrig.lock", "none")
    if sha == "none":
        return None, "", None
    if lock_file is not None:
        if not lock_file.exists() and not lock_file.is_symlink():
            raise UsageError(f"--lock {lock_file}: no such file")  # anything else there is named by read_bytes
        found = _find_lock(sha, [lock_file])
        if found is None:
            try:
                data = read_bytes(lock_file, kind="lock")
            except InputFileError as e:
                raise UsageError(f"--lock {e}") from None
            note = Check(name="lock file", status="drift", summary=f"{lock_file} is not the lock the image was "
                         f"built from (label sha256 {sha[:12]}, file {hashlib.sha256(data).hexdigest()[:12]})")
            return _entries(data.decode("utf-8", errors="replace")), str(lock_file), note
        return *found, None
    locks = root / "locks"
    first = [locks / f"{env_id}.txt"] if env_id else []
    found = _find_lock(sha, [*first, *sorted(locks.rglob("*.txt"))] if locks.is_dir() else first)
    if found is not None:
        return *found, None
    sections = {k: (v[0], v[1]) for k, v in locked_entries(installed.requirement_texts).items()}
    if sections:
        return sections, (f"the lock's sections in /etc/torchrig (the checkout has no lock with sha256 "
                          f"{sha[:12]})"), None
    return None, "", None


def _sbom(image_id: str, label: str | None, *, sbom_file: Path | None,
          cache_dir: Path | None) -> tuple[dict[str, Any] | None, str | None, str]:
    """The SBOM document, its sha256 and where it came from: --sbom FILE, else the copy the build kept."""
    path = sbom_file
    if path is None and cache_dir is not None and label:
        path = stored_sbom(cache_dir, image_id, label)
    if path is None:
        return None, None, ""
    try:
        data = read_bytes(path, kind="sbom")
    except InputFileError as e:
        raise UsageError(f"--sbom {e}") from None
    try:
        doc = loads_json(data.decode("utf-8", errors="replace"), source=path, expect=None)
    except InputFileError as e:
        raise UsageError(f"{e}: not a CycloneDX SBOM") from None
    if not isinstance(doc, dict):
        raise UsageError(f"{path} is not a CycloneDX SBOM (not a JSON object)")
    return doc, hashlib.sha256(data).hexdigest(), str(path)


def verify_image(client: docker.DockerClient, image: str, *, env: Environment | None, root: Path,
                 lock_file: Path | None = None, sbom_file: Path | None = None, cache_dir: Path | None = None,
                 keep: bool = False) -> Verdict:
    """Every check for ``image`` (a name or id); UsageError when the engine does not have it."""
    import docker.errors

    try:
        img = client.images.get(image)
    except docker.errors.ImageNotFound:
        hint = f"`torchrig build {env.id}` or `torchrig pull {env.id}`" if env else "pull or build it first"
        raise UsageError(f"no image {image} on this Docker engine: {hint}") from None
    except docker.errors.APIError as e:
        raise UsageError(f"{image!r} is not an image reference the engine accepts: {e.explanation or e}") from None
    labels = dict(img.labels or {})
    image_id = str(img.id)
    env_id = env.id if env else labels.get("io.torchrig.env")
    installed = inspect_installed(client, image_id, env_id=env_id or "verify", keep=keep)
    checks: list[Check] = []
    if env is not None:
        checks.append(check_labels(labels, env))
    checks += check_versions(installed, Expected.from_env(env) if env else Expected.from_labels(labels))
    lock, lock_source, lock_note = _lock(labels, installed, root=root, env_id=env_id, lock_file=lock_file)
    if lock_note is not None:
        checks.append(lock_note)
    checks.append(check_lock(installed, lock, label=labels.get("io.torchrig.lock"), source=lock_source))
    layers = tuple(img.attrs.get("RootFS", {}).get("Layers") or ())
    doc, sha, source = _sbom(image_id, labels.get(SBOM_LABEL), sbom_file=sbom_file, cache_dir=cache_dir)
    checks.append(check_sbom(installed, layers, label=labels.get(SBOM_LABEL), regenerated=sbom_for(
        installed, labels, layers)[1], doc=doc, sha256=sha, source=source))
    return Verdict(image=image, image_id=image_id, checks=tuple(checks))
