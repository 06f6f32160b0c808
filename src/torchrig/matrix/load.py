"""Load ``matrix.yaml``: parse, validate against the compatibility table, and build the frozen typed objects.

Every problem in the file is collected (not only the first) and raised together as a
:class:`~torchrig.errors.ConfigurationError`; each message names the file, the environment and the key, and says
how to fix it.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from torchrig.errors import ConfigurationError
from torchrig.matrix.compat import Compat, load_compat
from torchrig.matrix.model import Matrix
from torchrig.matrix.references import registry_problem
from torchrig.matrix.validate import Validator
from torchrig.matrix.yamlsafe import YamlError, load_yaml
from torchrig.results.reading import InputFileError
from torchrig.settings import Settings

__all__ = ["load_matrix"]


_QUOTE = 400  # a problem line is cut here: a value quoted from an aliased structure must not flood the terminal


def _capped(problem: str) -> str:
    return problem if len(problem) <= _QUOTE else problem[:_QUOTE] + f"... (message cut at {_QUOTE} characters)"


def load_matrix(path: str | os.PathLike[str] | None = None, *, compat: Compat | None = None,
                settings: Settings | None = None) -> Matrix:
    """Read, validate and parse ``path``; raises ConfigurationError listing every problem found.

    ``path`` defaults to the settings' matrix path. The settings' registry (``$TORCHRIG_REGISTRY``) replaces
    matrix.yaml's here, once, so image names do not depend on when they are asked for.
    """
    if settings is None:
        settings = Settings.from_environ(matrix=path)
    p = Path(path) if path is not None else settings.matrix_path
    name = str(p)
    try:
        data = load_yaml(p, kind="matrix", string_keys=True)
    except InputFileError as e:
        hint = f"; pass the matrix file inside it ({p / 'matrix.yaml'})" if p.is_dir() else ""
        if e.reason == "no such file":
            hint = ". Run from the torchrig checkout, pass the path, or set $TORCHRIG_MATRIX."
        raise ConfigurationError([f"{name}: {e.reason}{hint}"], source=name) from None
    except YamlError as e:
        where = f"{name}:{e.where}" if e.where else name
        raise ConfigurationError([f"{where}: not valid YAML: {e.problem}"], source=name) from None
    v = Validator(name, p.parent, compat or load_compat())
    matrix = v.matrix(data, p)
    if v.problems or matrix is None:
        raise ConfigurationError([_capped(q) for q in v.problems] or [f"{name}: not a matrix"], source=name)
    if settings.registry is not None:
        if problem := registry_problem(settings.registry):
            raise ConfigurationError([f"TORCHRIG_REGISTRY: {problem}"], source="the environment")
        registry = settings.registry.rstrip("/")
        matrix = replace(matrix, registry=registry,
                         environments=tuple(replace(e, registry=registry) for e in matrix.environments))
    return matrix


