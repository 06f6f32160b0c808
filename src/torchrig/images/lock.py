"""Per-environment locks (``locks/<env>.txt``): every package pinned with its sha256, resolved for the image.

A lock is resolved *inside* a container from the environment's base image, so it is for the image's Python and
platform, with nothing but pip: ``pip install --dry-run --ignore-installed --report`` lists what would be
installed, and each entry's ``download_info.archive_info`` carries the file's hash. It is resolved twice:
everything together (so the extras' own pins, e.g. ``numpy<2``, shape the shared dependencies), then torch and
torchvision alone under those exact versions: that closure is the ``[torch]`` section, installed in a layer of its
own, and the rest is the ``[extras]`` section. The file is a valid pip requirements file:
``pip install --require-hashes --no-deps -r locks/cpu.txt`` reproduces the environment by hand.

The header records the indexes the lock was resolved against and a digest of the environment's requirements;
a build uses the lock only when both still match (:func:`decide`), and says why when it does not. This module
reads, writes and judges locks; :mod:`torchrig.images.resolve` makes them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from torchrig.errors import BuildError, ConfigurationError
from torchrig.matrix import Environment, canonical_name

__all__ = [
    "LOCK_VERSION",
    "Lock",
    "LockDecision",
    "LockedPackage",
    "Section",
    "decide",
    "format_lock",
    "normalize_index",
    "packages_from_reports",
    "parse_lock",
    "read_lock",
    "requirements_digest",
]

LOCK_VERSION = 1
Section = Literal["torch", "extras"]
SECTIONS: tuple[Section, ...] = ("torch", "extras")
_ENTRY_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")
_HASH_RE = re.compile(r"--hash=(sha256:[0-9a-f]{64})")


def normalize_index(url: str) -> str:
    return url.strip().rstrip("/")


def requirements_digest(requirements: Iterable[str]) -> str:
    """A digest of what matrix.yaml asks for: a lock made for other requirements is stale."""
    return hashlib.sha256("\n".join(r.strip() for r in requirements).encode()).hexdigest()


@dataclass(frozen=True, kw_only=True)
class LockedPackage:
    name: str
    version: str
    hashes: tuple[str, ...]  # "sha256:<hex>"
    section: Section


@dataclass(frozen=True, kw_only=True)
class Lock:
    env_id: str
    index_url: str
    extra_index_urls: tuple[str, ...]
    requirements: tuple[str, ...]
    requirements_sha256: str
    resolved_in: str
    packages: tuple[LockedPackage, ...]
    text: str
    path: Path | None = None

    @property
    def sha256(self) -> str:
        """The digest recorded in the image's ``io.torchrig.lock`` label."""
        return hashlib.sha256(self.text.encode()).hexdigest()

    def section_text(self, section: Section) -> str:
        """The requirement lines (with hashes) of one section: what one Dockerfile layer installs."""
        return "".join(_entry(p) for p in self.packages if p.section == section)


@dataclass(frozen=True, kw_only=True)
class LockDecision:
    lock: Lock | None  # the lock to install from, or None
    message: str  # said in the build output either way


def _entry(p: LockedPackage) -> str:
    hashes = "".join(f" \\\n    --hash={h}" for h in p.hashes)
    return f"{p.name}=={p.version}{hashes}\n"


def format_lock(*, env: Environment, index_url: str, extra_index_urls: Sequence[str], resolved_in: str,
                packages: Sequence[LockedPackage], resolved_at: str) -> str:
    reqs = env.requirements()
    lines = [
        f"# torchrig lock v{LOCK_VERSION}: environment {env.id} (torch {env.torch}, {env.flavour}, "
        f"Python {env.python})",
        f"# Written by `torchrig lock {env.id}`: regenerate it (`nox -s lock-{env.id}`) after changing matrix.yaml.",
        "# By hand: pip install --require-hashes --no-deps -r THIS_FILE",
        f"# env: {env.id}",
        f"# requirements: {' | '.join(reqs)}",
        f"# requirements-sha256: {requirements_digest(reqs)}",
        f"# index-url: {normalize_index(index_url)}",
        f"# extra-index-urls: {' '.join(normalize_index(u) for u in extra_index_urls)}".rstrip(),
        f"# resolved-in: {resolved_in}",
        f"# resolved-at: {resolved_at}",
    ]
    body = []
    for section, title in (("torch", "torch, torchvision and what they need: the image's torch layer"),
                           ("extras", "the rest of the environment, under the torch pins: the next layer")):
        body.append(f"\n# [{section}] {title}\n")
        body += [_entry(p) for p in sorted(packages, key=lambda p: canonical_name(p.name)) if p.section == section]
    return "\n".join(lines) + "\n" + "".join(body)


def parse_lock(text: str, *, source: str = "lock") -> Lock:
    """Parse a lock written by :func:`format_lock`; ConfigurationError (every problem) when it is not one."""
    header: dict[str, str] = {}
    problems: list[str] = []
    packages: list[LockedPackage] = []
    section: Section | None = None
    logical: list[tuple[int, str]] = []
    pending = ""
    start = 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if not pending:
            start = n
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append((start, pending + line))
        pending = ""
    for n, line in logical:
        stripped = line.strip()
        m = re.match(r"^#\s*\[(\w+)\]", stripped)
        if m:
            if m.group(1) not in SECTIONS:
                problems.append(f"line {n}: unknown section [{m.group(1)}] (known: {', '.join(SECTIONS)})")
            else:
                section = m.group(1)  # type: ignore[assignment]
            continue
        if stripped.startswith("#"):
            hm = re.match(r"^#\s*([a-z0-9-]+):\s?(.*)$", stripped)
            if hm and section is None:
                header[hm.group(1)] = hm.group(2).strip()
            continue
        if not stripped:
            continue
        em = _ENTRY_RE.match(stripped)
        hashes = tuple(_HASH_RE.findall(stripped))
        if em is None:
            problems.append(f"line {n}: expected NAME==VERSION --hash=sha256:..., got {stripped[:60]!r}")
        elif not hashes:
            problems.append(f"line {n}: {em.group(1)} has no --hash=sha256:... (a lock pins every file)")
        elif section is None:
            problems.append(f"line {n}: {em.group(1)} is outside a # [torch] or # [extras] section")
        else:
            packages.append(LockedPackage(name=em.group(1), version=em.group(2), hashes=hashes, section=section))
    for key in ("env", "requirements-sha256", "index-url"):
        if key not in header:
            problems.append(f"header: missing '# {key}: ...'")
    if not packages and not problems:
        problems.append("no packages")
    if problems:
        raise ConfigurationError([*problems, "regenerate it with `torchrig lock ENV`"], source=source)
    reqs = tuple(r.strip() for r in header.get("requirements", "").split("|") if r.strip())
    return Lock(
        env_id=header["env"], index_url=normalize_index(header["index-url"]),
        extra_index_urls=tuple(normalize_index(u) for u in header.get("extra-index-urls", "").split()),
        requirements=reqs, requirements_sha256=header["requirements-sha256"],
        resolved_in=header.get("resolved-in", ""), packages=tuple(packages), text=text,
    )


def read_lock(path: Path) -> Lock | None:
    if not path.is_file():
        return None
    lock = parse_lock(path.read_text(encoding="utf-8"), source=str(path))
    return Lock(**{**lock.__dict__, "path": path})


def decide(lock: Lock | None, env: Environment, *, index_url: str, extra_index_urls: Sequence[str],
           path: Path, wanted: bool = True) -> LockDecision:
    """Whether a build installs from ``lock``: only when it was made for these requirements and these indexes."""
    name = str(path)
    if not wanted:
        return LockDecision(lock=None, message=f"lock: not used (--no-lock); installing {env.id}'s requirements "
                                                "as resolved now")
    if lock is None:
        return LockDecision(lock=None, message=f"lock: none ({name} does not exist; `torchrig lock {env.id}` "
                                                "writes one); installing the requirements as resolved now")
    if lock.env_id != env.id:
        return LockDecision(lock=None, message=f"warning: lock: NOT used: {name} is for environment "
                                                f"{lock.env_id!r}, not {env.id!r}")
    if lock.requirements_sha256 != requirements_digest(env.requirements()):
        return LockDecision(lock=None, message=f"warning: lock: NOT used: {name} was written for other requirements "
                                                f"than matrix.yaml's for {env.id}; run `torchrig lock {env.id}`")
    want = (normalize_index(index_url), tuple(normalize_index(u) for u in extra_index_urls))
    have = (lock.index_url, lock.extra_index_urls)
    if want != have:
        return LockDecision(lock=None, message=(
            f"warning: lock: NOT used: {name} was resolved against {_describe(*have)}, this build installs from "
            f"{_describe(*want)}; building unlocked (lock against this index with `torchrig lock {env.id} "
            "--index-url ...`)"))
    return LockDecision(lock=lock, message=f"lock: {name} (sha256 {lock.sha256[:12]}, {len(lock.packages)} "
                                           "packages, --require-hashes)")


def _describe(index: str, extra: Sequence[str]) -> str:
    return index + (f" (+ {', '.join(extra)})" if extra else "")


def packages_from_reports(torch_report: Mapping[str, Any], full_report: Mapping[str, Any]) -> list[LockedPackage]:
    """Lock entries from two ``pip install --report`` documents: torch's closure first, then the rest.

    Raises BuildError when an entry carries no sha256 (a local directory, a VCS URL): such a thing cannot be
    hash-pinned, so it cannot be locked.
    """
    torch_pkgs = _report_packages(torch_report)
    torch_names = {canonical_name(p[0]) for p in torch_pkgs}
    out = [LockedPackage(name=n, version=v, hashes=h, section="torch") for n, v, h in torch_pkgs]
    for n, v, h in _report_packages(full_report):
        if canonical_name(n) not in torch_names:
            out.append(LockedPackage(name=n, version=v, hashes=h, section="extras"))
    return out


def _report_packages(report: Mapping[str, Any]) -> list[tuple[str, str, tuple[str, ...]]]:
    out: list[tuple[str, str, tuple[str, ...]]] = []
    for item in report.get("install", []):
        meta = item.get("metadata", {})
        name, version = meta.get("name"), meta.get("version")
        archive = (item.get("download_info") or {}).get("archive_info") or {}
        hashes = dict(archive.get("hashes") or {})
        if not hashes and isinstance(archive.get("hash"), str) and "=" in archive["hash"]:
            algo, _, value = archive["hash"].partition("=")  # pip < 23: one "sha256=<hex>" string
            hashes[algo] = value
        if not name or not version:
            raise BuildError(f"pip's report has an entry without name/version: {json.dumps(item)[:200]}")
        if "sha256" not in hashes:
            url = (item.get("download_info") or {}).get("url", "?")
            raise BuildError(f"cannot lock {name} {version}: pip reports no sha256 for {url} (only files from an "
                             "index or a wheelhouse can be hash-pinned)")
        out.append((name, version, (f"sha256:{hashes['sha256']}",)))
    return out
