"""Files in and out: the one atomic write, writing a record, loading a results tree, and the ``Log`` alias.

Standard library only, Python >= 3.10: this module ships into every image.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from torchrig.results.reading import InputFileError, read_json
from torchrig.results.schema import SCHEMA_ID, Record, RecordError, record_from_dict, validate_record

__all__ = ["LoadProblem", "Log", "atomic_write_text", "current_umask", "file_sha256", "load_records", "write_record"]

Log = Callable[[str], None]
"""Where a step's progress lines go (``print``, a nox session's ``log``, a list's ``append`` in tests)."""


def file_sha256(path: str | os.PathLike[str], digest: hashlib._Hash | None = None) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks; given ``digest``, feed it instead (several files into
    one hash) and return its hex digest so far."""
    h = digest if digest is not None else hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def current_umask() -> int:
    """The process's umask (read by setting it and putting it straight back: POSIX has no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` so that readers see the old file or the complete new one, never a part.

    The text goes to a temporary file beside ``path``, is flushed and fsynced, gets the mode a plain ``open()``
    would give it (0o666 less the umask: ``mkstemp`` makes it 0600, which a shared results folder cannot read),
    then is renamed into place. On any error the temporary file is removed and the error propagates.
    """
    final = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}-", suffix=".tmp", dir=final.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return final


def write_record(record: Record, results_dir: str | os.PathLike[str]) -> Path:
    """Write ``record`` atomically as ``<results_dir>/<kind>/<name>-<run_id>.json`` and return the path."""
    data = record.to_dict()
    errs = validate_record(data)
    if errs:
        raise RecordError("refusing to write an invalid record: " + "; ".join(errs))
    out_dir = Path(results_dir) / record.kind
    out_dir.mkdir(parents=True, exist_ok=True)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in record.name)
    text = json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n"
    return atomic_write_text(out_dir / f"{safe}-{record.run_id}.json", text)


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass(frozen=True)
class LoadProblem:
    path: Path
    reason: str


def load_records(dirs: Iterable[str | os.PathLike[str]]) -> tuple[list[Record], list[LoadProblem]]:
    """Every valid record under ``dirs`` (recursively), and a problem for each file that is not one.

    Hidden files and folders below a directory (an interrupted write's ``.*.tmp``, a fleet node's folder still
    being moved into place) are ignored; corrupt, partial or future-version records become problems, never
    exceptions.
    """
    records: list[Record] = []
    problems: list[LoadProblem] = []
    for d in dirs:
        root = Path(d)
        if not root.is_dir():
            problems.append(LoadProblem(root, "not a directory"))
            continue
        for path in sorted(root.rglob("*.json")):
            if any(part.startswith(".") for part in path.relative_to(root).parts):
                continue
            try:
                data = read_json(path, kind="record", expect=None)
            except InputFileError as e:
                problems.append(LoadProblem(path, f"skipped, not readable JSON: {e.reason}"))
                continue
            if not isinstance(data, dict) or data.get("schema") != SCHEMA_ID:
                continue  # some other JSON file (e.g. raw pytest-benchmark output) living beside records
            try:
                records.append(record_from_dict(data))
            except (RecordError, TypeError, ValueError, KeyError, AttributeError) as e:
                problems.append(LoadProblem(path, f"skipped, not a valid record: {_short(str(e))}"))
    return records, problems
