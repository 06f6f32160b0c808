"""The build context torchrig sends to the engine: assembled file by file, small and byte-for-byte reproducible.

Not the repository directory: only what the Dockerfile COPYs -- the Dockerfile, ``torchrig-build/`` (the build
helper and the requirement files generated for this build) and the code (``src/torchrig``, ``tasks/``,
``bench/``), minus what ``images/.dockerignore`` excludes. Entries are sorted and carry fixed owners, modes and
mtimes, so the same inputs give the same tar (and digest), which is what the ``io.torchrig.inputs`` label and a
cached rebuild rely on. Wheels never go in here (the wheelhouse is served; see build_server).
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from docker.utils.build import PatternMatcher

from torchrig.errors import BuildError, ConfigurationError
from torchrig.results.reading import InputFileError, read_text

__all__ = ["CODE_DIRS", "MTIME", "BuildContext", "assemble", "code_sources", "read_dockerignore"]

# 1980-01-01: fixed so unchanged files hash the same (and old enough that zip-based tools accept it).
MTIME = 315532800
# What the Dockerfile copies into /opt/torchrig, as (path in the context, path under the project root).
CODE_DIRS: tuple[tuple[str, str], ...] = (("src/torchrig", "src/torchrig"), ("tasks", "tasks"), ("bench", "bench"))


@dataclass(frozen=True, kw_only=True)
class BuildContext:
    data: bytes  # an uncompressed tar
    files: tuple[str, ...]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def fileobj(self) -> io.BytesIO:
        return io.BytesIO(self.data)


def read_dockerignore(path: Path) -> list[str]:
    if not path.exists() and not path.is_symlink():
        return []
    out = []
    try:
        text = read_text(path, kind="dockerignore")
    except InputFileError as e:
        raise ConfigurationError([e.reason], source=str(path)) from None
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def code_sources(root: Path) -> dict[str, Path]:
    """Context path -> directory on disk for the code copied into the image (missing ones become empty dirs)."""
    out = {}
    for arc, rel in CODE_DIRS:
        out[arc] = root / rel
    if not out["src/torchrig"].is_dir():  # an installed torchrig (not a checkout): ship the package itself
        out["src/torchrig"] = Path(__file__).resolve().parents[1]
    return out


def assemble(*, dockerfile: str, helper: Path, generated: Mapping[str, str], code: Mapping[str, Path],
             ignore: list[str]) -> BuildContext:
    """The context tar: ``Dockerfile`` (its text), ``torchrig-build/build-env.sh`` and the other ``*.sh`` beside it
    (``entrypoint.sh``), ``torchrig-build/<generated>``, and the code."""
    if not helper.is_file():
        raise BuildError(f"the build helper {helper} is missing from the checkout (it belongs in images/)")
    matcher = PatternMatcher(ignore)
    buf = io.BytesIO()
    files: list[str] = []
    dirs: set[str] = set()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, "Dockerfile", dockerfile.encode(), files)
        _add_dir(tar, "torchrig-build", dirs)
        _add_bytes(tar, "torchrig-build/build-env.sh", helper.read_bytes(), files, mode=0o755)
        for script in sorted(helper.parent.glob("*.sh")):  # and the helpers beside it (entrypoint.sh)
            if script.name != helper.name and script.is_file():
                _add_bytes(tar, f"torchrig-build/{script.name}", script.read_bytes(), files, mode=0o755)
        for name in sorted(generated):
            _add_bytes(tar, f"torchrig-build/{name}", generated[name].encode(), files)
        for arc in sorted(code):
            parts = arc.split("/")
            for i in range(1, len(parts) + 1):
                _add_dir(tar, "/".join(parts[:i]), dirs)
            src = code[arc]
            if not src.is_dir():
                continue  # still an (empty) directory in the context: the Dockerfile's COPY must find it
            for rel, path in _walk(src, arc, matcher):
                name = f"{arc}/{rel}"
                if path.is_symlink():
                    info = _info(name, tarfile.SYMTYPE, 0o777)
                    info.linkname = os.readlink(path)
                    tar.addfile(info)
                elif path.is_dir():
                    _add_dir(tar, name, dirs)
                elif path.is_file():
                    mode = 0o755 if os.access(path, os.X_OK) else 0o644
                    _add_bytes(tar, name, path.read_bytes(), files, mode=mode)
    return BuildContext(data=buf.getvalue(), files=tuple(files))


def _walk(top: Path, arc: str, matcher: PatternMatcher) -> Iterator[tuple[str, Path]]:
    """Sorted (relative path, path) pairs under ``top``, skipping what .dockerignore matches (whole subtrees)."""
    for dirpath, dirnames, filenames in os.walk(top):
        base = Path(dirpath)
        rel_base = base.relative_to(top).as_posix()

        def keep(name: str, rel_base: str = rel_base) -> bool:
            rel = name if rel_base == "." else f"{rel_base}/{name}"
            return not matcher.matches(f"{arc}/{rel}")

        dirnames[:] = sorted(d for d in dirnames if keep(d))
        for name in sorted([*dirnames, *(f for f in filenames if keep(f))]):
            path = base / name
            yield path.relative_to(top).as_posix(), path


def _info(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, mode, MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _add_dir(tar: tarfile.TarFile, name: str, dirs: set[str]) -> None:
    if name not in dirs:
        dirs.add(name)
        tar.addfile(_info(name, tarfile.DIRTYPE, 0o755))


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, files: list[str], mode: int = 0o644) -> None:
    info = _info(name, tarfile.REGTYPE, mode)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
    files.append(name)
