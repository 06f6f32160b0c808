"""matrix: onnx / onnxruntime / numpy pins in an environment's extras must fit its torch's numpy."""

from __future__ import annotations

from pathlib import Path

import pytest

from torchrig.errors import ConfigurationError
from torchrig.matrix import load_matrix
from torchrig.matrix.onnx_extras import onnx_extras_problems

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("torch", "extras"), [
    ("2.0.1", ["numpy<2", "onnx==1.16.2", "onnxruntime==1.18.1"]),
    ("2.0.1", ["numpy<2", "onnxruntime==1.32.0"]),  # newer onnxruntime still runs on numpy 1.x
    ("2.14.1", ["onnx==1.23.2", "onnxruntime==1.32.0", "onnxscript==0.7.2"]),
    ("2.14.1", ["numpy<2", "onnxruntime==1.18.1"]),
    ("2.1.0", ["transformers==4.40.2"]),  # no onnx: not this check's business
])
def test_compatible_pins_pass(torch: str, extras: list[str]) -> None:
    assert onnx_extras_problems(torch, extras) == []


@pytest.mark.parametrize(("torch", "extras", "needle"), [
    ("2.0.1", ["onnxruntime==1.18.1"], "add 'numpy<2'"),
    ("2.0.1", ["numpy>=2", "onnx==1.17.0"], "pin 'numpy<2'"),
    ("2.14.1", ["onnxruntime==1.18.1"], "onnxruntime>=1.19"),
    ("2.9.1", ["onnx==1.16.2"], "onnx>=1.17"),
    ("2.14.1", ["onnxruntime-gpu<1.19"], "onnxruntime-gpu>=1.19"),
])
def test_incompatible_pins_are_named(torch: str, extras: list[str], needle: str) -> None:
    problems = onnx_extras_problems(torch, extras)
    assert problems and needle in " ".join(problems)


def test_a_row_pinning_a_numpy1_onnxruntime_on_numpy2_is_refused(tmp_path: Path) -> None:
    text = (ROOT / "matrix.yaml").read_text().replace('"onnxruntime==1.32.0"', '"onnxruntime==1.18.1"')
    (tmp_path / "matrix.yaml").write_text(text)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "Dockerfile").write_text("FROM scratch\n")
    with pytest.raises(ConfigurationError) as e:
        load_matrix(tmp_path / "matrix.yaml")
    assert "cuda130.extras" in str(e.value) and "onnxruntime>=1.19" in str(e.value)


def test_the_shipped_matrix_pins_fit() -> None:
    load_matrix(ROOT / "matrix.yaml")
