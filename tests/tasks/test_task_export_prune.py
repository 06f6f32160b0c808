"""export's pruned CNN (issue 19 item 3): global magnitude pruning, fine-tune, prune.remove, ONNX; the drop bound
and the sparsity counted in the exported file's initializers; bad input."""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tasks.gating import min_paired_heldout, paired_drop_upper, wilson_upper
from tests.tasks.tasks_support import Run
from torchrig.results.records import validate_record

needs_onnx = pytest.mark.skipif(
    importlib.util.find_spec("onnx") is None or importlib.util.find_spec("onnxruntime") is None,
    reason="needs onnx and onnxruntime (nox -s tests installs them)",
)
# A small budget: 1,000 synthetic images, two dense epochs and one fine-tune epoch (about 60 s of CPU time).
SMALL = ["--models", "cnn_pruned", "--exporters", "torchscript", "--device", "cpu", "--width", "8",
         "--prune-train", "1000", "--prune-epochs", "2", "--prune-heldout", "400"]


# ------------------------------------------------------------------------------------- the paired drop bound


@given(n=st.integers(1, 5000), data=st.data())
def test_the_drop_bound_is_above_the_observed_drop_and_ordered(n: int, data: st.DataObject) -> None:
    lost = data.draw(st.integers(0, n))
    gained = data.draw(st.integers(0, n - lost))
    upper = paired_drop_upper(lost, gained, n)
    assert upper >= 100.0 * (lost - gained) / n - 1e-9
    if lost < n - gained:  # one more lost example never lowers the bound, one more gained never raises it
        assert paired_drop_upper(lost + 1, gained, n) >= upper
        assert paired_drop_upper(lost, gained + 1, n) <= upper


@given(d=st.floats(0.5, 50.0))
def test_min_paired_heldout_is_the_least_n_for_half_the_allowance(d: float) -> None:
    n = min_paired_heldout(d)
    assert paired_drop_upper(0, 0, n) <= d / 2
    assert n == 1 or paired_drop_upper(0, 0, n - 1) > d / 2


def test_the_stated_paired_numbers() -> None:
    assert min_paired_heldout(5.0) == 106  # tasks/gating.py and docs/tasks.md
    assert wilson_upper(0.0, 1000) == pytest.approx(2.7055 / 1002.7055, rel=1e-3)  # z^2 / (n + z^2)
    with pytest.raises(ValueError):
        paired_drop_upper(3, 3, 5)


# -------------------------------------------------------------------------------- sparsity in an ONNX graph


_OPS = st.sampled_from(["Conv", "Gemm", "MatMul", "Add", "Mul"])


@needs_onnx
@given(st.lists(st.tuples(_OPS, st.integers(1, 4), st.integers(1, 6), st.integers(1, 3), st.data()),
                min_size=1, max_size=6))
def test_onnx_sparsity_counts_the_weights_linear_nodes_read(
        tmp_path_factory: pytest.TempPathFactory, specs: list[tuple[str, int, int, int, st.DataObject]]) -> None:
    """Zeros in the >= 2-D float initializers of Conv/Gemm/MatMul count; biases, Add/Mul operands do not."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    from tasks.export_prune import onnx_sparsity

    inits, nodes = [], []
    want_zeros = want_total = 0
    for i, (op, rows, cols, rank_extra, data) in enumerate(specs):
        shape = (rows, cols) + (1,) * (rank_extra - 1) if op == "Conv" else (rows, cols)
        arr = np.ones(shape, dtype=np.float32)
        flat = arr.reshape(-1)
        zero_at = data.draw(st.sets(st.integers(0, flat.size - 1)))
        flat[list(zero_at)] = 0.0
        bias = np.zeros((rows,), dtype=np.float32)  # 1-D: a bias, never counted
        inits += [numpy_helper.from_array(arr, f"w{i}"), numpy_helper.from_array(bias, f"b{i}")]
        nodes.append(helper.make_node(op, [f"x{i}", f"w{i}", f"b{i}"][: 3 if op in ("Conv", "Gemm") else 2],
                                      [f"y{i}"]))
        if op in ("Conv", "Gemm", "MatMul"):
            want_zeros += len(zero_at)
            want_total += flat.size
    graph = helper.make_graph(nodes, "g", [], [], initializer=inits)
    path = tmp_path_factory.mktemp("onnx") / "m.onnx"
    onnx.save(helper.make_model(graph), str(path))
    assert onnx_sparsity(path) == (want_zeros, want_total)


# ---------------------------------------------------------------------------------------------- the task


@pytest.fixture(scope="module")
def pruned_run(tmp_path_factory: pytest.TempPathFactory, cifar_dir: Path) -> tuple[Run, Path]:
    from tests.tasks.tasks_support import run_module

    out = tmp_path_factory.mktemp("pruned-out")
    results = tmp_path_factory.mktemp("results-export-pruned")
    r = run_module("tasks.export", *SMALL, "--data", str(cifar_dir), "--out", str(out), "--results", str(results),
                   results=results)
    return r, out


@pytest.mark.torch
@needs_onnx
def test_pruned_cnn_passes_its_gates_and_records_what_pruning_did(pruned_run: tuple[Run, Path]) -> None:
    r, out = pruned_run
    assert r.rc == 0, r.stdout + r.stderr
    rec = r.record()
    assert validate_record(rec) == [] and rec["verdict"] == "pass"
    gates = {g["metric"]: g["passed"] for g in rec["gates"]}
    for g in ("cnn_dense_accuracy", "cnn_pruned_accuracy_drop_upper95", "cnn_pruned_onnx_sparsity",
              "cnn_pruned_torchscript_checker", "cnn_pruned_torchscript_cpu_max_abs_err",
              "cnn_pruned_torchscript_cpu_dynamic_batch"):
        assert gates[g], g
    assert abs(r.metric("cnn_pruned_torch_sparsity") - 0.7) < 1e-3
    assert r.metric("cnn_pruned_onnx_sparsity") >= 0.695
    assert r.metric("cnn_pruned_accuracy_drop") == pytest.approx(
        r.metric("cnn_dense_accuracy") - r.metric("cnn_pruned_accuracy"))
    assert r.metric("cnn_pruned_accuracy_drop_upper95") >= r.metric("cnn_pruned_accuracy_drop")
    # Raw sizes stay (the zeros are stored as floats); compressed, the pruned file is clearly smaller.
    assert r.metric("cnn_pruned_onnx_bytes") == pytest.approx(r.metric("cnn_dense_onnx_bytes"), rel=0.05)
    assert r.metric("cnn_pruned_onnx_zlib_bytes") < 0.7 * r.metric("cnn_dense_onnx_zlib_bytes")
    assert r.metric("cnn_dense_onnx_cpu_ms") > 0 and r.metric("cnn_pruned_onnx_cpu_ms") > 0
    prune = rec["config"]["resolved"]["cnn_pruned"]["prune"]
    assert prune["sparsity"] == 0.7 and prune["heldout_images"] == 400
    assert (out / "cnn_pruned_torchscript.onnx").is_file() and (out / "cnn_dense_torchscript.onnx").is_file()


@pytest.mark.torch
@needs_onnx
def test_a_file_that_lost_its_zeros_is_caught_in_the_onnx_count(pruned_run: tuple[Run, Path],
                                                                tmp_path: Path) -> None:
    """The torch model is sparse either way: only counting the file's initializers sees a densified export."""
    from tasks.export_onnx import perturb_one_weight
    from tasks.export_prune import onnx_sparsity

    r, out = pruned_run
    assert r.rc == 0, r.stdout + r.stderr
    broken = tmp_path / "broken.onnx"
    shutil.copy(out / "cnn_pruned_torchscript.onnx", broken)
    perturb_one_weight(broken)  # noise on the largest conv weight: its zeros are gone
    zeros, total = onnx_sparsity(broken)
    assert zeros / total < 0.695 <= r.metric("cnn_pruned_torch_sparsity")


@pytest.mark.parametrize(("args", "names"), [
    (["--prune-sparsity", "1.5"], "--prune-sparsity"),
    (["--prune-sparsity", "0"], "--prune-sparsity"),
    (["--prune-train", "0"], "--prune-train"),
])
def test_bad_pruning_options_are_bad_input(run_task: Callable[..., Run], args: list[str], names: str) -> None:
    r = run_task("export", "--models", "cnn_pruned", "--device", "cpu", *args)
    assert r.rc == 2, r.stdout + r.stderr
    assert names in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert r.records() == []


@pytest.mark.torch
@needs_onnx
def test_too_few_heldout_images_for_the_drop_gate_is_refused(run_task: Callable[..., Run], cifar_dir: Path) -> None:
    r = run_task("export", *SMALL[:-2], "--prune-heldout", "50", "--data", str(cifar_dir))
    assert r.rc == 2, r.stdout + r.stderr
    assert "106" in r.stderr and "--prune-heldout" in r.stderr and "Traceback" not in r.stderr
