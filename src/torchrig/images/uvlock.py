"""Resolving a lock on the host with uv (``uv pip compile``): no container, no base image, seconds not minutes.

uv resolves for a target that is not the host: ``--python-version`` (the environment's Python) and
``--python-platform`` (:func:`target_platform`: manylinux x86_64 at the glibc of the environment's bases), against
the environment's index (or ``--index-url``/``--wheelhouse``), through the CA bundle (``SSL_CERT_FILE``).
``--generate-hashes`` records the sha256 of every file of each pinned version, so whichever wheel pip or uv picks
in the image is hash-checked.

It resolves twice: everything together (so the extras' own pins, e.g. ``numpy<2``, shape the shared dependencies),
then torch and torchvision alone constrained to exactly those versions: that closure is the lock's ``[torch]``
section, the rest its ``[extras]``. The installer the image build uses, uv itself, is pinned the same way in
``locks/uv.txt`` (from PyPI, whatever the environment's index).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from torchrig.errors import BuildError, UsageError
from torchrig.images.lock import LockedPackage, format_lock, lock_path, parse_lock
from torchrig.images.options import BuildOptions, default_root
from torchrig.images.plan import Sources, sources
from torchrig.images.platforms import PLATFORM_MACHINE
from torchrig.matrix import Environment, canonical_name
from torchrig.matrix.compat import load_compat
from torchrig.results.io import atomic_write_text

__all__ = [
    "PYPI",
    "RESOLVE_TIMEOUT_S",
    "compile_command",
    "find_uv",
    "parse_compiled",
    "target_platform",
    "uv_version",
    "write_installer_lock",
    "write_lock",
]

PYPI = "https://pypi.org/simple"
# uv reads each wheel's metadata (PEP 658) instead of downloading it; half an hour covers a slow mirror that
# serves none and makes uv fetch torch's wheels.
RESOLVE_TIMEOUT_S = 1800.0
# torch before 2.7 tags its Linux wheels plain ``linux_x86_64``; they are built on manylinux2014 (glibc 2.17).
_LEGACY_GLIBC = "2_17"
_ENTRY_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")
_HASH_RE = re.compile(r"--hash=(sha256:[0-9a-f]{64})")

Runner = Callable[..., "subprocess.CompletedProcess[str]"]


def find_uv() -> Path:
    """The uv binary: the ``uv`` package's beside this Python (a torchrig dependency), else one on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / "uv"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("uv")
    if found is None:
        raise BuildError("uv is not installed: `torchrig lock` resolves with it. `pip install uv` (it is on PyPI) "
                         "into the Python that runs torchrig, or put uv on PATH")
    return Path(found)


def uv_version(uv: Path, *, run: Runner = subprocess.run) -> str:
    """``uv 0.13.9``: what the lock header records as its resolver."""
    r = run([str(uv), "--version"], capture_output=True, text=True, timeout=60)
    m = re.match(r"^(uv \S+)", r.stdout.strip())
    if r.returncode != 0 or m is None:
        raise BuildError(f"{uv} --version failed: {(r.stderr or r.stdout).strip()[-300:]}")
    return m.group(1)


def target_platform(env: Environment, platform: str = "linux/amd64") -> str:
    """uv's ``--python-platform`` for ``env``'s images: manylinux x86_64 at the oldest glibc of its target bases
    (compat.yaml's ``base_images``: ``python:*-bookworm`` 2.36, ``*-ubuntu22.04`` 2.35), so every target can install
    the lock; for a base compat.yaml does not know, the glibc the torch release's wheel tag needs
    (``manylinux_2_28_x86_64`` -> 2.28; plain ``linux_x86_64`` before torch 2.7 -> 2.17, manylinux2014's).
    For ``linux/arm64`` the same glibc on aarch64 (PyPI's aarch64 torch wheels are manylinux2014/_2_28 too)."""
    machine = PLATFORM_MACHINE[platform]
    return machine + _x86_64_platform(env).removeprefix("x86_64")


def _x86_64_platform(env: Environment) -> str:
    compat = load_compat()
    known = [facts.glibc for base in env.targets.values()
             if (facts := compat.base_image(base)) is not None and facts.glibc]
    if known:
        oldest = min(known, key=lambda g: tuple(int(p) for p in g.split(".")))
        return "x86_64-manylinux_" + oldest.replace(".", "_")
    release = compat.release(env.torch)
    m = re.match(r"^manylinux_(\d+)_(\d+)_x86_64$", release.wheel_tag if release is not None else "")
    return f"x86_64-manylinux_{m.group(1)}_{m.group(2)}" if m else f"x86_64-manylinux_{_LEGACY_GLIBC}"


def compile_command(uv: Path, *, requirements: Path, output: Path, python: str, platform: str, index_url: str,
                    extra_index_urls: Sequence[str] = (), constraints: Path | None = None,
                    wheelhouse: Path | None = None) -> list[str]:
    """The ``uv pip compile`` command line for one resolution.

    ``unsafe-best-match`` is pip's rule across indexes (the newest matching version wherever it is), which is how
    an unlocked build resolves; ``--no-config`` keeps a user's uv.toml from changing the result.
    """
    cmd = [str(uv), "pip", "compile", str(requirements), "--output-file", str(output), "--python-version", python,
           "--python-platform", platform, "--generate-hashes", "--no-header", "--no-annotate", "--no-config",
           "--quiet"]
    if constraints is not None:
        cmd += ["--constraint", str(constraints)]
    if wheelhouse is not None:
        return [*cmd, "--no-index", "--find-links", str(wheelhouse)]
    cmd += ["--index-url", index_url]
    for url in extra_index_urls:
        cmd += ["--extra-index-url", url]
    if extra_index_urls:
        cmd += ["--index-strategy", "unsafe-best-match"]
    return cmd


def parse_compiled(text: str) -> list[tuple[str, str, tuple[str, ...]]]:
    """``(name, version, hashes)`` from uv's requirements output; BuildError for an entry without a hash."""
    out: list[tuple[str, str, tuple[str, ...]]] = []
    joined = re.sub(r"\\\n", " ", text)
    for line in joined.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        m = _ENTRY_RE.match(stripped)
        if m is None:
            raise BuildError(f"cannot lock {stripped[:80]!r}: only NAME==VERSION from an index or a wheelhouse can "
                             "be hash-pinned (not a URL, a path or a VCS checkout)")
        hashes = tuple(_HASH_RE.findall(stripped))
        if not hashes:
            raise BuildError(f"cannot lock {m.group(1)} {m.group(2)}: the resolver found no sha256 for it")
        out.append((m.group(1), m.group(2), hashes))
    return out


def _run_uv(cmd: list[str], *, what: str, src_index: str, ca_bundle: Path | None, run: Runner,
            timeout: float) -> None:
    env = dict(os.environ)
    if ca_bundle is not None:
        env["SSL_CERT_FILE"] = str(ca_bundle)
    try:
        r = run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise BuildError(f"resolving {what} did not finish within {timeout:g} s") from None
    if r.returncode != 0:
        tail = "\n".join((r.stderr or "").strip().splitlines()[-15:])
        raise BuildError(f"resolving {what} failed (uv exit {r.returncode}):\n{tail}\nIs {src_index} reachable "
                         "from here? Pass --index-url/--wheelhouse for another source, --ca-bundle for a "
                         "TLS-intercepting proxy.")


def resolve(env: Environment, src: Sources, *, uv: Path, ca_bundle: Path | None = None,
            wheelhouse: Path | None = None, run: Runner = subprocess.run,
            timeout: float = RESOLVE_TIMEOUT_S, options_platform: str = "linux/amd64") -> list[LockedPackage]:
    """The lock's packages: torch's closure in ``[torch]``, the rest in ``[extras]``, all at one resolution."""
    platform = target_platform(env, options_platform)

    def compile_(requirements: Path, output: Path, what: str, constraints: Path | None = None) -> None:
        cmd = compile_command(uv, requirements=requirements, output=output, python=env.python, platform=platform,
                              index_url=src.index_url, extra_index_urls=src.extra_index_urls,
                              constraints=constraints, wheelhouse=wheelhouse)
        _run_uv(cmd, what=what, src_index=src.describe(), ca_bundle=ca_bundle, run=run, timeout=timeout)

    with tempfile.TemporaryDirectory(prefix="torchrig-lock-") as tmp:
        d = Path(tmp)
        (d / "all.in").write_text("".join(f"{r}\n" for r in env.requirements()))
        (d / "torch.in").write_text(f"torch=={env.torch}\ntorchvision=={env.torchvision}\n")
        compile_(d / "all.in", d / "all.txt", f"{env.id}'s requirements")
        everything = parse_compiled((d / "all.txt").read_text())
        (d / "pins.txt").write_text("".join(f"{n}=={v}\n" for n, v, _ in everything))
        compile_(d / "torch.in", d / "torch.txt", f"{env.id}'s torch layer", constraints=d / "pins.txt")
        torch_names = {canonical_name(n) for n, _, _ in parse_compiled((d / "torch.txt").read_text())}
    return [LockedPackage(name=n, version=v, hashes=h, section="torch" if canonical_name(n) in torch_names
                          else "extras") for n, v, h in everything]


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


def write_lock(env: Environment, options: BuildOptions, *, output: Path | None = None, out: TextIO | None = None,
               run: Runner = subprocess.run, timeout: float = RESOLVE_TIMEOUT_S) -> Path:
    """Resolve ``env`` for its target with ``options``' sources and write its lock; return where it went.

    The default place is :func:`~torchrig.images.lock.lock_path`: ``locks/<env>.txt`` for matrix.yaml's indexes.
    """
    if not (math.isfinite(timeout) and timeout > 0):
        raise UsageError(f"--timeout {timeout:g}: give the resolver's time limit in seconds, > 0 (default "
                         f"{RESOLVE_TIMEOUT_S:g})")
    out = out or sys.stderr
    root = options.root or default_root()
    src = sources(env, "runtime", options)
    oci = options.platform
    output = output or options.lock_file or lock_path(root, env, index_url=src.index_url,
                                                      extra_index_urls=src.extra_index_urls, platform=oci)
    uv = find_uv()
    resolver = uv_version(uv, run=run)
    platform = target_platform(env, oci)
    print(f"lock {env.id}: resolving {' '.join(env.requirements())} for Python {env.python} on {platform} against "
          + (f"the wheelhouse {options.wheelhouse}" if options.wheelhouse else src.describe()) + f" ({resolver})",
          file=out, flush=True)
    packages = resolve(env, src, uv=uv, ca_bundle=options.ca_bundle, wheelhouse=options.wheelhouse, run=run,
                       timeout=timeout, options_platform=oci)
    text = format_lock(env=env, index_url=src.index_url, extra_index_urls=src.extra_index_urls,
                       resolver=f"{resolver} (uv pip compile --generate-hashes)", platform=platform,
                       packages=packages)
    parse_lock(text, source=str(output))  # what we write must read back
    _write(output, text)
    n_torch = sum(p.section == "torch" for p in packages)
    print(f"lock {env.id}: wrote {output} ({len(packages)} packages: {n_torch} in [torch], "
          f"{len(packages) - n_torch} in [extras])", file=out, flush=True)
    return output


def write_installer_lock(options: BuildOptions, *, out: TextIO | None = None, run: Runner = subprocess.run) -> Path:
    """``locks/uv.txt``: the uv that image builds install from locks with, pinned with every file's sha256.

    The same uv version that resolved the locks, from PyPI (or the wheelhouse); a build without this file, or one
    that cannot fetch it, installs with pip instead.
    """
    out = out or sys.stderr
    root = options.root or default_root()
    uv = find_uv()
    version = uv_version(uv, run=run).split()[1]
    path = root / "locks" / "uv.txt"
    with tempfile.TemporaryDirectory(prefix="torchrig-lock-") as tmp:
        d = Path(tmp)
        (d / "uv.in").write_text(f"uv=={version}\n")
        _run_uv(compile_command(uv, requirements=d / "uv.in", output=d / "uv.txt", python="3.10",
                                platform=f"x86_64-manylinux_{_LEGACY_GLIBC}", index_url=PYPI,
                                wheelhouse=options.wheelhouse),
                what="uv", src_index=PYPI, ca_bundle=options.ca_bundle, run=run, timeout=RESOLVE_TIMEOUT_S)
        ((name, pinned, hashes),) = parse_compiled((d / "uv.txt").read_text())
    body = f"{name}=={pinned}" + "".join(f" \\\n    --hash={h}" for h in hashes) + "\n"
    _write(path, "# The installer image builds use for locked installs: written by `torchrig lock`, from PyPI.\n"
                 + body)
    print(f"lock: wrote {path} (uv {pinned}, {len(hashes)} files)", file=out, flush=True)
    return path
