"""compat-check compares compat.yaml's aarch64 table with the aarch64 wheels an index lists (PyPI and PyTorch)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from torchrig.matrix.compat import load_compat
from torchrig.matrix.compat_aarch64 import aarch64_flavour
from torchrig.matrix.compat_check import compare, observe, pypi_cuda
from torchrig.matrix.simple_index import IndexFile

COMPAT = load_compat()
# PyPI's aarch64 METADATA pins, as read from the wheels (compat.yaml aarch64 [WA])
CPU_291 = ['nvidia-cuda-runtime-cu12==12.8.90; platform_system == "Linux" and platform_machine == "x86_64"']
CUDA_214 = ['cuda-toolkit[cublas,cudart]==13.0.3; platform_system == "Linux"']
VERSIONS = sorted((t for r in COMPAT.releases.values() for t in r.torchvision if r.minor in COMPAT.aarch64),
                  key=lambda v: tuple(map(int, v.split("."))))


def _file(name: str, meta: bool = True) -> IndexFile:
    return IndexFile(filename=name, url=f"https://x/{name}", has_metadata=meta)


def _x86(version: str) -> list[IndexFile]:
    return [_file(f"torch-{version}-cp311-cp311-manylinux_2_28_x86_64.whl")]


def test_the_build_of_an_aarch64_wheel_comes_from_its_pins_not_the_x86_64_ones() -> None:
    assert aarch64_flavour(CPU_291, pypi_cuda) == "cpu"
    assert aarch64_flavour(CUDA_214, pypi_cuda) == "cu130"


@given(st.lists(st.tuples(st.sampled_from(VERSIONS), st.booleans(), st.sampled_from(["cpu", "cu130"])),
                min_size=1, max_size=6, unique_by=lambda t: t[0]))
def test_pypi_aarch64_disagreements_are_exactly_the_wrong_releases(rows: list[tuple[str, bool, str]]) -> None:
    files: list[IndexFile] = []
    meta: dict[str, list[str]] = {}
    for version, listed, build in rows:
        files += _x86(version)
        if listed:
            name = f"torch-{version}-cp311-cp311-manylinux_2_28_aarch64.whl"
            files.append(_file(name))
            meta[name] = CPU_291 if build == "cpu" else CUDA_214
    if not any(listed for _, listed, _ in rows):  # an index without aarch64 wheels is not compared: keep one
        files.append(_file("torch-9.9.9-cp311-cp311-manylinux_2_28_aarch64.whl"))
    obs = {"torch": observe(files), "torchvision": observe([])}
    report = compare(COMPAT, obs, index="https://pypi.org/simple", selection=tuple(v for v, _, _ in rows),
                     read_metadata=lambda f: meta.get(f.filename, []))
    arm = [d for d in report.diffs if "aarch64" in d]
    for version, listed, build in rows:
        want = COMPAT.aarch64[".".join(version.split(".")[:2])].pypi
        wrong = listed != (want is not None) or (listed and build != want)
        assert any(f"torch {version}:" in d for d in arm) == wrong, (version, listed, build, arm)


def test_the_pytorch_index_is_compared_with_the_index_list() -> None:
    files = [*_x86("2.14.1"), _file("torch-2.14.1+cpu-cp311-cp311-manylinux_2_28_aarch64.whl"),
             _file("torch-2.14.1+cu130-cp311-cp311-manylinux_2_28_aarch64.whl")]
    obs = {"torch": observe([*files, _file("torch-2.14.1+cu126-cp311-cp311-manylinux_2_28_x86_64.whl")]),
           "torchvision": observe([])}
    report = compare(COMPAT, obs, index="https://download.pytorch.org/whl", selection=("2.14.1",))
    assert "- torch 2.14.1: aarch64 builds cu132" in report.diffs
    assert "+ torch 2.14.1: aarch64 builds cpu" in report.diffs  # compat.yaml does not list the cpu folder's yet


def test_an_index_without_aarch64_wheels_is_not_compared_and_says_so() -> None:
    obs = {"torch": observe(_x86("2.14.1")), "torchvision": observe([])}
    report = compare(COMPAT, obs, index="https://mirror/simple", selection=("2.14.1",))
    assert not [d for d in report.diffs if "aarch64" in d]
    assert "aarch64 not compared: the index lists no Linux aarch64 torch wheels" in report.notes


FT_VERSIONS = [v for v in VERSIONS if v.rsplit(".", 1)[0] in COMPAT.free_threaded]


@given(st.lists(st.tuples(st.sampled_from(FT_VERSIONS), st.sets(st.sampled_from(["3.13", "3.14"]))), min_size=1,
                max_size=4, unique_by=lambda t: t[0]))
def test_free_threaded_disagreements(rows: list[tuple[str, set[str]]]) -> None:
    """A patch missing a listed free-threaded Python is reported; a Python every compared patch has and the table
    lacks is reported once for the minor; a single patch with more is not (2.12.0's cp313t)."""
    torch_files, tv_files = [_file("torch-9.9.9-cp313-cp313t-manylinux_2_28_x86_64.whl")], []  # one, so compared
    for version, pythons in rows:
        tv = COMPAT.release(version).torchvision[version]  # type: ignore[union-attr]
        for py in pythons:
            cp = "cp" + py.replace(".", "")
            torch_files.append(_file(f"torch-{version}-{cp}-{cp}t-manylinux_2_28_x86_64.whl"))
            tv_files.append(_file(f"torchvision-{tv}-{cp}-{cp}t-manylinux_2_28_x86_64.whl"))
    obs = {"torch": observe(torch_files), "torchvision": observe(tv_files)}
    report = compare(COMPAT, obs, index="https://pypi.org/simple", selection=tuple(v for v, _ in rows))
    ft = [d for d in report.diffs if "free-threaded" in d]
    for version, pythons in rows:
        want = set(COMPAT.free_threaded[version.rsplit(".", 1)[0]])
        assert any(d.startswith(f"- torch {version}:") for d in ft) == bool(want - pythons)
    for minor in {v.rsplit(".", 1)[0] for v, _ in rows}:
        every = set.intersection(*(p for v, p in rows if v.rsplit(".", 1)[0] == minor))
        assert any(d.startswith(f"+ torch {minor}:") for d in ft) == bool(every - set(COMPAT.free_threaded[minor]))
