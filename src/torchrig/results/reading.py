"""The one way torchrig reads a file a user can hand it: total (an error, never a hang or a traceback) and bounded.

Every reader of a user-supplied file (matrix.yaml, compat data, result records, pytest-benchmark JSON, locks,
fleet ``job.json``/``exit.json``, node logs, SBOMs, ``.dockerignore``...) goes through :func:`read_bytes`,
:func:`read_text`, :func:`read_json` or :func:`tail_lines`. Each

- refuses what is not a regular file and says what it is ("is a FIFO", "is a symlink loop"), checked with
  ``fstat`` on the opened descriptor (opened ``O_NONBLOCK``, so a FIFO swapped in after the check cannot hang it);
- refuses a file over the cap of its kind (:data:`CAPS`, stated in docs/limits.md) and never reads more than the
  cap + 1 bytes, so a file that grows while it is read is refused too;
- decodes strict UTF-8 and names the line and column of a bad byte; a leading byte-order mark is read away;
- for JSON: refuses NaN/Infinity (not JSON, and never a number torchrig can compare), nesting deeper than
  :data:`JSON_MAX_DEPTH`, and a top-level value of the wrong type.

All failures are one exception, :class:`InputFileError` (path + reason); callers turn it into a
ConfigurationError (exit 2) or, for result records, into "skipped with a warning naming it".
Standard library only: this module ships into every image.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any

__all__ = [
    "CAPS",
    "JSON_MAX_DEPTH",
    "TAIL_BYTES",
    "InputFileError",
    "loads_json",
    "read_bytes",
    "read_json",
    "read_text",
    "tail_lines",
    "type_name",
]

_KIB = 1 << 10
_MIB = 1 << 20
CAPS: dict[str, int] = {
    # kind -> largest file accepted, in bytes. Every real file is far below its cap (docs/limits.md gives sizes).
    "matrix": 128 * _KIB,  # matrix.yaml: the shipped one is ~5 KB (PyYAML parses ~100 KB/s: the cap bounds time)
    "compat": 512 * _KIB,  # compat.yaml: ~10 KB
    "bases": 128 * _KIB,  # locks/bases.yaml: a line per base image
    "lock": 16 * _MIB,  # a hash-pinned requirements lock: ~100 KB for a CUDA environment
    "record": 16 * _MIB,  # one result record: a few KB
    "bench-json": 256 * _MIB,  # pytest-benchmark JSON: hundreds of KB, more with --benchmark-save-data
    "sbom": 64 * _MIB,  # a CycloneDX SBOM: ~1 MB for a CUDA image
    "job": 1 * _MIB,  # fleet job.json / exit.json: under 1 KB
    "size-record": 1 * _MIB,  # the kept site-packages measurement: under 1 KB
    "dockerignore": 1 * _MIB,  # .dockerignore: a few lines
    "data": 64 * _MIB,  # small data files a task reads whole (a CSV of sentences)
    "docker-config": 1 * _MIB,  # ~/.docker/config.json: a few hundred bytes per registry login
    "ca-bundle": 16 * _MIB,  # a PEM CA bundle: Debian's is ~220 KB
}
TAIL_BYTES = 64 * _KIB
"""How much of a log's end :func:`tail_lines` reads: a failed node's 3 GB log is never read into memory."""
JSON_MAX_DEPTH = 64
"""Deepest JSON nesting accepted (records and benchmark JSON nest 4-5 deep)."""

_O_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)


class InputFileError(Exception):
    """A file torchrig was asked to read cannot be used: ``path`` and a ``reason`` saying what it is or holds."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def _what(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "is a directory, not a file"
    if stat.S_ISFIFO(mode):
        return "is a FIFO (named pipe), not a regular file"
    if stat.S_ISSOCK(mode):
        return "is a socket, not a regular file"
    if stat.S_ISCHR(mode):
        return "is a character device, not a regular file"
    if stat.S_ISBLK(mode):
        return "is a block device, not a regular file"
    return "is not a regular file"


def _missing(path: str | os.PathLike[str]) -> str:
    """Why ``path`` cannot be opened though stat says nothing is there: a broken symlink, or nothing at all."""
    try:
        target = os.readlink(path)
    except OSError:
        return "no such file"
    return f"is a broken symbolic link (to {target}, which does not exist)"


def _oserror(path: str | os.PathLike[str], e: OSError) -> InputFileError:
    if e.errno == errno.ELOOP:
        return InputFileError(path, "is a symbolic link loop (or a chain of links too long to follow)")
    if e.errno == errno.ENOENT:
        return InputFileError(path, _missing(path))
    if e.errno == errno.EACCES:
        return InputFileError(path, "cannot be read: permission denied")
    if e.errno == errno.ENOTDIR:
        return InputFileError(path, "no such file (a part of the path is not a directory)")
    if e.errno == errno.EISDIR:
        return InputFileError(path, _what(stat.S_IFDIR))
    return InputFileError(path, f"cannot be read: {e.strerror or e}")


def _cap(kind: str, cap: int | None) -> int:
    if cap is not None:
        return cap
    try:
        return CAPS[kind]
    except KeyError:
        raise ValueError(f"unknown file kind {kind!r}; one of {sorted(CAPS)}") from None


def _size(n: int) -> str:
    return f"{n / _MIB:.1f} MiB" if n >= _MIB else f"{n} bytes"


def _open_regular(path: str | os.PathLike[str]) -> tuple[int, os.stat_result]:
    """An open descriptor of the regular file ``path`` and its fstat; :class:`InputFileError` for anything else
    (checked before opening, since opening a device can have effects, and again on the descriptor opened, not the
    file stat saw a moment ago). The caller closes it."""
    try:
        st = os.stat(path)  # follows links: a link to a good file is a good file
    except OSError as e:
        raise _oserror(path, e) from None
    if not stat.S_ISREG(st.st_mode):
        raise InputFileError(path, _what(st.st_mode))
    try:
        fd = os.open(path, _O_FLAGS)
    except OSError as e:
        raise _oserror(path, e) from None
    try:
        st = os.fstat(fd)
    except OSError as e:
        os.close(fd)
        raise _oserror(path, e) from None
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise InputFileError(path, _what(st.st_mode))
    return fd, st


def read_bytes(path: str | os.PathLike[str], *, kind: str, cap: int | None = None) -> bytes:
    """The bytes of the regular file ``path``, at most the cap of ``kind``; :class:`InputFileError` otherwise."""
    limit = _cap(kind, cap)
    fd, st = _open_regular(path)
    try:
        too_big = InputFileError(path, f"is {_size(st.st_size)}, over the {_size(limit)} limit for a {kind} file "
                                       "(docs/limits.md); is it the right file?")
        if st.st_size > limit:
            raise too_big
        chunks: list[bytes] = []
        left = limit + 1
        while left > 0:
            try:
                chunk = os.read(fd, min(left, _MIB))
            except OSError as e:
                raise _oserror(path, e) from None
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        if left <= 0:  # it grew past the cap while being read
            raise InputFileError(path, f"grew over the {_size(limit)} limit for a {kind} file while being read")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _decode(path: str | os.PathLike[str], data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise InputFileError(path, f"is not UTF-8 text: byte 0x{data[e.start]:02x} at line {line}, column "
                                   f"{column} ({e.reason}); save it as UTF-8") from None
    return text.removeprefix("\ufeff")


def read_text(path: str | os.PathLike[str], *, kind: str, cap: int | None = None) -> str:
    """The UTF-8 text of ``path`` (a leading byte-order mark removed), bounded as :func:`read_bytes`."""
    return _decode(path, read_bytes(path, kind=kind, cap=cap))


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (JSON has no NaN or Infinity)")


def _depth(value: Any) -> int:
    """How deep ``value`` nests (iteratively: a deep value cannot overflow the stack here)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            v = list(v.values())
        if isinstance(v, list):
            deepest = max(deepest, d)
            if d <= JSON_MAX_DEPTH:
                stack.extend((c, d + 1) for c in v)
    return deepest


_TYPE_NAMES = {dict: "a JSON object", list: "a JSON array", str: "a string", bool: "true/false",
               int: "a number", float: "a number", type(None): "null"}


def type_name(value: Any) -> str:
    """What a JSON value is, in the words of JSON (for messages: ``expected a JSON object, got a JSON array``)."""
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def loads_json(text: str, *, source: str | os.PathLike[str], expect: type | None = dict) -> Any:
    """Parse JSON ``text`` (from ``source``, for messages) with the rules of :func:`read_json`."""
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise InputFileError(source, f"is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None
    except RecursionError:
        raise InputFileError(source, f"nests deeper than the {JSON_MAX_DEPTH} levels torchrig reads") from None
    except ValueError as e:  # NaN/Infinity, or an integer with more digits than Python converts
        raise InputFileError(source, f"is not usable JSON: {e}") from None
    if _depth(data) > JSON_MAX_DEPTH:
        raise InputFileError(source, f"nests deeper than the {JSON_MAX_DEPTH} levels torchrig reads")
    if expect is not None and not isinstance(data, expect):
        raise InputFileError(source, f"top level is {type_name(data)}; expected {_TYPE_NAMES.get(expect, expect)}")
    return data


def read_json(path: str | os.PathLike[str], *, kind: str, expect: type | None = dict, cap: int | None = None) -> Any:
    """The JSON value in ``path``: bounded and decoded as :func:`read_text`, NaN/Infinity refused, nesting at most
    :data:`JSON_MAX_DEPTH`, and the top level an instance of ``expect`` (None: any)."""
    return loads_json(read_text(path, kind=kind, cap=cap), source=path, expect=expect)


def tail_lines(path: str | os.PathLike[str], n: int, *, max_bytes: int = TAIL_BYTES) -> tuple[str, ...]:
    """The last ``n`` lines of a log, from at most its last ``max_bytes`` bytes (invalid UTF-8 replaced).

    Never reads the whole file: a 3 GB node log costs ``max_bytes`` of memory. :class:`InputFileError` when it is
    not a regular file.
    """
    fd, st = _open_regular(path)
    try:
        start = max(0, st.st_size - max_bytes)
        data = os.pread(fd, max_bytes, start)
    except OSError as e:
        raise _oserror(path, e) from None
    finally:
        os.close(fd)
    lines = data.decode("utf-8", errors="replace").splitlines()
    if start > 0 and lines:
        lines = lines[1:]  # the first line read is most likely cut in the middle
    return tuple(lines[-n:]) if n > 0 else ()
