"""matrix: onnx / onnxruntime / numpy pins in an environment's extras must fit its torch's numpy."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from torchrig.errors import ConfigurationError
from torchrig.matrix import load_matrix
from torchrig.matrix.onnx_extras import onnx_extras_problems, onnxruntime_build_advice

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
    assert "rocm64.extras" in str(e.value) and "onnxruntime>=1.19" in str(e.value)


def test_the_shipped_matrix_pins_fit() -> None:
    load_matrix(ROOT / "matrix.yaml")


@pytest.mark.parametrize(("torch", "cuda", "extras", "problem", "warning"), [
    ("2.0.1", "11.8", ["onnxruntime-gpu==1.18.1"], "", ""),
    ("2.0.1", "11.8", ["onnxruntime==1.18.1"], "", "onnxruntime-gpu==1.18.1 fits"),
    ("2.1.0", "12.1", ["onnxruntime==1.18.1"], "", ""),  # cuDNN 8 on CUDA 12: no PyPI GPU build fits
    ("2.1.0", "12.1", ["onnxruntime-gpu==1.20.0"], "cuDNN 9", ""),
    ("2.14.1", "12.6", ["onnxruntime-gpu==1.31.1"], "use onnxruntime-gpu==1.26.0", ""),
    ("2.14.1", "13.0", ["onnxruntime-gpu==1.26.0"], "CUDA 12", ""),
    ("2.14.1", "13.0", ["onnxruntime-gpu==1.31.1"], "", ""),
])
def test_onnxruntime_gpu_builds_fit_the_rows_cuda(torch: str, cuda: str, extras: list[str], problem: str,
                                                  warning: str) -> None:
    problems, warnings = onnxruntime_build_advice(torch, cuda, extras)
    assert (problem in " ".join(problems)) if problem else problems == []
    assert (warning in " ".join(warnings)) if warning else warnings == []


@given(torch_minor=st.integers(0, 14), cuda_major=st.sampled_from([11, 12, 13]), cuda_minor=st.integers(0, 9),
       ort_minor=st.integers(10, 40))
def test_a_gpu_build_is_refused_exactly_when_its_cuda_or_cudnn_differs(torch_minor: int, cuda_major: int,
                                                                       cuda_minor: int, ort_minor: int) -> None:
    torch, cuda = f"2.{torch_minor}.0", f"{cuda_major}.{cuda_minor}"
    built_major = 11 if ort_minor < 19 else 12 if ort_minor < 27 else 13
    built_cudnn = 8 if ort_minor < 19 else 9
    cudnn = 9 if torch_minor >= 4 else 8
    problems, _ = onnxruntime_build_advice(torch, cuda, [f"onnxruntime-gpu==1.{ort_minor}.0"])
    assert bool(problems) == (built_major != cuda_major or built_cudnn != cudnn)


def test_the_shipped_cuda_rows_install_a_gpu_onnxruntime_where_one_fits() -> None:
    matrix = load_matrix(ROOT / "matrix.yaml")
    for env in matrix.environments:
        if env.accelerator == "cuda":
            problems, warnings = onnxruntime_build_advice(env.torch, env.cuda, list(env.extras))
            assert problems == [] and warnings == [], env.id
