"""A Debian base image made on this machine: debootstrap -> tarball (cached) -> ``docker import``.

For sites that cannot pull from a registry: ``torchrig base-local --suite bookworm`` gives ``torchrig-base:bookworm``
with Python 3, venv and CA certificates, built from the Debian mirror apt already uses. The tarball is cached under
``~/.cache/torchrig/base/`` (about 80 s to make, seconds to import again); the import is skipped when an image with
the same tarball digest (label ``io.torchrig.base.sha256``) already exists.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

from torchrig.errors import BuildError, HostCheckError, UsageError
from torchrig.results.io import Log, file_sha256

if TYPE_CHECKING:
    import docker

__all__ = [
    "BASE_REPOSITORY",
    "DEFAULT_MIRROR",
    "SUITES",
    "LocalBase",
    "Suite",
    "debootstrap_command",
    "ensure_base",
    "host_mirror",
    "suite_for_python",
]

Suite = Literal["bookworm", "bullseye", "trixie"]
SUITES: tuple[str, ...] = get_args(Suite)
BASE_REPOSITORY = "torchrig-base"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates")
# Debian's Python per suite: the base is only useful to environments whose python: matches.
SUITE_PYTHON = {"bullseye": "3.9", "bookworm": "3.11", "trixie": "3.13"}
LABEL_DIGEST = "io.torchrig.base.sha256"
# What no image needs and debootstrap leaves behind: package lists and caches (re-fetched by `apt-get update`),
# documentation, man pages, translations, logs.
_STRIP = (
    "var/lib/apt/lists", "var/cache/apt", "var/cache/debconf/templates.dat-old", "var/log", "usr/share/doc",
    "usr/share/man", "usr/share/info", "usr/share/locale", "usr/share/lintian", "tmp",
)

_PHASES = ("I: Retrieving Release", "I: Resolving dependencies of required", "I: Installing core",
           "I: Unpacking required", "I: Configuring required", "I: Base system", "E:", "W:")


@dataclass(frozen=True, kw_only=True)
class LocalBase:
    ref: str
    image_id: str
    suite: str
    python: str
    tarball: Path
    tarball_bytes: int
    bootstrap_seconds: float | None  # None: the cached tarball was used
    imported: bool  # False: an image from the same tarball already existed


def suite_for_python(python: str) -> str | None:
    """The Debian suite whose python3 is ``python`` (so its local base fits the environment), or None."""
    return next((suite for suite, py in SUITE_PYTHON.items() if py == python), None)


def missing_base_hint(python: str) -> str:
    """What to do when a base image cannot be pulled: a local base if Debian has this Python, else a pull."""
    suite = suite_for_python(python)
    if suite:
        return (f"build a local one with `torchrig base-local --suite {suite}` (Python {python}) and pass "
                f"--base-image {BASE_REPOSITORY}:{suite}")
    return (f"no Debian suite ships Python {python}, so pull a base with it (e.g. python:{python}-slim-bookworm) "
            "from a registry you can reach and pass --base-image")


def host_mirror(paths: Iterable[Path] | None = None) -> str:
    """The Debian mirror this host's apt uses (deb822 ``.sources`` or one-line ``sources.list``), else the default.

    Security and backports archives are skipped: debootstrap needs the main archive.
    """
    if paths is None:
        d = Path("/etc/apt/sources.list.d")
        paths = [Path("/etc/apt/sources.list"), *(sorted(d.glob("*.sources")) if d.is_dir() else []),
                 *(sorted(d.glob("*.list")) if d.is_dir() else [])]
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for uri in _mirrors_in(text, deb822=path.suffix == ".sources"):
            if not re.search(r"security|backports|ports\.ubuntu|ubuntu", uri):
                return uri.rstrip("/")
    return DEFAULT_MIRROR


def _mirrors_in(text: str, *, deb822: bool) -> list[str]:
    uris: list[str] = []
    if deb822:
        for stanza in re.split(r"\n\s*\n", text):
            fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, flags=re.M))
            if "deb" in fields.get("Types", "").split() and fields.get("Enabled", "yes").lower() != "no":
                uris += [u for u in fields.get("URIs", "").split() if u.startswith(("http://", "https://"))]
    else:
        for line in text.splitlines():
            m = re.match(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(https?://\S+)", line)
            if m:
                uris.append(m.group(1))
    return uris


def debootstrap_command(suite: str, root: Path, mirror: str) -> list[str]:
    return ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", suite, str(root), mirror]


def ensure_base(suite: str = "bookworm", *, client: docker.DockerClient, cache_dir: Path, mirror: str | None = None,
                log: Log | None = None, rebuild: bool = False) -> LocalBase:
    """``torchrig-base:<suite>``: import the cached tarball (made first, under ``<cache_dir>/base``, if needed)
    unless already imported. ``mirror``: ``--mirror`` or ``TORCHRIG_DEBIAN_MIRROR``; None: the host's apt mirror."""
    if suite not in SUITES:
        raise UsageError(f"unknown suite {suite!r}: choose one of {', '.join(SUITES)}")
    say = log or (lambda s: print(s, flush=True))
    mirror = mirror or host_mirror()
    tarball = cache_dir / "base" / f"debian-{suite}-{_mirror_slug(mirror)}.tar.gz"
    seconds: float | None = None
    if rebuild or not tarball.is_file():
        seconds = _bootstrap(suite, mirror, tarball, say)
    else:
        say(f"base-local: using the cached tarball {tarball} ({tarball.stat().st_size / 1e6:.0f} MB)")
    digest = file_sha256(tarball)
    ref = f"{BASE_REPOSITORY}:{suite}"
    import docker.errors

    try:
        existing = client.images.get(ref)
    except docker.errors.ImageNotFound:
        existing = None
    if existing is not None and (existing.labels or {}).get(LABEL_DIGEST) == digest and not rebuild:
        say(f"base-local: {ref} is up to date ({existing.short_id}, from the same tarball)")
        return LocalBase(ref=ref, image_id=existing.id, suite=suite, python=SUITE_PYTHON[suite], tarball=tarball,
                         tarball_bytes=tarball.stat().st_size, bootstrap_seconds=seconds, imported=False)
    say(f"base-local: importing {tarball.name} as {ref}")
    changes = [
        f"LABEL {LABEL_DIGEST}={digest} io.torchrig.base.suite={suite} io.torchrig.base.mirror={mirror} "
        f"org.opencontainers.image.title=torchrig-base org.opencontainers.image.version={suite}",
        "ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        'CMD ["/bin/bash"]',
    ]
    try:
        out = client.api.import_image_from_file(str(tarball), repository=BASE_REPOSITORY, tag=suite,
                                                changes=changes)
    except docker.errors.APIError as e:
        raise BuildError(f"docker import of {tarball} failed: {e.explanation or e}") from None
    if "error" in str(out)[:200].lower():
        raise BuildError(f"docker import of {tarball} failed: {out}")
    image = client.images.get(ref)
    say(f"base-local: {ref} = {image.short_id} ({image.attrs.get('Size', 0) / 1e6:.0f} MB)")
    return LocalBase(ref=ref, image_id=image.id, suite=suite, python=SUITE_PYTHON[suite], tarball=tarball,
                     tarball_bytes=tarball.stat().st_size, bootstrap_seconds=seconds, imported=True)


def _bootstrap(suite: str, mirror: str, tarball: Path, say: Log) -> float:
    if shutil.which("debootstrap") is None:
        raise HostCheckError("debootstrap is not installed: `apt-get install debootstrap` (Debian/Ubuntu hosts), "
                             "or pull a python:<version>-slim base and pass --base-image instead")
    if os.geteuid() != 0:
        raise HostCheckError("debootstrap needs root to create device nodes and chroot: run `sudo torchrig "
                             "base-local`, or pull a base image and pass --base-image")
    tarball.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="torchrig-base-", dir=tarball.parent) as tmp:
        root = Path(tmp) / "rootfs"
        cmd = debootstrap_command(suite, root, mirror)
        say(f"base-local: {' '.join(cmd)}  (about 80 s; the result is cached in {tarball.parent})")
        tail: list[str] = []
        shown = 0.0
        # `with`: the pipe is closed however the loop ends (an unclosed pipe is a ResourceWarning, an error in CI)
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                tail = [*tail[-19:], line.rstrip()]
                # debootstrap prints a line per package and step (hundreds): show the phases and, in between, at
                # most one line every 10 s so a slow mirror still visibly makes progress.
                now = time.monotonic()
                if line.startswith(_PHASES) or now - shown >= 10:
                    shown = now
                    say(f"  [{now - start:5.0f}s] {line.rstrip()}")
        if proc.returncode != 0:
            raise BuildError(f"debootstrap {suite} from {mirror} failed (exit {proc.returncode}). Last lines:\n"
                             + "\n".join(tail) + "\nCheck that the mirror is reachable (set TORCHRIG_DEBIAN_MIRROR "
                             "to another) and that the suite exists there.")
        for rel in _STRIP:
            target = root / rel
            if target.is_dir() and not target.is_symlink():
                for child in target.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
        (root / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
        partial = tarball.with_suffix(".partial")
        say(f"  [{time.monotonic() - start:5.0f}s] writing {tarball}")
        with tarfile.open(partial, "w:gz", compresslevel=1) as tar:
            # numeric owners: the rootfs's users are not this host's users.
            tar.add(root, arcname=".", filter=_numeric_owner)
        partial.replace(tarball)  # only a complete tarball is ever cached
    seconds = time.monotonic() - start
    say(f"base-local: bootstrapped {suite} in {seconds:.0f} s, tarball {tarball.stat().st_size / 1e6:.0f} MB")
    return seconds


def _numeric_owner(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uname = info.gname = ""
    return info


def _mirror_slug(mirror: str) -> str:
    return hashlib.sha256(mirror.encode()).hexdigest()[:8]
