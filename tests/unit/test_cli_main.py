"""The CLI's one error handler: a closed pipe (``torchrig ... | head``) ends quietly, not with a traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

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
