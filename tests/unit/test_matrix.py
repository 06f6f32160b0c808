"""matrix.yaml: the shipped file validates, every malformed file is rejected with the message a user can act on."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from torchrig.__main__ import main
from torchrig.errors import ConfigurationError, UsageError
from torchrig.matrix import load_matrix
from torchrig.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
BAD = sorted((Path(__file__).parent / "matrices" / "bad").glob("*.yaml"))


def _expectations(path: Path) -> list[str]:
    return [line.split("expect:", 1)[1].strip() for line in path.read_text().splitlines()
            if line.startswith("# expect:")]


def _in_project(tmp_path: Path, source: Path) -> Path:
    """Copy a matrix into a directory that has the default images/Dockerfile, as a checkout does."""
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "Dockerfile").write_text("FROM scratch\n")
    dest = tmp_path / "matrix.yaml"
    shutil.copy(source, dest)
    return dest


def test_shipped_matrix_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(ROOT / "matrix.yaml")]) == 0
    out = capsys.readouterr().out
    assert "valid (" in out


def test_shipped_matrix_has_the_required_rows() -> None:
    m = load_matrix(ROOT / "matrix.yaml")
    cpu, cu118, cu121, rocm = (m.get(i) for i in ("cpu", "cuda118", "cuda121", "rocm"))
    assert (cpu.torch, cpu.accelerator) == ("2.0.1", "cpu")
    assert (cu118.torch, cu118.flavour) == ("2.0.1", "cu118")
    assert (cu121.torch, cu121.flavour) == ("2.1.0", "cu121")  # the first torch with a cu121 build
    assert (rocm.torch, rocm.flavour) == ("2.0.1", "rocm5.4.2")
    cuda_rows = [e for e in m.environments if e.accelerator == "cuda"]
    newest = max(cuda_rows, key=lambda e: tuple(map(int, e.torch.split("."))))
    assert newest.torch != "2.0.1" and any(e.accelerator == "rocm" and e.id != "rocm" for e in m.environments)
    assert all(e.torchvision for e in m.environments)


def test_there_are_at_least_15_malformed_matrices() -> None:
    assert len(BAD) >= 15
    assert all(_expectations(p) for p in BAD), "every malformed matrix states the message it expects"


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_malformed_matrix_is_rejected_with_its_message(
    path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    matrix = _in_project(tmp_path, path)
    assert main(["validate", str(matrix)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert str(matrix) in err, "each problem names the file"
    for expected in _expectations(path):
        assert expected in err


def test_every_problem_is_reported_not_only_the_first(tmp_path: Path) -> None:
    matrix = _in_project(tmp_path, Path(__file__).parent / "matrices" / "bad" / "many_problems.yaml")
    with pytest.raises(ConfigurationError) as exc:
        load_matrix(matrix)
    assert len(exc.value.problems) == 4


def test_missing_file_gets_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_validate_runs_as_a_console_command_without_traceback(tmp_path: Path) -> None:
    matrix = _in_project(tmp_path, Path(__file__).parent / "matrices" / "bad" / "cu121_on_torch20.yaml")
    proc = subprocess.run([sys.executable, "-m", "torchrig", "validate", str(matrix)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert proc.returncode == 2
    assert "cu121 needs torch >= 2.1.0" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_other_commands_validate_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    matrix = _in_project(tmp_path, Path(__file__).parent / "matrices" / "bad" / "python_out_of_range.yaml")
    assert main(["--matrix", str(matrix), "tags", "cpu"]) == 2
    assert "has wheels for Python 3.8-3.11" in capsys.readouterr().err


def test_unknown_environment_suggests_the_closest(capsys: pytest.CaptureFixture[str]) -> None:
    m = load_matrix(ROOT / "matrix.yaml")
    with pytest.raises(UsageError, match="Perhaps you meant 'cuda118'"):
        m.get("cuda18")
    assert main(["--matrix", str(ROOT / "matrix.yaml"), "tags", "cuda18"]) == 2


def test_parsed_objects_are_frozen() -> None:
    env = load_matrix(ROOT / "matrix.yaml").get("cpu")
    with pytest.raises(AttributeError):
        env.torch = "2.1.0"  # type: ignore[misc]


def test_torchvision_is_derived_and_defaults_merge() -> None:
    m = load_matrix(ROOT / "matrix.yaml")
    assert m.get("cpu").torchvision == "0.15.2"
    assert m.get("cuda121").torchvision == "0.16.0"
    # targets merge key by key: the runtime base comes from defaults, the devel base from the row
    cu118 = m.get("cuda118")
    assert cu118.targets["runtime"] == "python:3.10-slim-bookworm"
    assert cu118.targets["devel"] == "nvidia/cuda:11.8.0-devel-ubuntu22.04"
    assert cu118.index == "https://download.pytorch.org/whl/cu118"
    assert cu118.min_driver() == "520.61.05"


def test_tags_are_decided_in_one_place() -> None:
    env = load_matrix(ROOT / "matrix.yaml", settings=Settings.from_environ({}, matrix=ROOT / "matrix.yaml")).get(
        "cuda118")
    assert env.tags().immutable == "ghcr.io/torchrig/torchrig:2.0.1-cu118-py3.10"
    assert env.tags().alias == "ghcr.io/torchrig/torchrig:cuda118"
    assert env.tags("devel").immutable == "ghcr.io/torchrig/torchrig:2.0.1-cu118-py3.10-devel"
    assert env.tags("devel").alias == "ghcr.io/torchrig/torchrig:cuda118-devel"


def test_registry_override_is_read_once_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """$TORCHRIG_REGISTRY replaces matrix.yaml's registry when the matrix is loaded, not on every tags() call."""
    monkeypatch.setenv("TORCHRIG_REGISTRY", "127.0.0.1:5000/team")
    env = load_matrix(ROOT / "matrix.yaml").get("cuda118")
    assert env.tags().immutable == "127.0.0.1:5000/team/torchrig:2.0.1-cu118-py3.10"
    monkeypatch.setenv("TORCHRIG_REGISTRY", "elsewhere:1")
    assert env.tags().immutable == "127.0.0.1:5000/team/torchrig:2.0.1-cu118-py3.10", "already decided"
    local = load_matrix(ROOT / "matrix.yaml", settings=Settings.from_environ({"TORCHRIG_REGISTRY": ""},
                                                                            matrix=ROOT / "matrix.yaml"))
    assert local.get("cuda118").tags().alias == "torchrig:cuda118"


def test_warnings_name_known_limitations() -> None:
    m = load_matrix(ROOT / "matrix.yaml")
    assert any(w.startswith("cpu: torch.compile in torch 2.0 supports Python <= 3.10") for w in m.warnings)


def test_adding_an_environment_is_a_few_lines(tmp_path: Path) -> None:
    text = (ROOT / "matrix.yaml").read_text() + (
        "\n  - id: cuda124\n    accelerator: cuda\n    cuda: \"12.4\"\n    torch: \"2.5.1\"\n"
    )
    shutil.copytree(ROOT / "images", tmp_path / "images")
    (tmp_path / "matrix.yaml").write_text(text)
    env = load_matrix(tmp_path / "matrix.yaml").get("cuda124")
    assert (env.torchvision, env.python, env.flavour) == ("0.20.1", "3.10", "cu124")
    assert env.targets["runtime"] == "python:3.10-slim-bookworm"


def test_ci_matrix_lists_every_environment(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--matrix", str(ROOT / "matrix.yaml"), "ci-matrix"]) == 0
    data = json.loads(capsys.readouterr().out)
    m = load_matrix(ROOT / "matrix.yaml")
    assert [x["env"] for x in data["include"]] == list(m.ids)
    for entry in data["include"]:
        env = m.get(entry["env"])
        assert entry["torch"] == env.torch and entry["accelerator"] == env.accelerator
        assert ("nvidia" in entry["runs-on"]) == (env.accelerator == "cuda")
        assert ("amd" in entry["runs-on"]) == (env.accelerator == "rocm")


def test_a_registry_override_docker_would_refuse_is_a_configuration_error() -> None:
    settings = Settings.from_environ({"TORCHRIG_REGISTRY": "https://localhost:5000"}, matrix=ROOT / "matrix.yaml")
    with pytest.raises(ConfigurationError, match=r"TORCHRIG_REGISTRY: 'https://localhost:5000' is not a registry"):
        load_matrix(ROOT / "matrix.yaml", settings=settings)


def test_platforms_default_to_amd64_and_keep_the_rows_order(tmp_path: Path) -> None:
    m = load_matrix(ROOT / "matrix.yaml")
    assert all(e.platforms and set(e.platforms) <= {"linux/amd64", "linux/arm64"} for e in m.environments)
    text = (ROOT / "matrix.yaml").read_text() + (
        "\n  - id: cuda124\n    accelerator: cuda\n    cuda: \"12.4\"\n    torch: \"2.5.1\"\n"
    )
    shutil.copytree(ROOT / "images", tmp_path / "images")
    (tmp_path / "matrix.yaml").write_text(text)
    assert load_matrix(tmp_path / "matrix.yaml").get("cuda124").platforms == ("linux/amd64",)
