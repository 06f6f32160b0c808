"""Gates that mean something (issue 17 item 5): data too small, too skewed or of one class is refused, exit 2."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.gating import check_heldout, min_heldout, min_regression_points, wilson_lower
from tasks.sentiment_data import read_data_file
from torchrig.errors import UsageError


def test_the_stated_minimums() -> None:
    """The numbers docs/tasks.md and the task docstrings state."""
    assert (min_heldout(88.0), min_heldout(90.0), min_heldout(75.0)) == (80, 98, 33)
    assert min_regression_points(0.01, 0.01) == 47
    assert min_regression_points(0.0, 0.01) == 30


@given(g=st.floats(50.0, 99.0))
def test_min_heldout_is_the_least_n_that_can_clear_the_gate(g: float) -> None:
    n = min_heldout(g)
    p = (1 + g / 100) / 2
    assert wilson_lower(p, n) >= g / 100
    assert n == 1 or wilson_lower(p, n - 1) < g / 100
    assert min_heldout(min(99.5, g + 0.5)) >= n  # a stricter gate never needs fewer examples


def test_wilson_lower_matches_a_known_value() -> None:
    # 90 of 100 correct, z = 1.6449 (z^2 = 2.7055): centre (0.9 + 0.013528) / 1.027055 = 0.88946, half-width
    # 1.6449 * sqrt(0.0009 + 0.0000676) / 1.027055 = 0.04982 -> 0.8396
    assert math.isclose(wilson_lower(0.9, 100), 0.8396, abs_tol=1e-4)


_labels = st.lists(st.integers(0, 2), max_size=200)


@settings(max_examples=150)
@given(train=_labels, test=_labels, k=st.integers(2, 3), gate=st.sampled_from([75.0, 88.0, 90.0]))
def test_held_out_labels_are_refused_or_enough(train: list[int], test: list[int], k: int, gate: float) -> None:
    """Generated small/skewed splits: a UsageError naming the minimum, or data that truly meets it."""
    test = [y % k for y in test]
    train = [y % k for y in train]
    classes = [f"c{i}" for i in range(k)]
    n_min = min_heldout(gate)
    try:
        check_heldout("--data x.csv", gate, train, test, classes, fix="add rows")
    except UsageError as e:
        assert str(e).startswith("--data x.csv: cannot be gated (") and f"at least {n_min} held-out" in str(e)
        assert str(e).endswith("; add rows")
        return
    held = Counter(test)
    assert len(test) >= n_min and len(held) >= 2 and len(set(train)) >= 2
    assert all(held[c] >= math.ceil(n_min / (2 * k)) for c in range(k))
    assert max(held.values()) / len(test) < gate / 100


def _csv(rows: list[tuple[str, str, str]]) -> str:
    return "text,label,split\n" + "".join(f"{t},{y},{s}\n" for t, y, s in rows)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(2, 150), shares=st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0)), with_split=st.booleans(),
       tsv=st.booleans())
def test_generated_files_are_refused_or_gated_on_enough(tmp_path: Path, n: int, shares: tuple[float, float],
                                                        with_split: bool, tsv: bool) -> None:
    """The BERT task's path for --data FILE: the reader, then the gate check; never a pass on a handful."""
    pos_share, test_share = shares
    n_pos = round(n * pos_share)
    rows = [(f"sentence number {i}", "pos" if i < n_pos else "neg",
             ("test" if (i * 7919) % 100 < test_share * 100 else "train") if with_split else "") for i in range(n)]
    path = tmp_path / ("d.tsv" if tsv else "d.csv")
    text = _csv(rows)
    path.write_text(text.replace(",", "\t") if tsv else text)
    try:
        data = read_data_file(path)
        check_heldout(f"--data {path}", 88.0, [y for _, y in data.train], [y for _, y in data.test], data.labels,
                      fix="add rows")
    except UsageError as e:
        assert str(path) in str(e)
        return
    assert len(data.test) >= 80 and min(Counter(y for _, y in data.test).values()) >= 20


def test_the_three_row_csv_is_refused_by_the_bert_task(run_task, tmp_path: Path) -> None:
    """The issue's example: trains on 2, holds out 1 and used to pass at 100 %."""
    f = tmp_path / "three.csv"
    f.write_text("text,label\ngreat film,pos\nawful film,neg\nlovely,pos\n")
    r = run_task("bert_classifier", "--device", "cpu", "--data", str(f))
    assert r.rc == 2, r.stdout + r.stderr
    assert f"--data {f}: cannot be gated (1 held-out example(s)" in r.stderr
    assert "needs at least 80 held-out examples, 20 of each class" in r.stderr
    assert "Traceback" not in r.stderr and r.records() == []


@pytest.mark.torch
def test_a_small_stand_in_test_set_is_refused_by_the_cnn_task(run_task, tmp_path: Path) -> None:
    r = run_task("cifar_cnn", "--device", "cpu", "--data", str(tmp_path), "--mirror", "http://127.0.0.1:9/x",
                 "--train-size", "500", "--test-size", "60")
    assert r.rc == 2, r.stdout + r.stderr
    assert "cannot be gated (60 held-out example(s))" in r.stderr and "at least 98 held-out" in r.stderr
    assert "Traceback" not in r.stderr and r.records() == []


def test_too_few_regression_points_are_refused(run_task) -> None:
    r = run_task("regression", "--device", "cpu", "--samples", "10")
    assert r.rc == 2, r.stdout + r.stderr
    assert "10 data points cannot gate" in r.stderr and "at least 47 points" in r.stderr
    assert "Traceback" not in r.stderr and r.records() == []
