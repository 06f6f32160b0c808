"""Per-environment locks (``locks/<env>.txt``): every package pinned with the sha256 of every file, for one index.

A lock is resolved on the host for the image's Python and platform, without a container
(:mod:`torchrig.images.uvlock`). It has two sections: ``[torch]`` (torch, torchvision and what they need, at the
versions the whole environment resolved to), installed in a layer of its own, and ``[extras]`` (the rest). The
file is a valid pip requirements file: ``pip install --require-hashes --no-deps -r locks/cuda121.txt`` reproduces
the environment by hand.

The header says what the lock was resolved from: the indexes, the resolver and its version, the Python, the
platform, and ``inputs-sha256``, a digest of everything in matrix.yaml that decides the resolution (the row's
torch, torchvision, Python, accelerator, the requirements with the extras and IMAGE_EXTRAS, the indexes and the
platform). :func:`decide` lets a build use a lock only when that digest and the indexes still match, and says why
not otherwise; :func:`lock_status` is the same judgement for ``torchrig lock --check``.

A lock belongs to one index. ``locks/<env>.txt`` is for the environment's own sources (matrix.yaml's ``index:``);
a lock for other sources (``torchrig lock ENV --index-url URL``) is written beside it as ``locks/<env>@<index>.txt``
(:func:`lock_path`), and only a build from those sources uses it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from torchrig.errors import BuildError, ConfigurationError
from torchrig.matrix import Environment, canonical_name
from torchrig.results.reading import InputFileError, read_text

__all__ = [
    "LOCK_VERSION",
    "Lock",
    "LockDecision",
    "LockedPackage",
    "Section",
    "decide",
    "format_lock",
    "inputs_digest",
    "lock_oci_platform",
    "lock_path",
    "lock_status",
    "normalize_index",
    "parse_lock",
    "read_lock",
    "refresh_command",
]

LOCK_VERSION = 2
Section = Literal["torch", "extras"]
SECTIONS: tuple[Section, ...] = ("torch", "extras")
_ENTRY_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")
_HASH_RE = re.compile(r"--hash=(\S*)")
_SHA256_RE = re.compile(r"sha256:[0-9a-f]{64}")
_LINE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*==[^\s\\;]+(?:\s+--hash=\S+)+$")  # one package a line
_REQUIRED = ("env", "index-url", "inputs-sha256", "resolver", "python", "platform")


def normalize_index(url: str) -> str:
    return url.strip().rstrip("/")


def inputs_digest(env: Environment, *, index_url: str, extra_index_urls: Sequence[str], platform: str) -> str:
    """A digest of what decides ``env``'s resolution: a lock recorded with another one is stale."""
    inputs = {
        "env": env.id, "torch": env.torch, "torchvision": env.torchvision, "python": env.python,
        "accelerator": env.accelerator, "cuda": env.cuda, "rocm": env.rocm, "requirements": list(env.requirements()),
        "index": normalize_index(index_url), "extra_index": [normalize_index(u) for u in extra_index_urls],
        "platform": platform,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def lock_path(root: Path, env: Environment, *, index_url: str, extra_index_urls: Sequence[str],
              platform: str = "linux/amd64") -> Path:
    """``locks/<env>.txt`` for the environment's own indexes, ``locks/<env>@<index>.txt`` for others; a platform
    other than amd64 adds ``~<arch>`` (``locks/cpu~arm64.txt``): one lock per platform, each for its wheels."""
    own = (normalize_index(env.index), tuple(normalize_index(u) for u in env.extra_index))
    want = (normalize_index(index_url), tuple(normalize_index(u) for u in extra_index_urls))
    arch = "" if platform == "linux/amd64" else "~" + platform.rsplit("/", 1)[-1]
    if want == own:
        return root / "locks" / f"{env.id}{arch}.txt"
    slug = "+".join(_slug(u) for u in (want[0], *want[1]))
    return root / "locks" / f"{env.id}@{slug}{arch}.txt"


def lock_oci_platform(lock_platform: str) -> str:
    """The OCI platform of a lock's ``platform:`` header (uv's ``aarch64-manylinux_2_17`` -> ``linux/arm64``)."""
    return "linux/arm64" if lock_platform.strip().lower().startswith(("aarch64", "arm64")) else "linux/amd64"


def _slug(url: str) -> str:
    parsed = urlparse(url)
    return re.sub(r"[^A-Za-z0-9.]+", "-", f"{parsed.netloc}{parsed.path}").strip("-")


def refresh_command(env_id: str, *, own_index: bool, index_url: str) -> str:
    """The command that rewrites a lock: what a stale-lock message tells the user to run."""
    if own_index:
        return f"`torchrig lock {env_id}` (or `nox -s lock-{env_id}`)"
    return f"`torchrig lock {env_id} --index-url {index_url}`"


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
    inputs_sha256: str
    resolver: str  # "uv 0.13.9"
    python: str
    platform: str  # uv's --python-platform, e.g. x86_64-manylinux_2_28
    packages: tuple[LockedPackage, ...]
    text: str
    path: Path | None = None

    @property
    def sha256(self) -> str:
        """The digest recorded in the image's ``io.torchrig.lock`` label."""
        return hashlib.sha256(self.text.encode()).hexdigest()

    @property
    def name(self) -> str:
        """How messages and the ``io.torchrig.lock.file`` label name it: ``locks/cuda121.txt``."""
        return f"locks/{self.path.name}" if self.path is not None else f"locks/{self.env_id}.txt"

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


def format_lock(*, env: Environment, index_url: str, extra_index_urls: Sequence[str], resolver: str,
                platform: str, packages: Sequence[LockedPackage]) -> str:
    """The lock's text. No timestamp: the same resolution gives the same bytes (and the same image inputs)."""
    reqs = env.requirements()
    digest = inputs_digest(env, index_url=index_url, extra_index_urls=extra_index_urls, platform=platform)
    lines = [
        f"# torchrig lock v{LOCK_VERSION}: environment {env.id} (torch {env.torch}, {env.flavour}, "
        f"Python {env.python})",
        f"# Written by `torchrig lock {env.id}`; `torchrig lock --check` says when matrix.yaml has moved past it.",
        "# By hand: pip install --require-hashes --no-deps -r THIS_FILE",
        f"# env: {env.id}",
        f"# index-url: {normalize_index(index_url)}",
        f"# extra-index-urls: {' '.join(normalize_index(u) for u in extra_index_urls)}".rstrip(),
        f"# resolver: {resolver}",
        f"# python: {env.python}",
        f"# platform: {platform}",
        f"# requirements: {' | '.join(reqs)}",
        f"# inputs-sha256: {digest}",
    ]
    body = []
    for section, title in (("torch", "torch, torchvision and what they need: the image's torch layer"),
                           ("extras", "the rest of the environment, under the torch pins: the next layer")):
        body.append(f"\n# [{section}] {title}\n")
        body += [_entry(p) for p in sorted(packages, key=lambda p: canonical_name(p.name)) if p.section == section]
    return "\n".join(lines) + "\n" + "".join(body)


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Lines with their ``\\`` continuations joined, each with the number of its first physical line."""
    logical: list[tuple[int, str]] = []
    pending, start = "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if not pending:
            start = n
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append((start, pending + line))
        pending = ""
    return logical


def parse_lock(text: str, *, source: str = "lock") -> Lock:
    """Parse a lock written by :func:`format_lock`; ConfigurationError (every problem) when it is not one."""
    header: dict[str, str] = {}
    problems: list[str] = []
    packages: list[LockedPackage] = []
    seen: dict[str, int] = {}
    section: Section | None = None
    for n, line in _logical_lines(text.removeprefix("\ufeff")):
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
        bad = [h for h in hashes if not _SHA256_RE.fullmatch(h)]
        if em is None:
            problems.append(f"line {n}: expected NAME==VERSION --hash=sha256:..., got {stripped[:60]!r}")
        elif not hashes:
            problems.append(f"line {n}: {em.group(1)} has no --hash=sha256:... (a lock pins every file)")
        elif not _LINE_RE.match(stripped):
            problems.append(f"line {n}: {em.group(1)}'s line holds more than NAME==VERSION and its --hash=... "
                            f"options (a line joined to the next by a stray '\\'?): {stripped[:80]!r}")
        elif bad:
            problems.append(f"line {n}: {em.group(1)} has a malformed hash {bad[0][:80]!r} (each is sha256: and 64 "
                            "lowercase hex digits)")
        elif section is None:
            problems.append(f"line {n}: {em.group(1)} is outside a # [torch] or # [extras] section")
        elif (first := seen.get(canonical_name(em.group(1)))) is not None:
            problems.append(f"line {n}: {em.group(1)} is locked twice (first on line {first})")
        else:
            seen[canonical_name(em.group(1))] = n
            packages.append(LockedPackage(name=em.group(1), version=em.group(2), hashes=hashes, section=section))
    problems += [f"header: missing '# {key}: ...'" for key in _REQUIRED if key not in header]
    if not packages and not problems:
        problems.append("no packages")
    if problems:
        env = header.get("env", "ENV")
        raise ConfigurationError([*problems, f"regenerate it with `torchrig lock {env}`"], source=source)
    reqs = tuple(r.strip() for r in header.get("requirements", "").split("|") if r.strip())
    return Lock(
        env_id=header["env"], index_url=normalize_index(header["index-url"]),
        extra_index_urls=tuple(normalize_index(u) for u in header.get("extra-index-urls", "").split()),
        requirements=reqs, inputs_sha256=header["inputs-sha256"], resolver=header["resolver"],
        python=header["python"], platform=header["platform"], packages=tuple(packages), text=text,
    )


def read_lock(path: Path) -> Lock | None:
    if not path.exists() and not path.is_symlink():  # a FIFO, a directory or a broken link is named, not skipped
        return None
    try:
        text = read_text(path, kind="lock")
    except InputFileError as e:
        raise ConfigurationError([e.reason], source=str(path)) from None
    return replace(parse_lock(text, source=str(path)), path=path)


def lock_status(lock: Lock, env: Environment) -> str | None:
    """Why ``lock`` no longer describes ``env`` (None: it does): another environment, or inputs that moved."""
    own = (normalize_index(env.index), tuple(normalize_index(u) for u in env.extra_index)) == (
        lock.index_url, lock.extra_index_urls)
    fix = refresh_command(env.id, own_index=own, index_url=lock.index_url)
    misnamed = _name_problem(lock, env)
    if misnamed is not None:
        return misnamed
    if lock.env_id != env.id:
        return f"{lock.name} is for environment {lock.env_id!r}, not {env.id!r}"
    now = inputs_digest(env, index_url=lock.index_url, extra_index_urls=lock.extra_index_urls,
                        platform=lock.platform)
    if lock.inputs_sha256 != now:
        was = " | ".join(lock.requirements)
        moved = ("its requirements changed (the lock has: " + was + ")" if lock.requirements != env.requirements()
                 else "its matrix.yaml row changed (torch, Python, accelerator or indexes)")
        return f"{lock.name} is stale: {moved}; refresh it with {fix}"
    if lock.requirements != env.requirements():
        return (f"{lock.name} is stale: its header's requirements ({' | '.join(lock.requirements)}) are not the row's "
                f"({' | '.join(env.requirements())}); refresh it with {fix}")
    pins = _pin_problems(lock, env)
    if pins:
        return f"{lock.name} is stale: its body disagrees with matrix.yaml's row ({'; '.join(pins)}); refresh it " \
               f"with {fix}"
    return None


def _name_problem(lock: Lock, env: Environment) -> str | None:
    """A lock in ``locks/`` must sit under its own name: ``<env>.txt`` for the environment's own indexes,
    ``<env>@<slug of its indexes>.txt`` for others (:func:`lock_path`). Elsewhere (``--lock FILE``) any name goes."""
    if lock.path is None or lock.path.parent.name != "locks":
        return None
    stem_env, at, slug = lock.path.stem.split("~", 1)[0].partition("@")
    if stem_env != lock.env_id:
        return (f"{lock.name} is stale: its header says environment {lock.env_id!r}, but the file is named for "
                f"{stem_env!r} (a lock saved under another environment's name); regenerate it with "
                f"`torchrig lock {stem_env}`, or move it to locks/{lock.env_id}.txt")
    want = lock_path(lock.path.parent.parent, env, index_url=lock.index_url, extra_index_urls=lock.extra_index_urls,
                     platform=lock_oci_platform(lock.platform))
    if want.name != lock.path.name:
        where = f"index {slug!r}" if at else f"{env.id}'s own index ({normalize_index(env.index)})"
        return (f"{lock.name} is stale: the file name says it is for {where}, but its header says it was resolved "
                f"against {_describe(lock.index_url, lock.extra_index_urls)} (that lock is locks/{want.name}); "
                f"regenerate it with {refresh_command(env.id, own_index=not at, index_url=normalize_index(env.index))}")
    return None


_PIN_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*==\s*([A-Za-z0-9.+!_-]+)\s*$")


def _pin_problems(lock: Lock, env: Environment) -> list[str]:
    """Each ``NAME==VERSION`` the row asks for (torch, torchvision, pinned extras) that the body does not lock at
    that version (a local label such as ``+cpu`` is allowed where the pin has none, as pip allows it)."""
    locked = {canonical_name(p.name): p.version for p in lock.packages}
    problems = []
    for requirement in env.requirements():
        m = _PIN_RE.match(requirement)
        if m is None:
            continue  # a range (numpy<2) is the resolver's to meet; the inputs digest covers the row
        name, version = canonical_name(m.group(1)), m.group(2)
        have = locked.get(name)
        if have is None:
            problems.append(f"{requirement} is not locked")
        elif have != version and ("+" in version or have.split("+", 1)[0] != version):
            problems.append(f"it locks {name}=={have}, the row pins {requirement}")
    return problems


def decide(lock: Lock | None, env: Environment, *, index_url: str, extra_index_urls: Sequence[str],
           path: Path, wanted: bool = True, required: bool = False) -> LockDecision:
    """Whether a build installs from ``lock``: only when it is fresh and was resolved against these indexes.

    With ``required`` (``--require-lock``, ``TORCHRIG_REQUIRE_LOCK=1``) every "no" is a BuildError instead of an
    unlocked build.
    """
    decision = _decide(lock, env, index_url=index_url, extra_index_urls=extra_index_urls, path=path, wanted=wanted)
    if required and decision.lock is None:
        raise BuildError(f"{env.id}: a lock is required (--require-lock / TORCHRIG_REQUIRE_LOCK=1) and none can "
                         f"be used: {decision.message.removeprefix('warning: ')}")
    return decision


def _decide(lock: Lock | None, env: Environment, *, index_url: str, extra_index_urls: Sequence[str],
            path: Path, wanted: bool) -> LockDecision:
    name = f"locks/{path.name}" if path.parent.name == "locks" else str(path)
    own = (normalize_index(index_url), tuple(normalize_index(u) for u in extra_index_urls)) == (
        normalize_index(env.index), tuple(normalize_index(u) for u in env.extra_index))
    fix = refresh_command(env.id, own_index=own, index_url=normalize_index(index_url))
    if not wanted:
        return LockDecision(lock=None, message=f"lock: not used (--no-lock); installing {env.id}'s requirements "
                                                "as resolved now")
    if lock is None:
        return LockDecision(lock=None, message=f"lock: none ({name} does not exist; {fix} writes one); installing "
                                                "the requirements as resolved now")
    want = (normalize_index(index_url), tuple(normalize_index(u) for u in extra_index_urls))
    have = (lock.index_url, lock.extra_index_urls)
    if want != have:
        return LockDecision(lock=None, message=(
            f"warning: lock: NOT used: {name} was resolved against {_describe(*have)}, this build installs from "
            f"{_describe(*want)}; building unlocked (lock this build's index with {fix})"))
    stale = lock_status(lock, env)
    if stale is not None:
        return LockDecision(lock=None, message=f"warning: lock: NOT used: {stale}")
    return LockDecision(lock=lock, message=f"lock: {name} (sha256 {lock.sha256[:12]}, {len(lock.packages)} "
                                           f"packages, resolved by {lock.resolver} for {lock.platform}, "
                                           "hash-checked)")


def _describe(index: str, extra: Sequence[str]) -> str:
    return index + (f" (+ {', '.join(extra)})" if extra else "")
