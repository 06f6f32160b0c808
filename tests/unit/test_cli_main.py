"""The CLI's one error handler: a closed pipe (``torchrig ... | head``) ends quietly, a path the system cannot look
up (too long a name, a symlink loop) is exit 2 naming it, any other system error exit 1 with a message; never a
traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_a_reader_that_leaves_early_gets_no_traceback(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "images", tmp_path / "images")
    # enough rows that `envs` prints more than a pipe holds (64 KiB), so the write after `head` left fails, and
    # fewer bytes than matrix.yaml's size cap (128 KiB, docs/limits.md)
    rows = "".join(f'  - id: e{i}\n    accelerator: cpu\n    torch: "2.0.1"\n    python: "3.11"\n'
                   f"    description: {'x' * 200}\n" for i in range(380))
    (tmp_path / "matrix.yaml").write_text(
        "defaults:\n  index: https://download.pytorch.org/whl/{flavour}\n"
        "  targets: {runtime: 'python:{python}-slim-bookworm'}\nenvironments:\n" + rows)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(f"{sys.executable} -m torchrig --matrix {tmp_path / 'matrix.yaml'} envs | head -c 1",
                          shell=True, capture_output=True, text=True, timeout=120, env=env)
    assert proc.stdout == "e"
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


_LONG = "a" * 300


@pytest.mark.parametrize("argv", [
    ["fleet", "status", "cpu", "--results", _LONG], ["fleet", "collect", "cpu", "--results", _LONG, "--timeout", "1"],
    ["report", _LONG], ["validate", _LONG], ["--matrix", _LONG, "envs"], ["report", ".", "--out", _LONG + "/x"],
    ["validate", "loop"], ["--matrix", "loop", "envs"], ["fleet", "status", "cpu", "--results", "loop"],
    ["report", "loop"],
])
def test_a_path_the_system_cannot_look_up_is_exit_2_naming_it(argv: list[str], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from torchrig.__main__ import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and "error" in err, err


def test_an_unexpected_system_error_is_exit_1_with_a_message(monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    import errno
    import os

    from torchrig.__main__ import main
    from torchrig.cli import matrix as matrix_cli

    def full(args: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/results/x.json")

    monkeypatch.setattr(matrix_cli, "_envs", full)
    assert main(["envs"]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "/results/x.json" in err
