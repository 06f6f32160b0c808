"""Settings: defaults -> matrix.yaml -> torchrig.toml (or pyproject's [tool.torchrig]) -> environment -> flags,
resolved once into one frozen object that knows where each value came from.

Each setting is declared once in :mod:`torchrig.config.table` (file key = long flag, variables, parser, accepted
values, help); this module runs the cascade over that table. Every value is parsed and range-checked here, before
any command contacts Docker, Slurm or a registry, so a typo (``TORCHRIG_REQUIRE_LOCK=ture``) is exit 2 naming the
variable, never a silent "false". ``torchrig config`` prints the result with its sources; README "Settings written once"
lists the settings.

matrix.yaml's own values (registry, base images, index, size budgets) are per environment: a setting left unset
here (``None``) means "matrix.yaml's", applied where the environment is known.

The variables torchrig *passes into* containers (``TORCHRIG_IMAGE``, ``TORCHRIG_HOSTNAME``, ...) are the host/image
contract and live in :mod:`torchrig.results.contract`, which the images import without this module.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from torchrig.config.files import ProjectFile, read_project_file
from torchrig.config.table import SETTINGS, Setting
from torchrig.errors import UsageError

__all__ = [
    "ENV_VARS",
    "SETTINGS",
    "Settings",
    "default_matrix_path",
    "default_results_dir",
]

# variable -> what it sets (documentation; every name is read by from_environ through the table)
ENV_VARS: dict[str, str] = {s.env[0]: s.doc for s in SETTINGS}

_OFF_WORDS = ("", "none")


def default_matrix_path(environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> Path:
    """``$TORCHRIG_MATRIX``, else ``matrix.yaml`` in the current directory or the nearest parent holding one."""
    env = os.environ if environ is None else environ
    if env.get("TORCHRIG_MATRIX", "").strip():
        return Path(env["TORCHRIG_MATRIX"].strip()).expanduser()
    here = cwd or Path.cwd()
    for d in (here, *here.parents):
        if (d / "matrix.yaml").is_file():
            return d / "matrix.yaml"
    return here / "matrix.yaml"


def default_results_dir(matrix_path: Path) -> Path:
    """The one default results directory: ``results/`` beside the matrix file (so every command, run from any
    subfolder of the checkout, writes and reads the same place)."""
    return matrix_path.resolve().parent / "results"


def _default_cache(env: Mapping[str, str]) -> Path:
    xdg = env.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg) if xdg else Path.home() / ".cache") / "torchrig"


@dataclass(frozen=True, kw_only=True)
class Settings:
    """The resolved settings; ``sources`` says, per key, which layer set it."""

    matrix_path: Path
    registry: str | None = None  # None: matrix.yaml's; "" means local names without a registry
    results_dir: Path
    data_dir: Path | None = None  # None: <matrix root>/data
    keep_containers: bool = False
    cache_dir: Path
    debian_mirror: str | None = None
    base_image: str | None = None
    index_url: str | None = None
    extra_index_urls: tuple[str, ...] | None = None
    wheelhouse: Path | None = None
    ca_bundle: str | None = None  # raw: a path or "none"; checked by images.serve.resolve_ca_bundle
    ca_bundle_source: str | None = None  # which variable (or file, or flag) ca_bundle came from
    keep_ca_bundle: bool = False
    size_budget_mb: int | None = None
    require_lock: bool = False
    source_date_epoch: int | None = None  # $SOURCE_DATE_EPOCH (reproducible-builds.org); None: the commit's time
    python: str = "python3"  # $TORCHRIG_PYTHON: the host Python of `nox -s bench`
    docker_ping_timeout_s: float = 5.0  # $TORCHRIG_DOCKER_PING_TIMEOUT (engine.client reads it with the same parser)
    project_file: Path | None = None  # the torchrig.toml / pyproject.toml that was read
    sources: Mapping[str, str] = field(default_factory=dict)  # key -> "default", "torchrig.toml", "env X", "flag --x"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None, *, matrix: str | os.PathLike[str] | None = None,
                     cwd: Path | None = None, flags: Mapping[str, object] | None = None) -> Settings:
        """Resolve every setting. ``flags`` maps setting keys (``base-image``) to the CLI's values (None: not
        given); ``matrix`` is the ``--matrix`` flag. Raises UsageError naming every invalid value."""
        env = dict(os.environ if environ is None else environ)
        given = {k: val for k, val in (flags or {}).items() if val is not None}
        unknown = set(given) - {s.key for s in SETTINGS}
        if unknown:
            raise ValueError(f"not settings: {sorted(unknown)}")  # a programming error, not a user's
        sources: dict[str, str] = {}
        if matrix is not None:
            matrix_path, sources["matrix"] = Path(matrix).expanduser(), "flag --matrix"
        else:
            matrix_path = default_matrix_path(env, cwd)
            sources["matrix"] = "env TORCHRIG_MATRIX" if env.get("TORCHRIG_MATRIX", "").strip() else "default"
        project = read_project_file(matrix_path.resolve().parent)
        values: dict[str, object] = {}
        problems: list[str] = []
        for s in SETTINGS[1:]:
            try:
                found = _resolve(s, env, project, given)
            except ValueError as e:
                problems.append(str(e))
                continue
            if found is not None:
                values[s.field], sources[s.key] = found
            else:
                sources[s.key] = "matrix.yaml" if s.fallback.startswith("matrix.yaml") else "default"
        if problems:
            raise UsageError("invalid settings (nothing was run):\n" + "\n".join(f"  - {p}" for p in problems))
        values.setdefault("results_dir", default_results_dir(matrix_path))
        values.setdefault("cache_dir", _default_cache(env))
        if isinstance(values.get("wheelhouse"), Path):
            values["wheelhouse"] = Path(values["wheelhouse"]).resolve()  # type: ignore[arg-type]
        if "ca_bundle" in values:
            values["ca_bundle_source"] = _ca_source(sources["ca-bundle"], project)
        return cls(matrix_path=matrix_path, project_file=project.path if project else None, sources=sources,
                   **values)  # type: ignore[arg-type]

    @property
    def matrix_root(self) -> Path:
        return self.matrix_path.resolve().parent

    def value(self, setting: Setting) -> object:
        return getattr(self, setting.field)


def _ca_source(source: str, project: ProjectFile | None) -> str:
    """What resolve_ca_bundle names in its message: the variable, the flag, or the file and key."""
    if source.startswith(("env ", "flag ")):
        return source.split(" ", 1)[1]
    return f"{project.path if project else source}: ca-bundle"


def _resolve(s: Setting, env: Mapping[str, str], project: ProjectFile | None,
             flags: Mapping[str, object]) -> tuple[object, str] | None:
    """The highest layer that sets ``s``: (value, source), or None when none does."""
    if s.key in flags:
        return _from_flag(s, flags[s.key]), f"flag {s.flag or '--' + s.key}"
    for name in s.env:
        raw = env.get(name)
        if raw is None or (not raw.strip() and not (s.empty_is_value and name == s.env[0])):
            continue
        return _parse(s, raw, f"{name}={raw!r}", f"correct it or unset {name}"), f"env {name}"
    if project is not None and s.key in project.values:
        raw_value = project.values[s.key]
        where = f"{project.path}: {s.key}"
        items = raw_value if isinstance(raw_value, tuple) else (raw_value,)
        texts = [_beside(s, item, project.path.parent) for item in items]
        parsed = [_parse(s, t, f"{where} = {t!r}", f"correct it in {project.path}") for t in texts]
        if s.many:
            return tuple(u for p in parsed for u in p), project.label  # type: ignore[attr-defined]
        return parsed[0], project.label
    return None


def _beside(s: Setting, text: str, directory: Path) -> str:
    """A relative path in a project file is relative to that file, not to where torchrig runs."""
    word = text.strip()
    if not s.relative or word.lower() in _OFF_WORDS or Path(word).expanduser().is_absolute():
        return text
    return str(directory / word)


def _from_flag(s: Setting, value: object) -> object:
    where = s.flag or f"--{s.key}"
    if isinstance(value, str):
        return _parse(s, value, f"{where} {value!r}", f"pass a valid {where}")
    if s.many and isinstance(value, (list, tuple)):
        out: list[str] = []
        for item in value:
            parsed = _parse(s, item, f"{where} {item!r}", f"pass a valid {where}") if isinstance(item, str) else item
            out.extend(parsed if isinstance(parsed, tuple) else (parsed,))  # type: ignore[arg-type]
        return tuple(out)
    return value  # already typed by the flag's argparse type=


def _parse(s: Setting, raw: str, where: str, fix: str) -> object:
    try:
        return s.parse(raw)
    except ValueError as e:
        raise ValueError(f"{where}: {e} (accepted: {s.accepted}); {fix}") from None
