"""compat.yaml runtime_pins: what old torch releases need at run time that their metadata does not pin (setuptools
with pkg_resources for torch < 2.2, numpy 1.x for torch < 2.3); validate refuses extras that contradict it."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from torchrig.matrix.compat import load_compat
from torchrig.matrix.load import load_matrix
from torchrig.matrix.validate import runtime_pin_problems

ROOT = Path(__file__).resolve().parents[2]


def test_the_recorded_pins() -> None:
    c = load_compat()
    assert [p.requirement for p in c.pins_for("2.0.1")] == ["setuptools<82", "numpy<2"]
    assert [p.requirement for p in c.pins_for("2.1.2")] == ["setuptools<82", "numpy<2"]
    assert [p.requirement for p in c.pins_for("2.2.0")] == ["numpy<2"]  # 2.2 no longer imports pkg_resources
    assert c.pins_for("2.3.0") == () and c.pins_for("2.14.1+cu130") == ()


def test_every_existing_row_validates_against_its_pins() -> None:
    c = load_compat()
    for env in load_matrix(ROOT / "matrix.yaml").environments:
        assert not runtime_pin_problems(env.torch, env.extras, c), env.id


def test_the_issues_example_is_refused_with_the_fix() -> None:
    (msg,) = runtime_pin_problems("2.0.1", ["setuptools>=82"], load_compat())
    assert "'setuptools>=82' contradicts 'setuptools<82'" in msg and "pkg_resources" in msg
    assert "drop the pin" in msg and "below 82" in msg


ops = st.sampled_from(["==", ">=", ">", "<", "<=", "~=", "!="])
versions = st.tuples(st.integers(60, 90), st.integers(0, 3)).map(lambda t: f"{t[0]}.{t[1]}")
torches = st.tuples(st.just(2), st.integers(0, 15), st.integers(0, 3)).map(lambda t: f"{t[0]}.{t[1]}.{t[2]}")


@given(torch=torches, op=ops, version=versions, name=st.sampled_from(["setuptools", "Setuptools", "numpy"]))
def test_a_pin_is_refused_exactly_when_it_forces_a_release_at_or_above_the_cap(torch: str, op: str, version: str,
                                                                              name: str) -> None:
    req = f"{name}{op}{version}"
    problems = runtime_pin_problems(torch, [req, "transformers==4.40.2"], load_compat())
    minor = tuple(int(x) for x in torch.split(".")[:2])
    major_v = int(version.partition(".")[0])
    if name.lower() == "setuptools":
        expect = minor < (2, 2) and op in ("==", ">=", ">", "~=") and major_v >= 82
    else:  # numpy 60.x .. 90.x: every lower bound is above 2
        expect = minor < (2, 3) and op in ("==", ">=", ">", "~=")
    assert bool(problems) == expect, (req, torch, problems)
    for msg in problems:
        assert repr(req) in msg and "compat.yaml runtime_pins" in msg
