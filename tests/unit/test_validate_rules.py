"""matrix validation as rules (issue 23): each rule names its row and key, a row's problems are all reported once,
and generated rows give a Matrix or problems -- never an exception."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from torchrig.matrix import rules, validate
from torchrig.matrix.compat import load_compat
from torchrig.matrix.model import PLATFORMS
from torchrig.matrix.row import ENV_KEYS, Row
from torchrig.matrix.validate import Validator

ROOT = Path(__file__).resolve().parents[2]
SHIPPED: dict[str, Any] = yaml.safe_load((ROOT / "matrix.yaml").read_text())
COMPAT = load_compat()
VALUES = [None, 1, 3.1, True, [], {}, ["x"], "", "2.0.1", "2.14.1", "2.15.0", "3.10", "3.15", "11.8", "12.6", "13.2",
          "7.2", "cpu", "cuda", "rocm", "gpu", "https://pypi.org/simple", "ftp://x", "{bogus}", "../x",
          "python:3.12-slim-bookworm", "0.99.0", ["numpy<2"], ["setuptools>=82"], ["torch==2.0.1"],
          {"runtime": 100}, {"runtime": "python:3.9-bullseye"}, {"devel": "x"}, ["linux/arm64"], ["linux/arm"]]
KEYS = [k for k in ENV_KEYS if k != "id"] + ["bogus"]


@st.composite
def _matrices(draw: st.DrawFn) -> dict[str, Any]:
    data = copy.deepcopy(SHIPPED)
    for _ in range(draw(st.integers(1, 3))):
        row = draw(st.sampled_from(data["environments"]))
        key = draw(st.sampled_from(KEYS))
        if draw(st.booleans()) and key in row:
            del row[key]
        else:
            row[key] = copy.deepcopy(draw(st.sampled_from(VALUES)))
    return data


@given(_matrices())
def test_generated_rows_give_a_matrix_or_named_problems(data: dict[str, Any]) -> None:
    v = Validator("m.yaml", ROOT, COMPAT)
    m = v.matrix(data, ROOT / "matrix.yaml")
    ids = {row["id"] for row in data["environments"]}
    if m is None:
        assert v.problems
        assert all(p.startswith("m.yaml: ") and p.split(": ", 2)[1].split(".", 1)[0] in ids for p in v.problems)
        assert len(v.problems) == len(set(v.problems)), "each problem is counted once"
    else:
        by_id = {row["id"]: row for row in data["environments"]}
        for env in m.environments:
            assert env.torch == by_id[env.id]["torch"] and set(env.platforms) <= set(PLATFORMS)


@given(_matrices())
def test_every_rule_returns_problems_that_name_its_row(data: dict[str, Any]) -> None:
    for raw in data["environments"]:
        row = Row(eid=raw["id"], raw=raw, merged={**data["defaults"], **raw}, compat=COMPAT, root=ROOT)
        for stage in (rules.PRECHECK, rules.FIELDS):
            found = [p for rule in stage for p in rule(row)]
            assert all(isinstance(w, str) and isinstance(msg, str) and msg for w, msg in found)
            assert all(w == row.eid or w.startswith(row.eid + ".") for w, _ in found)
            if found:
                break


def test_problems_of_different_rules_are_all_reported() -> None:
    data = copy.deepcopy(SHIPPED)
    cpu = data["environments"][0]
    cpu.update(python="3.13", size_budget_mb={"runtime": -1}, platforms=["linux/arm"])
    v = Validator("m.yaml", ROOT, COMPAT)
    assert v.matrix(data, ROOT / "matrix.yaml") is None
    assert [p.split(": ", 2)[1] for p in v.problems] == ["cpu.python", "cpu.size_budget_mb.runtime", "cpu.platforms"]


def test_the_environment_is_built_once_per_row(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []
    real = validate.Environment  # type: ignore[attr-defined]

    def counting(**kw: Any) -> Any:
        built.append(kw["id"])
        return real(**kw)

    monkeypatch.setattr(validate, "Environment", counting)
    m = Validator("m.yaml", ROOT, COMPAT).matrix(copy.deepcopy(SHIPPED), ROOT / "matrix.yaml")
    assert m is not None and built == list(m.ids)
