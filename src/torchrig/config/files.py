"""The project file: ``torchrig.toml`` beside matrix.yaml, else ``[tool.torchrig]`` in the pyproject.toml beside it.

Keys are the long flags (``base-image = "torchrig-base:bookworm"``). What is read is checked whole before any value
is used: unknown keys (with a "did you mean"), keys that are not settable in a file, values of the wrong TOML type
and invalid TOML are all a :class:`~torchrig.errors.ConfigurationError` (exit 2) naming the file and the key.
"""

from __future__ import annotations

import difflib
import json
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from torchrig.config.table import SETTINGS, Setting
from torchrig.errors import ConfigurationError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[import-not-found, no-redef, unused-ignore]

__all__ = ["MAX_FILE_BYTES", "PROJECT_FILE", "ProjectFile", "read_project_file", "write_setting"]

PROJECT_FILE = "torchrig.toml"
MAX_FILE_BYTES = 1_000_000  # a settings file is a few lines; anything larger is not one
_FILE_KEYS = {s.key: s for s in SETTINGS if s.in_file}


@dataclass(frozen=True, kw_only=True)
class ProjectFile:
    path: Path
    label: str  # "torchrig.toml" or "pyproject.toml" (the source `torchrig config` shows)
    values: dict[str, str | tuple[str, ...]]  # key -> the text each value parses from (arrays: one per item)


def _read_toml(path: Path) -> dict[str, object]:
    name = str(path)
    try:
        st = path.stat()
    except OSError as e:
        raise ConfigurationError([f"{name}: cannot be read ({e.strerror})"], source=name) from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigurationError([f"{name}: not a regular file: make it one, or remove it"], source=name)
    if st.st_size > MAX_FILE_BYTES:
        raise ConfigurationError([f"{name}: {st.st_size:,} bytes, over the {MAX_FILE_BYTES:,}-byte limit for a "
                                  "settings file"], source=name)
    try:
        with path.open("rb") as f:
            data: dict[str, object] = tomllib.loads(f.read(MAX_FILE_BYTES + 1).decode("utf-8"))
            return data
    except UnicodeDecodeError as e:
        raise ConfigurationError([f"{name}: not UTF-8 text ({e.reason} at byte {e.start})"], source=name) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigurationError([f"{name}: not valid TOML: {e}"], source=name) from None
    except (OSError, RecursionError) as e:
        raise ConfigurationError([f"{name}: cannot be read ({e})"], source=name) from None


def _as_text(setting: Setting, value: object, where: str) -> str | tuple[str, ...]:
    """A TOML value as the text its parser reads; a wrong TOML type is named here."""
    if isinstance(value, list) and setting.many:
        if not all(isinstance(item, str) for item in value):
            raise ValueError(f"{where}: an array of strings (URLs) is expected")
        return tuple(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return value
    kind = "an array" if isinstance(value, list) else "a table" if isinstance(value, dict) else type(value).__name__
    raise ValueError(f"{where}: {kind} is not accepted; expected {setting.accepted}")


def _check(table: dict[str, object], label: str, path: Path) -> dict[str, str | tuple[str, ...]]:
    problems: list[str] = []
    out: dict[str, str | tuple[str, ...]] = {}
    for key, value in table.items():
        where = f"{label}: {key}"
        setting = _FILE_KEYS.get(key)
        if setting is None:
            msg = f"{where}: unknown setting"
            if key in {s.key for s in SETTINGS}:
                msg = f"{where}: not settable in a file (use --{key} or ${' / $'.join(_env_of(key))})"
            else:
                match = difflib.get_close_matches(key, list(_FILE_KEYS), 1, 0.6)
                msg += f"; did you mean {match[0]!r}?" if match else f"; known: {', '.join(_FILE_KEYS)}"
            problems.append(msg)
            continue
        try:
            out[key] = _as_text(setting, value, where)
        except ValueError as e:
            problems.append(str(e))
    if problems:
        raise ConfigurationError(problems, source=str(path))
    return out


def _env_of(key: str) -> tuple[str, ...]:
    return next(s.env for s in SETTINGS if s.key == key)


def read_project_file(directory: Path) -> ProjectFile | None:
    """The settings file beside the matrix (``directory``), or None when there is none."""
    toml = directory / PROJECT_FILE
    if toml.exists() or toml.is_symlink():
        return ProjectFile(path=toml, label=PROJECT_FILE, values=_check(_read_toml(toml), PROJECT_FILE, toml))
    pyproject = directory / "pyproject.toml"
    if not pyproject.is_file():
        return None
    tool = _read_toml(pyproject).get("tool")
    table = tool.get("torchrig") if isinstance(tool, dict) else None
    if table is None:
        return None
    label = "pyproject.toml [tool.torchrig]"
    if not isinstance(table, dict):
        raise ConfigurationError([f"{label}: a table is expected"], source=str(pyproject))
    return ProjectFile(path=pyproject, label="pyproject.toml", values=_check(table, label, pyproject))


def write_setting(path: Path, key: str, value: str) -> str:
    """Set ``key = "value"`` in the torchrig.toml ``path`` (created when absent), keeping every other line; the
    result is read back and checked before it replaces the file. Returns what was done, for the user."""
    pyproject = path.parent / "pyproject.toml"
    if not path.exists() and pyproject.is_file() and isinstance(_read_toml(pyproject).get("tool"), dict) \
            and "torchrig" in _read_toml(pyproject)["tool"]:  # type: ignore[operator]
        raise ConfigurationError([f"{pyproject} holds [tool.torchrig], which a {PROJECT_FILE} would hide: add "
                                  f"{key} = {json.dumps(value)} to that table instead"], source=str(pyproject))
    line = f"{key} = {json.dumps(value)}"  # a JSON string is a valid TOML basic string
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else [
        "# torchrig settings for this checkout (keys are the long flags; `torchrig config` shows the effect)"]
    first_table = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("[")), len(lines))
    at = next((i for i, ln in enumerate(lines[:first_table]) if ln.split("=", 1)[0].strip() == key), None)
    if at is None:
        lines.insert(first_table, line)
    else:
        lines[at] = line
    text = "\n".join(lines) + "\n"
    try:
        _check(tomllib.loads(text), PROJECT_FILE, path)
    except tomllib.TOMLDecodeError as e:
        raise ConfigurationError([f"{path}: would not be valid TOML after the edit ({e}): fix it first"],
                                 source=str(path)) from None
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return f"{'wrote' if at is None else 'updated'} {line} in {path}"
