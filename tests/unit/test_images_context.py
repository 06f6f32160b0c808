"""The build context: exactly what the Dockerfile copies, reproducible byte for byte, without caches."""

from __future__ import annotations

import io
import os
import re
import tarfile
from pathlib import Path

import pytest

from torchrig.errors import BuildError
from torchrig.images.context import assemble, code_sources, read_dockerignore

ROOT = Path(__file__).resolve().parents[2]
GENERATED = {"requirements-torch.txt": "torch==2.0.1\n", "requirements-extras.txt": "six\n",
             "constraints-torch.txt": "", "constraints.txt": "torch==2.0.1\n", "uv.txt": ""}


def _project(tmp_path: Path) -> Path:
    (tmp_path / "src" / "torchrig").mkdir(parents=True)
    (tmp_path / "src" / "torchrig" / "__init__.py").write_text("x = 1\n")
    (tmp_path / "src" / "torchrig" / "__pycache__").mkdir()
    (tmp_path / "src" / "torchrig" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"junk")
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "smoke.py").write_text("print('smoke')\n")
    (tmp_path / "tasks" / "results").mkdir()
    (tmp_path / "tasks" / "results" / "r.json").write_text("{}")
    # no bench/ at all: the context must still have the directory, or the Dockerfile's COPY fails
    return tmp_path


def _assemble(root: Path, **kw: object) -> bytes:
    args: dict[str, object] = dict(dockerfile=(ROOT / "images" / "Dockerfile").read_text(),
                                   helper=ROOT / "images" / "build-env.sh",
                                   generated=GENERATED, code=code_sources(root),
                                   ignore=read_dockerignore(ROOT / "images" / ".dockerignore"))
    args.update(kw)
    return assemble(**args).data  # type: ignore[arg-type]


def _names(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_context_holds_dockerfile_helper_requirements_and_code_but_no_caches(tmp_path: Path) -> None:
    names = _names(_assemble(_project(tmp_path)))
    assert {"Dockerfile", "torchrig-build/build-env.sh", "torchrig-build/requirements-torch.txt",
            "torchrig-build/constraints.txt", "src/torchrig/__init__.py", "tasks/smoke.py"} <= set(names)
    assert names["bench"].isdir()
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert not [n for n in names if "/results" in n], ".dockerignore's **/results is applied"
    assert names["torchrig-build/build-env.sh"].mode == 0o755


def test_same_inputs_give_the_same_bytes_whatever_the_mtimes(tmp_path: Path) -> None:
    root = _project(tmp_path)
    first = _assemble(root)
    os.utime(root / "tasks" / "smoke.py", (1, 1))
    assert _assemble(root) == first
    assert {m.mtime for m in _names(first).values()} == {315532800}
    assert {(m.uid, m.gid, m.uname) for m in _names(first).values()} == {(0, 0, "")}


def test_a_code_change_changes_the_context(tmp_path: Path) -> None:
    root = _project(tmp_path)
    first = _assemble(root)
    (root / "tasks" / "smoke.py").write_text("print('changed')\n")
    assert _assemble(root) != first


def test_every_copy_source_of_the_dockerfile_is_in_the_context(tmp_path: Path) -> None:
    names = _names(_assemble(_project(tmp_path)))
    sources = []
    for line in (ROOT / "images" / "Dockerfile").read_text().replace("\\\n", " ").splitlines():
        m = re.match(r"^COPY\s+(?:--\S+\s+)*(.+)\s+\S+$", line.strip())
        if m:
            sources += m.group(1).split()
    assert sources, "the Dockerfile has COPY instructions"
    missing = [s for s in sources if s not in names]
    assert not missing, f"COPY sources missing from the context: {missing}"


def test_a_missing_helper_is_a_build_error(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="belongs in images/"):
        _assemble(_project(tmp_path), helper=tmp_path / "nope" / "build-env.sh")
