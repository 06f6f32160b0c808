"""A Debian base image made on this machine: debootstrap -> tarball (cached) -> ``docker import``.

For sites that cannot pull from a registry: ``torchrig base-local --suite bookworm`` gives ``torchrig-base:bookworm``
with Python 3, venv and CA certificates, built from the Debian mirror apt already uses. The tarball is cached under
``~/.cache/torchrig/base/`` (about 80 s to make, seconds to import again); the import is skipped when an image with
the same tarball digest (label ``io.torchrig.base.sha256``) already exists.

``--arch arm64`` bootstraps an arm64 Debian on an amd64 host under qemu (``qemu-user-static`` + ``binfmt-support``;
2 min 45 s on quiet cores, 17-18 min on 2 busy ones) and loads it as ``torchrig-base:bookworm-arm64``: ``docker
import`` records the engine's own architecture (Docker 20.10 ignores ``--platform`` for an import), so a foreign
rootfs goes in as an image archive whose config names its architecture (:mod:`torchrig.images.base_archive`).
"""

from __future__ import annotations

import hashlib
import os
import platform as host_platform
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from torchrig.errors import BuildError, HostCheckError, UsageError
from torchrig.images.base_archive import load_rootfs
from torchrig.results.io import Log, file_sha256

if TYPE_CHECKING:
    import docker

__all__ = [
    "ARCHES",
    "ARCH_PLATFORM",
    "BASE_REPOSITORY",
    "DEBIAN_RELEASES",
    "DEFAULT_MIRROR",
    "DebianArch",
    "DebianRelease",
    "LocalBase",
    "base_ref",
    "debootstrap_command",
    "ensure_base",
    "host_mirror",
    "require_emulation",
    "suite_for_python",
]

DebianRelease = Literal["bookworm", "bullseye", "trixie"]
DEBIAN_RELEASES: tuple[str, ...] = get_args(DebianRelease)
# Debian's architecture names (debootstrap --arch), with the OCI platform the engine records and `uname -m`
DebianArch = Literal["amd64", "arm64"]
ARCHES: tuple[str, ...] = get_args(DebianArch)
ARCH_PLATFORM: dict[str, str] = {"amd64": "linux/amd64", "arm64": "linux/arm64"}
ARCH_MACHINE: dict[str, str] = {"amd64": "x86_64", "arm64": "aarch64"}
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
EMULATION_FIX = ("apt-get install qemu-user-static binfmt-support && update-binfmts --enable qemu-{machine}")
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
    arch: str
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


def debootstrap_command(suite: str, root: Path, mirror: str, *, arch: str = "amd64") -> list[str]:
    # --arch always: debootstrap would otherwise take the host's, and an amd64 rootfs named arm64 is worse than none
    return ["debootstrap", f"--arch={arch}", "--variant=minbase", f"--include={','.join(PACKAGES)}", suite,
            str(root), mirror]


def base_ref(suite: str, arch: str = "amd64") -> str:
    """``torchrig-base:bookworm`` (amd64, the name it always had) or ``torchrig-base:bookworm-arm64``."""
    return f"{BASE_REPOSITORY}:{suite}" if arch == "amd64" else f"{BASE_REPOSITORY}:{suite}-{arch}"


def require_emulation(arch: str, *, machine: str | None = None, binfmt_dir: Path = BINFMT_DIR) -> None:
    """Raise HostCheckError (exit 7, with the apt command) unless this host runs ``arch`` binaries: natively, or
    through a registered and enabled qemu binfmt handler (what debootstrap's second stage and every RUN step of a
    foreign-platform build need)."""
    want = ARCH_MACHINE[arch]
    if (machine or host_platform.machine()) == want:
        return
    entry = binfmt_dir / f"qemu-{want}"
    try:
        lines = entry.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    interpreter = next((line.split(None, 1)[1] for line in lines if line.startswith("interpreter ")), "")
    if lines[:1] == ["enabled"] and interpreter and Path(interpreter).exists():
        return
    why = ("is not registered" if not lines else "is disabled" if lines[:1] != ["enabled"]
           else f"names {interpreter or 'no interpreter'}, which does not exist")
    raise HostCheckError(
        f"this host cannot run {arch} ({want}) binaries: the binfmt handler {entry} {why}. Install and register "
        f"qemu: `{EMULATION_FIX.format(machine=want)}` (Debian/Ubuntu, as root), or build on a {arch} machine.")


def tarball_name(suite: str, arch: str, mirror: str) -> str:
    # amd64 keeps the name it had before arm64 existed, so caches made then are still found
    return f"debian-{suite}{'' if arch == 'amd64' else '-' + arch}-{_mirror_slug(mirror)}.tar.gz"


def ensure_base(suite: str = "bookworm", *, client: docker.DockerClient, cache_dir: Path, mirror: str | None = None,
                log: Log | None = None, rebuild: bool = False, arch: str = "amd64") -> LocalBase:
    """``torchrig-base:<suite>`` (``-<arch>`` for arm64): import the cached tarball (made first, under
    ``<cache_dir>/base``, if needed) unless already imported. ``mirror``: ``--mirror`` or ``TORCHRIG_DEBIAN_MIRROR``;
    None: the host's apt mirror."""
    if suite not in DEBIAN_RELEASES:
        raise UsageError(f"unknown Debian release {suite!r}: choose one of {', '.join(DEBIAN_RELEASES)}")
    if arch not in ARCHES:
        raise UsageError(f"unknown architecture {arch!r}: choose one of {', '.join(ARCHES)} (Debian's names)")
    say = log or (lambda s: print(s, flush=True))
    mirror = mirror or host_mirror()
    tarball = cache_dir / "base" / tarball_name(suite, arch, mirror)
    seconds: float | None = None
    if rebuild or not tarball.is_file():
        seconds = _bootstrap(suite, mirror, tarball, say, arch=arch)
    else:
        say(f"base-local: using the cached tarball {tarball} ({tarball.stat().st_size / 1e6:.0f} MB)")
    digest = file_sha256(tarball)
    ref = base_ref(suite, arch)
    import docker.errors

    try:
        existing = client.images.get(ref)
    except docker.errors.ImageNotFound:
        existing = None
    found = LocalBase(ref=ref, image_id="", suite=suite, arch=arch, python=SUITE_PYTHON[suite], tarball=tarball,
                      tarball_bytes=tarball.stat().st_size, bootstrap_seconds=seconds, imported=False)
    if (existing is not None and (existing.labels or {}).get(LABEL_DIGEST) == digest and not rebuild
            and existing.attrs.get("Architecture") == arch):
        say(f"base-local: {ref} is up to date ({existing.short_id}, from the same tarball)")
        return replace(found, image_id=existing.id)
    image = _import(client, tarball, ref=ref, digest=digest, suite=suite, arch=arch, mirror=mirror, say=say)
    return replace(found, image_id=image.id, imported=True)


def _import(client: docker.DockerClient, tarball: Path, *, ref: str, digest: str, suite: str, arch: str,
            mirror: str, say: Log) -> Any:
    import docker.errors

    labels = {LABEL_DIGEST: digest, "io.torchrig.base.suite": suite, "io.torchrig.base.arch": arch,
              "io.torchrig.base.mirror": mirror, "org.opencontainers.image.title": "torchrig-base",
              "org.opencontainers.image.version": suite}
    env = ["LANG=C.UTF-8", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    if str(client.info().get("Architecture", "")) != ARCH_MACHINE[arch]:
        # `docker import` records the engine's architecture whatever it is told (Docker 20.10 ignores the API's
        # platform for an import): a foreign rootfs goes in as an image archive whose config names its own
        say(f"base-local: loading {tarball.name} as {ref} ({ARCH_PLATFORM[arch]}, image archive)")
        load_rootfs(client, tarball, ref=ref, arch=arch, env=env, cmd=["/bin/bash"], labels=labels)
    else:
        say(f"base-local: importing {tarball.name} as {ref}")
        changes = ["LABEL " + " ".join(f"{k}={v}" for k, v in labels.items()), "ENV " + " ".join(env),
                   'CMD ["/bin/bash"]']
        try:
            out = client.api.import_image_from_file(str(tarball), repository=BASE_REPOSITORY,
                                                    tag=ref.rsplit(":", 1)[1], changes=changes)
        except docker.errors.APIError as e:
            raise BuildError(f"docker import of {tarball} failed: {e.explanation or e}") from None
        if "error" in str(out)[:200].lower():
            raise BuildError(f"docker import of {tarball} failed: {out}")
    image = client.images.get(ref)
    recorded = image.attrs.get("Architecture")
    if recorded != arch:
        raise BuildError(f"the engine recorded {ref} as {recorded}, not {arch}; remove it (`docker rmi {ref}`) "
                         f"and report the engine's version (`docker version`)")
    say(f"base-local: {ref} = {image.short_id} ({image.attrs.get('Size', 0) / 1e6:.0f} MB, {ARCH_PLATFORM[arch]})")
    return image


def _bootstrap(suite: str, mirror: str, tarball: Path, say: Log, *, arch: str = "amd64") -> float:
    if shutil.which("debootstrap") is None:
        raise HostCheckError("debootstrap is not installed: `apt-get install debootstrap` (Debian/Ubuntu hosts), "
                             "or pull a python:<version>-slim base and pass --base-image instead")
    if os.geteuid() != 0:
        raise HostCheckError("debootstrap needs root to create device nodes and chroot: run `sudo torchrig "
                             "base-local`, or pull a base image and pass --base-image")
    require_emulation(arch)
    tarball.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="torchrig-base-", dir=tarball.parent) as tmp:
        root = Path(tmp) / "rootfs"
        cmd = debootstrap_command(suite, root, mirror, arch=arch)
        about = "about 80 s" if arch == "amd64" else "about 3 min under qemu"
        say(f"base-local: {' '.join(cmd)}  ({about}; the result is cached in {tarball.parent})")
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
    say(f"base-local: bootstrapped {suite} ({arch}) in {seconds:.0f} s, tarball {tarball.stat().st_size / 1e6:.0f} MB")
    return seconds


def _numeric_owner(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uname = info.gname = ""
    return info


def _mirror_slug(mirror: str) -> str:
    return hashlib.sha256(mirror.encode()).hexdigest()[:8]
