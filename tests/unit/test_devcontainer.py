"""devcontainer.json: one per environment, in step with matrix.yaml, with the same flags as `torchrig dev`."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torchrig.__main__ import main
from torchrig.matrix import Environment, load_matrix
from torchrig.matrix.devcontainer import (
    IMAGE_USER,
    RENDER_GID_FALLBACK,
    RENDER_GID_PLACEHOLDER,
    devcontainer_files,
    render_devcontainer,
    stale_devcontainers,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _matrix_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    # The committed files name the registry in matrix.yaml, not a developer's $TORCHRIG_REGISTRY.
    monkeypatch.delenv("TORCHRIG_REGISTRY", raising=False)


def _load(text: str) -> dict[str, Any]:
    """devcontainer.json is JSON with comments; ours has only whole-line ones."""
    data: dict[str, Any] = json.loads("\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("//")))
    return data


def test_committed_devcontainers_match_the_generator() -> None:
    problems = stale_devcontainers(load_matrix(ROOT / "matrix.yaml"))
    assert problems == [], "\n".join(problems) + "\nrun `torchrig devcontainer --all` and commit the result"


def test_every_environment_has_one_and_it_names_its_immutable_tag() -> None:
    matrix = load_matrix(ROOT / "matrix.yaml")
    files = devcontainer_files(matrix)
    assert [f.env_id for f in files] == list(matrix.ids)
    for f in files:
        env = matrix.get(f.env_id)
        cfg = _load(f.text)
        assert f.path == ROOT / ".devcontainer" / env.id / "devcontainer.json"
        assert cfg["image"] == env.tags("devel").immutable
        assert cfg["workspaceFolder"] == "/workspace"
        assert cfg["remoteUser"] == IMAGE_USER
        assert "--shm-size=8g" in cfg["runArgs"]
        assert "ms-python.python" in cfg["customizations"]["vscode"]["extensions"]
        assert cfg["containerEnv"]["TORCHRIG_ENV_ID"] == env.id


def test_gpu_flags_follow_the_accelerator() -> None:
    matrix = load_matrix(ROOT / "matrix.yaml")
    by_accel = {e.accelerator: _load(render_devcontainer(e))["runArgs"] for e in matrix.environments}
    assert not any(a.startswith(("--gpus", "--device", "--group-add")) for a in by_accel["cpu"])
    assert "--gpus=all" in by_accel["cuda"]
    rocm = by_accel["rocm"]
    assert {"--device=/dev/kfd", "--device=/dev/dri", "--group-add=video", "--security-opt=seccomp=unconfined",
            f"--group-add={RENDER_GID_PLACEHOLDER}"} <= set(rocm)
    assert "--gpus=all" not in rocm


def test_the_generated_files_carry_no_host_specifics() -> None:
    # A committed file must not hold this machine's UID, a container name or `--rm` (VS Code manages those).
    for f in devcontainer_files(load_matrix(ROOT / "matrix.yaml")):
        args = _load(f.text)["runArgs"]
        assert not [a for a in args if a.split("=", 1)[0] in ("--rm", "--name", "--user", "--interactive", "--tty")]


def test_cli_regenerates_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(ROOT / "matrix.yaml", tmp_path / "matrix.yaml")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "Dockerfile").write_text("FROM scratch\n")
    matrix_arg = ["--matrix", str(tmp_path / "matrix.yaml")]
    assert main([*matrix_arg, "devcontainer", "--all", "--check"]) == 1
    assert main([*matrix_arg, "devcontainer", "--all"]) == 0
    assert main([*matrix_arg, "devcontainer", "--all", "--check"]) == 0
    cpu = tmp_path / ".devcontainer" / "cpu" / "devcontainer.json"
    cpu.write_text(cpu.read_text().replace("8g", "1g"))
    (tmp_path / ".devcontainer" / "gone").mkdir()
    (tmp_path / ".devcontainer" / "gone" / "devcontainer.json").write_text("{}")
    capsys.readouterr()
    assert main([*matrix_arg, "devcontainer", "--all", "--check"]) == 1
    out = capsys.readouterr().out
    assert "cpu/devcontainer.json: differs" in out and "no environment 'gone'" in out
    assert main([*matrix_arg, "devcontainer", "cpu"]) == 0
    assert "8g" in cpu.read_text()
    assert main([*matrix_arg, "devcontainer"]) == 2  # neither names nor --all


_LOCAL_ENV = re.compile(r"\$\{localEnv:(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<default>[^}]*))?\}")


def _substitute(arg: str, environ: dict[str, str]) -> str:
    """What VS Code / the Dev Containers CLI does with ``${localEnv:NAME:default}`` when it starts the container."""
    return _LOCAL_ENV.sub(lambda m: environ.get(m["name"], m["default"] or ""), arg)


_ROWS = load_matrix(ROOT / "matrix.yaml").environments


@settings(max_examples=80, deadline=None)
@given(env=st.sampled_from(_ROWS), gid=st.none() | st.integers(min_value=0, max_value=2**32 - 2))
def test_no_run_arg_repeats_for_any_row_and_render_gid(env: Environment, gid: int | None) -> None:
    environ = {} if gid is None else {"TORCHRIG_RENDER_GID": str(gid)}
    args = [_substitute(a, environ) for a in _load(render_devcontainer(env))["runArgs"]]
    repeated = sorted({a for a in args if args.count(a) > 1})
    assert repeated == [], f"{env.id} with TORCHRIG_RENDER_GID={gid}: {repeated} given more than once"
    if env.accelerator == "rocm":
        groups = [a.split("=", 1)[1] for a in args if a.startswith("--group-add=")]
        assert groups == ["video", str(gid) if gid is not None else RENDER_GID_FALLBACK]
        assert all(g == "video" or g.isdigit() for g in groups)  # a group name the image may lack fails the start


def test_rocm_without_render_gid_joins_video_once() -> None:
    # Regression: the committed rocm file said `--group-add=video` twice when TORCHRIG_RENDER_GID was unset.
    text = (ROOT / ".devcontainer" / "rocm" / "devcontainer.json").read_text(encoding="utf-8")
    args = [_substitute(a, {}) for a in _load(text)["runArgs"]]
    assert args.count("--group-add=video") == 1
    assert f"--group-add={RENDER_GID_FALLBACK}" in args
