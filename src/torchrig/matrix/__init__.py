"""The matrix step: ``matrix.yaml`` -> validated, frozen :class:`Matrix` / :class:`Environment` objects.

- :mod:`~torchrig.matrix.model`: the typed objects (and image names: :meth:`Environment.tags`).
- :mod:`~torchrig.matrix.load`: YAML parsing (duplicate keys refused) and ``load_matrix``.
- :mod:`~torchrig.matrix.validate`: the top level, and each row through :mod:`~torchrig.matrix.rules` (one
  function per concern over a :class:`~torchrig.matrix.row.Row` draft), all problems collected;
  :mod:`~torchrig.matrix.references` (Docker's and pip's name rules), :mod:`~torchrig.matrix.onnx_extras`,
  :mod:`~torchrig.matrix.runtime_pins`, :mod:`~torchrig.matrix.platforms` (aarch64 wheels per row).
- :mod:`~torchrig.matrix.compat` + ``compat.yaml``: what each PyTorch release ships (Python, CUDA/ROCm, drivers);
  :mod:`~torchrig.matrix.compat_check` + :mod:`~torchrig.matrix.simple_index`: compare it with a package index.
- :mod:`~torchrig.matrix.docs`, :mod:`~torchrig.matrix.ci`, :mod:`~torchrig.matrix.devcontainer`: files generated
  from the matrix (README table, CI matrix, devcontainer.json).
"""

from __future__ import annotations

from torchrig.matrix.load import load_matrix
from torchrig.matrix.model import (
    ACCELERATORS,
    IMAGE_EXTRAS,
    TARGETS,
    Accelerator,
    Environment,
    ImageRef,
    Matrix,
    Target,
    canonical_name,
    requirement_name,
)
from torchrig.settings import default_matrix_path

__all__ = [
    "ACCELERATORS",
    "IMAGE_EXTRAS",
    "TARGETS",
    "Accelerator",
    "Environment",
    "ImageRef",
    "Matrix",
    "Target",
    "canonical_name",
    "default_matrix_path",
    "load_matrix",
    "requirement_name",
]
