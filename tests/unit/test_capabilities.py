"""Where torch.compile works: one table (compat.yaml), reached in an image through $TORCHRIG_COMPILE_MAX_PYTHON."""

from __future__ import annotations

import sys

import pytest

from torchrig.capabilities import compile_support, torch_minor
from torchrig.matrix.compat import load_compat, parse_version


def test_without_the_variable_the_compat_data_answers() -> None:
    compat = load_compat()
    for minor, release in compat.releases.items():
        support = compile_support(f"{minor}.1+cu121", environ={})
        assert (support.max_python, support.source, support.torch) == (release.compile_max_python, "compat.yaml",
                                                                        minor)
        top = parse_version(release.compile_max_python)
        assert support.limitation((top[0], top[1])) is None
        newer = support.limitation((top[0], top[1] + 1))
        assert newer is not None and f"torch {minor} supports Python up to {release.compile_max_python}" in newer


def test_python_3_14_compiles_from_torch_2_10_not_2_9() -> None:
    # The three copies of this table disagreed here: bench said 2.9, compat.yaml says 2.10.
    assert compile_support("2.9.1", environ={}).limitation((3, 14)) is not None
    assert compile_support("2.10.0", environ={}).limitation((3, 14)) is None


def test_the_variable_from_the_host_wins() -> None:
    support = compile_support("2.9.0", environ={"TORCHRIG_COMPILE_MAX_PYTHON": "3.10"})
    assert support.max_python == "3.10" and support.source == "$TORCHRIG_COMPILE_MAX_PYTHON"
    assert support.limitation((3, 11)) is not None
    assert support.failure_skip(RuntimeError("boom")) is None  # known: a failure is a failure


def test_unknown_support_turns_a_failure_into_a_skip_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = compile_support("2.9.0", environ={"TORCHRIG_COMPILE_MAX_PYTHON": "three"})
    assert not bad.known and "'three' is not a Python version" in bad.source
    assert bad.limitation() is None  # unknown: try it
    skip = bad.failure_skip(RuntimeError("Python 3.99+ not yet supported for torch.compile\nmore"))
    py = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert skip is not None and "RuntimeError: Python 3.99+ not yet supported for torch.compile)" in skip
    assert f"Python {py} in torch 2.9 is unknown" in skip and "more" not in skip

    assert not compile_support("9.9.0", environ={}).known  # newer than the compat data
    monkeypatch.delitem(sys.modules, "torchrig.matrix.compat")  # an image without PyYAML: compat.py cannot load
    monkeypatch.delitem(sys.modules, "torchrig.matrix.yamlsafe", raising=False)  # ... nor the YAML loader it uses
    monkeypatch.setitem(sys.modules, "yaml", None)
    none_here = compile_support("2.9.0", environ={})
    assert not none_here.known
    assert none_here.source.startswith("no compat data here (ModuleNotFoundError") and "yaml" in none_here.source


def test_torch_minor() -> None:
    assert torch_minor("2.10.0+cu128") == "2.10"
    assert torch_minor("2.0.1") == "2.0"
