"""platforms: linux/arm64 is accepted exactly when compat.yaml's aarch64 data has the torch build on the index."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from torchrig.matrix import load_matrix
from torchrig.matrix.compat import load_compat
from torchrig.matrix.platforms import platform_problems

ROOT = Path(__file__).resolve().parents[2]
COMPAT = load_compat()
RELEASES = sorted(COMPAT.releases.values(), key=lambda r: tuple(map(int, r.minor.split("."))))


def _torch(minor: str) -> str:
    return next(iter(COMPAT.releases[minor].torchvision))


@st.composite
def _rows(draw: st.DrawFn) -> tuple[str, str, str, str]:
    release = draw(st.sampled_from(RELEASES))
    flavour = draw(st.sampled_from(release.flavours))
    kind = draw(st.sampled_from(["pypi", "pytorch", "mirror"]))
    index = {"pypi": "https://pypi.org/simple", "pytorch": f"https://download.pytorch.org/whl/{flavour}",
             "mirror": "https://mirror.example/simple"}[kind]
    return release.minor, flavour, index, kind


@given(_rows(), st.booleans())
def test_arm64_is_refused_unless_the_index_has_that_build(row: tuple[str, str, str, str], amd64: bool) -> None:
    minor, flavour, index, kind = row
    torch = _torch(minor)
    platforms = ("linux/amd64", "linux/arm64") if amd64 else ("linux/arm64",)
    problems = platform_problems(platforms, torch=torch, flavour=flavour, index=index, compat=COMPAT)
    assert platform_problems(("linux/amd64",), torch=torch, flavour=flavour, index=index, compat=COMPAT) == []
    wheels = COMPAT.aarch64.get(minor)
    if flavour.startswith("rocm") or wheels is None:
        assert len(problems) == 1  # no ROCm build is ever aarch64
    elif kind == "pypi":
        assert (problems == []) == (wheels.pypi == flavour)
    elif kind == "pytorch":
        assert (problems == []) == (flavour in wheels.index)
    for msg in problems:
        assert msg.startswith("linux/arm64: ") and "remove linux/arm64" in msg and torch[:4] in msg
        assert wheels is None or (flavour in msg and index in msg)


def test_a_release_without_aarch64_data_is_refused_with_what_to_add() -> None:
    bare = replace(COMPAT, aarch64={})
    (msg,) = platform_problems(("linux/arm64",), torch="2.14.1", flavour="cu130", index="https://pypi.org/simple",
                               compat=bare)
    assert "compat.yaml knows no aarch64 wheels of torch 2.14" in msg and "aarch64 table" in msg


@pytest.mark.parametrize(("torch", "flavour", "index", "ok"), [
    ("2.0.1", "cpu", "https://pypi.org/simple", True),  # PyPI's aarch64 2.0.1 is a CPU build
    ("2.0.1", "cpu", "https://download.pytorch.org/whl/cpu", True),
    ("2.9.1", "cpu", "https://pypi.org/simple", True),
    ("2.9.1", "cu128", "https://pypi.org/simple", False),  # PyPI's aarch64 2.9.1 is CPU-only
    ("2.14.1", "cu130", "https://pypi.org/simple", True),  # ... and 2.14.1's a CUDA 13.0 build for Grace
    ("2.14.1", "cpu", "https://pypi.org/simple", False),
    ("2.14.1", "cu126", "https://download.pytorch.org/whl/cu126", False),
    ("2.9.1", "rocm6.4", "https://download.pytorch.org/whl/rocm6.4", False),
])
def test_named_builds(torch: str, flavour: str, index: str, ok: bool) -> None:
    assert (platform_problems(("linux/arm64",), torch=torch, flavour=flavour, index=index, compat=COMPAT) == []) == ok


def test_shipped_rows_platforms() -> None:
    m = load_matrix(ROOT / "matrix.yaml")
    assert m.get("cpu").platforms == ("linux/amd64", "linux/arm64")
    assert all(e.platforms[0] == "linux/amd64" for e in m.environments)
    for env in m.environments:
        assert platform_problems(env.platforms, torch=env.torch, flavour=env.flavour, index=env.index,
                                 compat=COMPAT) == []
