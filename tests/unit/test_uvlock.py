"""Resolving a lock with uv on the host: the command line, uv's output, the sections, and `torchrig lock` itself
(run for real against a folder of stand-in wheels: offline, a second or two)."""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from torchrig.errors import BuildError
from torchrig.images.lock import lock_status, parse_lock
from torchrig.images.options import BuildOptions
from torchrig.images.plan import sources
from torchrig.images.uvlock import compile_command, find_uv, parse_compiled, resolve, target_platform, write_lock
from torchrig.matrix import Environment, load_matrix

ROOT = Path(__file__).resolve().parents[2]
UV = Path("/opt/uv")
PYPI = "https://pypi.org/simple"


@pytest.fixture(scope="module")
def matrix_envs() -> dict[str, Environment]:
    m = load_matrix(ROOT / "matrix.yaml")
    return {e.id: e for e in m.environments}


def test_the_platform_is_manylinux_at_the_oldest_glibc_of_the_bases(matrix_envs: dict[str, Environment]) -> None:
    assert target_platform(matrix_envs["cpu"]) == "x86_64-manylinux_2_36"  # python:3.11-(slim-)bookworm
    assert target_platform(matrix_envs["cuda121"]) == "x86_64-manylinux_2_35"  # devel: nvidia/cuda:*-ubuntu22.04


def test_unknown_bases_fall_back_to_the_glibc_the_torch_wheels_need(matrix_envs: dict[str, Environment]) -> None:
    mine = {"runtime": "registry.example/my-base:1"}
    assert target_platform(replace(matrix_envs["cuda130"], targets=mine)) == "x86_64-manylinux_2_28"  # 2.14
    assert target_platform(replace(matrix_envs["cpu"], targets=mine)) == "x86_64-manylinux_2_17"  # 2.0: linux_x86_64


def test_the_compile_command_targets_the_image_not_the_host(tmp_path: Path) -> None:
    cmd = compile_command(UV, requirements=tmp_path / "in", output=tmp_path / "out", python="3.12",
                          platform="x86_64-manylinux_2_28", index_url=PYPI,
                          extra_index_urls=("https://download.pytorch.org/whl/cu130",))
    assert cmd[:4] == [str(UV), "pip", "compile", str(tmp_path / "in")]
    pairs = dict(itertools.pairwise(cmd))
    assert pairs["--python-version"] == "3.12" and pairs["--python-platform"] == "x86_64-manylinux_2_28"
    assert pairs["--index-url"] == PYPI and pairs["--extra-index-url"] == "https://download.pytorch.org/whl/cu130"
    assert pairs["--index-strategy"] == "unsafe-best-match"  # pip's rule across indexes, as an unlocked build
    assert {"--generate-hashes", "--no-config"} <= set(cmd)


def test_a_wheelhouse_replaces_every_index(tmp_path: Path) -> None:
    cmd = compile_command(UV, requirements=tmp_path / "in", output=tmp_path / "out", python="3.11",
                          platform="x86_64-manylinux_2_17", index_url=PYPI, wheelhouse=tmp_path / "wh",
                          constraints=tmp_path / "pins")
    pairs = dict(itertools.pairwise(cmd))
    assert "--no-index" in cmd and pairs["--find-links"] == str(tmp_path / "wh")
    assert "--index-url" not in cmd and pairs["--constraint"] == str(tmp_path / "pins")


def test_uvs_output_becomes_pins_with_every_hash() -> None:
    text = ("jinja2==3.1.6 \\\n    --hash=sha256:" + "a" * 64 + " \\\n    --hash=sha256:" + "b" * 64 + "\n"
            "# a comment\n\ntorch==2.1.0 \\\n    --hash=sha256:" + "c" * 64 + "\n")
    assert parse_compiled(text) == [("jinja2", "3.1.6", ("sha256:" + "a" * 64, "sha256:" + "b" * 64)),
                                    ("torch", "2.1.0", ("sha256:" + "c" * 64,))]


@pytest.mark.parametrize(("text", "match"), [
    ("mypkg @ file:///src/mypkg\n", "only NAME==VERSION"),
    ("six==1.16.0\n", "no sha256 for it"),
])
def test_what_cannot_be_hash_pinned_cannot_be_locked(text: str, match: str) -> None:
    with pytest.raises(BuildError, match=match):
        parse_compiled(text)


def _fake_uv(outputs: dict[str, str], calls: list[list[str]], rc: int = 0) -> Any:
    def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        out = Path(cmd[cmd.index("--output-file") + 1])
        out.write_text(outputs[out.name])
        return subprocess.CompletedProcess(cmd, rc, "", "error: Failed to fetch: `https://pypi.org/simple/torch/`")
    return run


def test_torchs_closure_is_the_torch_section_at_the_versions_of_the_whole_resolution(
        matrix_envs: dict[str, Environment]) -> None:
    env = matrix_envs["cuda121"]
    h = " \\\n    --hash=sha256:" + "a" * 64 + "\n"
    outputs = {"all.txt": f"numpy==1.26.4{h}torch==2.1.0{h}torchvision==0.16.0{h}transformers==4.40.2{h}",
               "torch.txt": f"numpy==1.26.4{h}torch==2.1.0{h}torchvision==0.16.0{h}"}
    calls: list[list[str]] = []
    src = sources(env, "runtime", BuildOptions())
    pkgs = resolve(env, src, uv=UV, run=_fake_uv(outputs, calls))
    assert [(p.name, p.section) for p in pkgs] == [("numpy", "torch"), ("torch", "torch"), ("torchvision", "torch"),
                                                   ("transformers", "extras")]
    assert "--constraint" not in calls[0] and "--constraint" in calls[1], "the torch pass is held to the pins"


def test_a_failed_resolution_says_what_and_where(matrix_envs: dict[str, Environment]) -> None:
    env = matrix_envs["cuda121"]
    run = _fake_uv({"all.txt": ""}, [], rc=2)
    with pytest.raises(BuildError) as e:
        resolve(env, sources(env, "runtime", BuildOptions()), uv=UV, run=run)
    msg = str(e.value)
    assert "resolving cuda121's requirements failed (uv exit 2)" in msg and "Failed to fetch" in msg
    assert f"Is {PYPI} reachable" in msg and "--ca-bundle" in msg


# ------------------------------------------------------------------------------ for real, with stand-in wheels


def _wheel(d: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> None:
    dist = f"{name.replace('-', '_')}-{version}"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n"
                                                                                  for r in requires)
    files = {f"{dist}.dist-info/METADATA": meta,
             f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{n},sha256={hashlib.sha256(t.encode()).hexdigest()},{len(t)}\n" for n, t in files.items())
    with zipfile.ZipFile(d / f"{dist}-py3-none-any.whl", "w") as zf:
        for n, t in {**files, f"{dist}.dist-info/RECORD": record + f"{dist}.dist-info/RECORD,,\n"}.items():
            zf.writestr(n, t)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A checkout with one environment (torch 2.0.1 + an extra) and a wheelhouse holding everything it needs."""
    try:
        find_uv()
    except BuildError:
        pytest.skip("uv is not installed (pip install uv)")
    shutil.copytree(ROOT / "images", tmp_path / "images")
    wh = tmp_path / "wheels"
    wh.mkdir()
    for name, version, requires in [("torch", "2.0.1", ("filelock",)), ("filelock", "3.0.0", ()),
                                    ("torchvision", "0.15.2", ("torch==2.0.1", "pillow")), ("pillow", "10.0.0", ()),
                                    ("fake-extra", "1.0", ("six",)), ("six", "1.16.0", ()),
                                    ("pytest", "8.0.0", ()), ("pytest-benchmark", "4.0.0", ("pytest>=3.8",)),
                                    # compat.yaml's runtime pins for torch 2.0 (setuptools<82, numpy<2)
                                    ("setuptools", "81.0.0", ()), ("numpy", "1.26.4", ())]:
        _wheel(wh, name, version, requires)
    (tmp_path / "matrix.yaml").write_text("""schema_version: 1
registry: ""
image: torchrig-test
environments:
  - id: small
    accelerator: cpu
    torch: "2.0.1"
    python: "3.11"
    index: https://pypi.org/simple
    targets: {runtime: "torchrig-base:bookworm"}
    extras: ["fake-extra==1.0"]
""")
    return tmp_path


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]), "TORCHRIG_CA_BUNDLE": "none"}
    return subprocess.run([sys.executable, "-m", "torchrig", "--matrix", str(root / "matrix.yaml"), *args],
                          capture_output=True, text=True, env=env, timeout=300)


def test_torchrig_lock_resolves_with_uv_and_check_catches_a_stale_lock(checkout: Path) -> None:
    r = _cli(checkout, "lock", "small", "--wheelhouse", str(checkout / "wheels"))
    assert r.returncode == 0, r.stderr
    lock = parse_lock((checkout / "locks" / "small.txt").read_text())
    assert lock.resolver.startswith("uv ") and lock.platform == "x86_64-manylinux_2_36" and lock.python == "3.11"
    sections = {p.name: p.section for p in lock.packages}
    assert sections == {"filelock": "torch", "pillow": "torch", "torch": "torch", "torchvision": "torch",
                        "fake-extra": "extras", "six": "extras", "pytest": "extras", "pytest-benchmark": "extras",
                        "setuptools": "extras", "numpy": "extras"}
    digest = hashlib.sha256((checkout / "wheels" / "six-1.16.0-py3-none-any.whl").read_bytes()).hexdigest()
    assert next(p for p in lock.packages if p.name == "six").hashes == (f"sha256:{digest}",)
    # the wheelhouse holds no uv: the lock is written all the same, and the build will install with pip
    assert not (checkout / "locks" / "uv.txt").exists() and "locks/uv.txt not written" in r.stderr

    r = _cli(checkout, "lock", "--check")
    assert r.returncode == 0 and "fresh: locks/small.txt" in r.stdout, r.stdout + r.stderr

    matrix = checkout / "matrix.yaml"
    matrix.write_text(matrix.read_text().replace('["fake-extra==1.0"]', '["fake-extra==1.0", "six==1.16.0"]'))
    r = _cli(checkout, "lock", "--check")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "stale: locks/small.txt is stale: its requirements changed" in r.stdout
    assert "`torchrig lock small` (or `nox -s lock-small`)" in r.stdout
    env = load_matrix(matrix).get("small")
    assert lock_status(lock, env) is not None


def test_write_lock_without_uv_says_how_to_get_it(checkout: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("torchrig.images.uvlock.sysconfig.get_path", lambda _: str(checkout / "nowhere"))
    monkeypatch.setenv("PATH", str(checkout / "nowhere"))
    env = load_matrix(checkout / "matrix.yaml").get("small")
    with pytest.raises(BuildError, match=r"uv is not installed.*pip install uv"):
        write_lock(env, BuildOptions(root=checkout))


def test_lock_with_output_leaves_the_checkouts_locks_alone(checkout: Path,
                                                           tmp_path_factory: pytest.TempPathFactory) -> None:
    """`torchrig lock ENV --output FILE` writes FILE only: locks/uv.txt is an input of every image, so refreshing
    it there (a new uv on PyPI) would make every image already built stale (CI found it: an integration test's
    `lock small --output` rewrote the checkout's uv.txt, and the cpu image built minutes before no longer matched)."""
    out = tmp_path_factory.mktemp("elsewhere") / "small.txt"
    r = _cli(checkout, "lock", "small", "--wheelhouse", str(checkout / "wheels"), "--output", str(out))
    assert r.returncode == 0, r.stderr
    assert parse_lock(out.read_text()).env_id == "small"
    assert "locks/uv.txt left as it is" in r.stderr and "locks/uv.txt not written" not in r.stderr
    assert not (checkout / "locks").exists()
