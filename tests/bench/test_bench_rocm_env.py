"""ROCm's TF32 / NHWC / MIOpen-DB variables (bench/rocm_env.py) with a fake ROCm torch (torch.version.hip set)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.rocm_env import ROCM_VARS, apply_rocm_env, tf32_problem


def _torch(version: str = "2.9.1+rocm6.4", hip: str | None = "6.4.43482") -> Any:
    return SimpleNamespace(__version__=version, version=SimpleNamespace(hip=hip, cuda=None))


def test_rocm_torch_gets_every_variable_with_the_db_in_the_data_dir(tmp_path: Path) -> None:
    env = {"TORCHRIG_DATA": str(tmp_path), "HOME": "/tmp"}
    info = apply_rocm_env(_torch(), env)
    assert env["HIPBLASLT_ALLOW_TF32"] == "1" and env["PYTORCH_MIOPEN_SUGGEST_NHWC"] == "1"
    assert env["MIOPEN_USER_DB_PATH"] == str(tmp_path / ".cache" / "miopen" / "db")
    assert Path(env["MIOPEN_CUSTOM_CACHE_DIR"]).is_dir()
    assert info["applies"] and set(info["vars"]) == set(ROCM_VARS)
    assert all(v["source"] == "bench/rocm_env.py" for v in info["vars"].values()) and info["notes"] == []


def test_user_values_are_kept_and_a_tf32_off_switch_is_named(tmp_path: Path) -> None:
    env = {"TORCHRIG_DATA": str(tmp_path), "HIPBLASLT_ALLOW_TF32": "0", "MIOPEN_USER_DB_PATH": "/mine"}
    info = apply_rocm_env(_torch(), env)
    assert env["HIPBLASLT_ALLOW_TF32"] == "0" and env["MIOPEN_USER_DB_PATH"] == "/mine"
    assert info["vars"]["HIPBLASLT_ALLOW_TF32"]["source"] == "user"
    assert any("HIPBLASLT_ALLOW_TF32='0'" in n for n in info["notes"])
    assert "plain fp32" in (tf32_problem(_torch(), env) or "")


def test_no_data_dir_or_unwritable_is_recorded_not_fatal(tmp_path: Path) -> None:
    env: dict[str, str] = {"HOME": "/home/me"}
    info = apply_rocm_env(_torch(), env)
    assert "MIOPEN_USER_DB_PATH" not in env and any("HOME=/home/me" in n for n in info["notes"])
    blocker = tmp_path / "file"
    blocker.write_text("")
    env2 = {"TORCHRIG_DATA": str(blocker)}  # a file where the directory should be: not writable as a dir
    info2 = apply_rocm_env(_torch(), env2)
    assert "MIOPEN_USER_DB_PATH" not in env2 and any("throw-away HOME" in n for n in info2["notes"])


def test_cuda_and_cpu_torch_are_left_alone() -> None:
    env: dict[str, str] = {}
    for hip in (None, ""):
        assert apply_rocm_env(_torch("2.14.1+cu130", hip=hip), env)["applies"] is False
        assert tf32_problem(_torch("2.0.1", hip=hip), env) is None
    assert env == {}


@pytest.mark.parametrize(("version", "skips"), [("2.0.1+rocm5.4.2", True), ("2.5.1+rocm6.2", True),
                                                ("2.6.0+rocm6.2.4", False), ("2.10.0+rocm7.0", False)])
def test_tf32_on_rocm_by_release(version: str, skips: bool) -> None:
    problem = tf32_problem(_torch(version), {"HIPBLASLT_ALLOW_TF32": "1"})
    assert (problem is not None) == skips
    if skips:
        assert "pytorch#139869" in (problem or "") and version in (problem or "")


@given(st.text(max_size=20))
def test_any_version_string_decides_without_a_traceback(version: str) -> None:
    out = tf32_problem(_torch(version), {"HIPBLASLT_ALLOW_TF32": "1"})
    assert out is None or "TF32 on ROCm" in out
