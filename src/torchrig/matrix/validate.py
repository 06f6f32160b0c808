"""Validate a parsed ``matrix.yaml`` against the compat data and build the frozen objects.

Every problem is collected (not only the first); each message names the file, the environment and the key, and
says how to fix it. :func:`torchrig.matrix.load.load_matrix` raises them together as a ConfigurationError. The
top level is checked here; each environment by the rules of :mod:`torchrig.matrix.rules`, one per concern.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from torchrig.matrix import rules
from torchrig.matrix.compat import Compat
from torchrig.matrix.model import DEFAULT_PLATFORMS, SCHEMA_VERSION, Environment, Matrix
from torchrig.matrix.references import registry_problem, repository_problem
from torchrig.matrix.row import ENV_KEYS, Problem, Row, string_value, suggest
from torchrig.matrix.runtime_pins import runtime_pin_problems

__all__ = ["Validator", "runtime_pin_problems"]

_TOP_KEYS = ("schema_version", "registry", "image", "defaults", "environments")
_DEFAULT_KEYS = tuple(k for k in ENV_KEYS if k not in ("id", "torch", "accelerator", "cuda", "rocm"))
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


class Validator:
    def __init__(self, name: str, root: Path, compat: Compat) -> None:
        self.name = name
        self.root = root
        self.compat = compat
        self.problems: list[str] = []
        self.warnings: list[str] = []

    def err(self, where: str, msg: str) -> None:
        self.problems.append(f"{self.name}: {where}: {msg}")

    def _record(self, problems: Iterable[Problem]) -> bool:
        """Record ``problems``; True when there were any (the one place a row's problems are counted)."""
        n_before = len(self.problems)
        for where, msg in problems:
            self.err(where, msg)
        return len(self.problems) > n_before

    def _unknown_keys(self, where: str, d: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
        for k in d:
            if k not in allowed:
                self.err(f"{where}{k}", f"unknown key {k!r}.{suggest(str(k), allowed)}")

    def _str(self, where: str, value: Any) -> str | None:
        out: list[Problem] = []
        text = string_value(where, value, out)
        self._record(out)
        return text

    def matrix(self, data: Any, path: Path) -> Matrix | None:
        if not isinstance(data, dict):
            self.err("top level", f"expected a mapping with keys {', '.join(_TOP_KEYS)}, got {type(data).__name__}")
            return None
        self._unknown_keys("", data, _TOP_KEYS)
        ver = data.get("schema_version", SCHEMA_VERSION)
        if ver != SCHEMA_VERSION:
            self.err("schema_version", f"{ver!r} is not supported; this torchrig reads schema_version {SCHEMA_VERSION}")
        registry = self._str("registry", data.get("registry", "")) or ""
        if problem := registry_problem(registry):
            self.err("registry", problem)
        image = self._str("image", data.get("image", "torchrig")) or "torchrig"
        if problem := repository_problem(image):
            self.err("image", problem)
        defaults = data.get("defaults", {}) or {}
        if not isinstance(defaults, dict):
            self.err("defaults", f"expected a mapping, got {type(defaults).__name__}")
            defaults = {}
        self._unknown_keys("defaults.", defaults, _DEFAULT_KEYS)
        envs_raw = data.get("environments")
        if not isinstance(envs_raw, list) or not envs_raw:
            self.err("environments", "expected a non-empty list of environments (each a mapping with an `id`)")
            return None
        envs: list[Environment] = []
        seen: dict[str, int] = {}
        for i, raw in enumerate(envs_raw):
            label = f"environments[{i}]"
            if not isinstance(raw, dict):
                self.err(label, f"expected a mapping, got {type(raw).__name__}")
                continue
            env_id = raw.get("id")
            if not isinstance(env_id, str) or not _ID_RE.match(env_id):
                self.err(f"{label}.id", f"missing or invalid id {env_id!r}: use lower-case letters, digits, '-', '_'")
                continue
            if env_id in seen:
                self.err(f"{env_id}.id", f"duplicate id: environments[{seen[env_id]}] and environments[{i}] are both "
                         f"{env_id!r}; rename one")
                continue
            seen[env_id] = i
            env = self.environment(env_id, raw, defaults, registry, image)
            if env is not None:
                envs.append(env)
        if self.problems:
            return None
        return Matrix(path=path, registry=registry, image=image, environments=tuple(envs),
                      warnings=tuple(self.warnings))

    def environment(self, eid: str, raw: dict[str, Any], defaults: dict[str, Any], registry: str,
                    image: str) -> Environment | None:
        """One row through the rules, stage by stage (a stage with problems ends it), built once when clean."""
        merged = {**defaults, **raw}
        for key in ("targets", "size_budget_mb"):  # per-target mappings merge key by key
            if isinstance(defaults.get(key), dict) and isinstance(raw.get(key), dict):
                merged[key] = {**defaults[key], **raw[key]}
        row = Row(eid=eid, raw=raw, merged=merged, compat=self.compat, root=self.root)
        try:
            for stage in (rules.PRECHECK, rules.FIELDS, (rules.complete,), rules.URLS):
                if self._record(p for rule in stage for p in rule(row)):
                    return None
        finally:
            self.warnings += row.warnings
        assert row.torch and row.python and row.torchvision and row.targets is not None
        return Environment(
            id=eid, description=row.description, accelerator=row.accelerator, torch=row.torch,
            torchvision=row.torchvision, python=row.python, cuda=row.cuda, rocm=row.rocm, targets=row.targets,
            index=row.index_url, extra_index=row.extra_urls, extras=row.extras or (),
            size_budget_mb=row.budgets or {}, dockerfile=self.root / (row.dockerfile or ""), registry=registry,
            image=image, platforms=row.platforms or DEFAULT_PLATFORMS,
        )
