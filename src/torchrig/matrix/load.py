"""Load ``matrix.yaml``: parse, validate against the compatibility table, and build the frozen typed objects.

Every problem in the file is collected (not only the first) and raised together as a
:class:`~torchrig.errors.ConfigurationError`; each message names the file, the environment and the key, and says
how to fix it.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from torchrig.errors import ConfigurationError
from torchrig.matrix.compat import Compat, load_compat
from torchrig.matrix.model import Matrix
from torchrig.matrix.references import registry_problem
from torchrig.matrix.validate import Validator
from torchrig.settings import Settings

__all__ = ["load_matrix"]


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate mapping keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None,
                f"duplicate key {key!r} (first on line {seen[key] + 1}); keep one of them",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


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
    if p.is_dir():
        raise ConfigurationError([f"{name}: is a directory; pass the matrix file inside it ({p / 'matrix.yaml'})"],
                                 source=name)
    if not p.is_file():
        raise ConfigurationError(
            [f"{name}: no such file. Run from the torchrig checkout, pass the path, or set $TORCHRIG_MATRIX."],
            source=name,
        )
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigurationError([f"{name}: cannot be read ({e})"], source=name) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else name
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigurationError([f"{where}: not valid YAML: {problem}"], source=name) from None
    v = Validator(name, p.parent, compat or load_compat())
    matrix = v.matrix(data, p)
    if v.problems or matrix is None:
        raise ConfigurationError(v.problems or [f"{name}: not a matrix"], source=name)
    if settings.registry is not None:
        if problem := registry_problem(settings.registry):
            raise ConfigurationError([f"TORCHRIG_REGISTRY: {problem}"], source="the environment")
        registry = settings.registry.rstrip("/")
        matrix = replace(matrix, registry=registry,
                         environments=tuple(replace(e, registry=registry) for e in matrix.environments))
    return matrix


