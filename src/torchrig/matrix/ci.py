"""The CI matrix derived from matrix.yaml (GitHub Actions ``strategy.matrix``)."""

from __future__ import annotations

from typing import Any

from torchrig.matrix import Matrix

__all__ = ["RUNNER_LABELS", "github_matrix"]

# Where each accelerator's jobs run: GPU jobs go to self-hosted runners carrying these labels.
RUNNER_LABELS: dict[str, list[str]] = {
    "cpu": ["ubuntu-latest"],
    "cuda": ["self-hosted", "linux", "x64", "nvidia"],
    "rocm": ["self-hosted", "linux", "x64", "amd"],
}


def github_matrix(matrix: Matrix) -> dict[str, Any]:
    """``{"include": [...]}``: one entry per environment with what a job needs to build and test it."""
    include = []
    for e in matrix.environments:
        include.append({
            "env": e.id,
            "accelerator": e.accelerator,
            "torch": e.torch,
            "python": e.python,
            "flavour": e.flavour,
            "platforms": list(e.platforms),
            "targets": sorted(e.targets),
            "image": e.tags("runtime").immutable,
            "runs-on": RUNNER_LABELS[e.accelerator],
            "gpu": e.accelerator != "cpu",
        })
    return {"include": include}
