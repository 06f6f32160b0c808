"""Locks: what pip's report becomes, how a lock reads back, and when a build may use it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from torchrig.errors import BuildError, ConfigurationError
from torchrig.images.lock import (
    LockedPackage,
    decide,
    format_lock,
    packages_from_reports,
    parse_lock,
    requirements_digest,
)
from torchrig.matrix import Environment, load_matrix

ROOT = Path(__file__).resolve().parents[2]
H = {c: "sha256:" + c * 64 for c in "abcdef"}
PYPI = "https://pypi.org/simple"


@pytest.fixture(scope="module")
def env() -> Environment:
    return load_matrix(ROOT / "matrix.yaml").get("cpu")


def _pkgs() -> list[LockedPackage]:
    return [LockedPackage(name="torch", version="2.0.1", hashes=(H["a"],), section="torch"),
            LockedPackage(name="numpy", version="1.26.4", hashes=(H["b"],), section="torch"),
            LockedPackage(name="transformers", version="4.40.2", hashes=(H["c"], H["d"]), section="extras")]


def _text(env: Environment, index: str = PYPI, extra: tuple[str, ...] = ()) -> str:
    return format_lock(env=env, index_url=index, extra_index_urls=extra, resolved_in="torchrig-base:bookworm",
                       packages=_pkgs(), resolved_at="2025-01-01T00:00:00Z")


def test_a_written_lock_reads_back_with_its_sections(env: Environment) -> None:
    lock = parse_lock(_text(env))
    assert lock.env_id == "cpu"
    assert lock.index_url == PYPI
    assert lock.requirements == env.requirements()
    assert [(p.name, p.section) for p in lock.packages] == [("numpy", "torch"), ("torch", "torch"),
                                                             ("transformers", "extras")]
    torch_section = lock.section_text("torch")
    assert "torch==2.0.1 \\\n    --hash=" + H["a"] in torch_section
    assert "transformers" not in torch_section
    assert lock.section_text("extras").count("--hash=") == 2


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
    assert "missing '# index-url" in msg
    assert "torchrig lock ENV" in msg


def test_a_matching_lock_is_used(env: Environment, tmp_path: Path) -> None:
    d = decide(parse_lock(_text(env)), env, index_url=PYPI + "/", extra_index_urls=(), path=tmp_path / "l")
    assert d.lock is not None
    assert "--require-hashes" in d.message


def test_a_lock_from_another_index_is_not_used_and_the_build_says_so(env: Environment, tmp_path: Path) -> None:
    d = decide(parse_lock(_text(env)), env, index_url=env.index, extra_index_urls=(), path=tmp_path / "cpu.txt")
    assert d.lock is None
    assert d.message.startswith("warning:")
    assert PYPI in d.message and env.index in d.message


def test_a_lock_for_other_requirements_is_stale(env: Environment, tmp_path: Path) -> None:
    text = _text(env).replace(requirements_digest(env.requirements()), "0" * 64)
    d = decide(parse_lock(text), env, index_url=PYPI, extra_index_urls=(), path=tmp_path / "cpu.txt")
    assert d.lock is None
    assert "other requirements" in d.message


def test_extra_indexes_must_match_too(env: Environment, tmp_path: Path) -> None:
    lock = parse_lock(_text(env, extra=("https://extra.example/simple",)))
    assert decide(lock, env, index_url=PYPI, extra_index_urls=(), path=tmp_path / "l").lock is None
    assert decide(lock, env, index_url=PYPI, extra_index_urls=("https://extra.example/simple/",),
                  path=tmp_path / "l").lock is not None


def test_no_lock_and_no_lock_wanted(env: Environment, tmp_path: Path) -> None:
    assert "does not exist" in decide(None, env, index_url=PYPI, extra_index_urls=(), path=tmp_path / "x").message
    d = decide(parse_lock(_text(env)), env, index_url=PYPI, extra_index_urls=(), path=tmp_path / "x", wanted=False)
    assert d.lock is None and "--no-lock" in d.message


def _item(name: str, version: str, archive: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": name, "version": version},
            "download_info": {"url": f"https://files/{name}.whl", "archive_info": archive}}


def test_pip_reports_become_sections_with_hashes() -> None:
    """Recorded shape of `pip install --dry-run --report` (pip >= 23: `hashes`; pip 22: `hash`)."""
    torch_report = {"install": [_item("torch", "2.0.1", {"hashes": {"sha256": "a" * 64}}),
                                _item("Jinja2", "3.1.4", {"hash": "sha256=" + "b" * 64})]}
    full = {"install": [*torch_report["install"], _item("jinja2", "3.1.4", {"hashes": {"sha256": "b" * 64}}),
                        _item("transformers", "4.40.2", {"hashes": {"sha256": "c" * 64, "md5": "x"}})]}
    pkgs = packages_from_reports(torch_report, full)
    assert [(p.name, p.section, p.hashes) for p in pkgs] == [
        ("torch", "torch", (H["a"],)), ("Jinja2", "torch", (H["b"],)), ("transformers", "extras", (H["c"],))]


def test_an_unhashable_requirement_cannot_be_locked() -> None:
    report = {"install": [_item("mypkg", "0.1", {})]}
    with pytest.raises(BuildError, match=r"cannot lock mypkg 0\.1"):
        packages_from_reports(report, report)
