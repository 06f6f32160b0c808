"""The reading layer (torchrig.results.reading): every user-supplied file is read totally and within bounds."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torchrig.results.reading import (
    CAPS,
    JSON_MAX_DEPTH,
    InputFileError,
    _decode,  # the decoding rule alone, without a file per case
    loads_json,
    read_bytes,
    read_json,
    read_text,
    tail_lines,
)


def _special(tmp_path: Path, what: str) -> Path:
    """A path that is not a regular file, of the kind ``what``."""
    p = tmp_path / what
    if what == "fifo":
        os.mkfifo(p)
    elif what == "dir":
        p.mkdir()
    elif what == "loop":
        os.symlink(tmp_path / "loop2", p)
        os.symlink(p, tmp_path / "loop2")
    elif what == "broken":
        os.symlink(tmp_path / "nowhere", p)
    elif what == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(p))
        s.close()
    elif what == "devnull":
        return Path(os.devnull)
    elif what == "missing":
        pass
    return p


SPECIAL = {
    "fifo": "is a FIFO",
    "dir": "is a directory",
    "loop": "symbolic link loop",
    "broken": "broken symbolic link",
    "socket": "is a socket",
    "devnull": "is a character device",
    "missing": "no such file",
}


@pytest.mark.parametrize("what", sorted(SPECIAL))
def test_a_special_file_is_refused_saying_what_it_is_and_never_hangs(tmp_path: Path, what: str) -> None:
    path = _special(tmp_path, what)
    for read in (lambda: read_bytes(path, kind="record"), lambda: read_json(path, kind="record"),
                 lambda: tail_lines(path, 5)):
        done: list[BaseException] = []

        def run(read: Callable[[], object] = read, done: list[BaseException] = done) -> None:
            try:
                read()
            except BaseException as e:  # noqa: BLE001 - handed to the test thread
                done.append(e)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        t.join(5)
        assert not t.is_alive(), f"reading a {what} hung"
        assert isinstance(done[0], InputFileError), done
        assert SPECIAL[what] in str(done[0]) and str(path) in str(done[0])


def test_a_symlink_to_a_good_file_is_read(tmp_path: Path) -> None:
    (tmp_path / "real.json").write_text('{"a": 1}')
    os.symlink(tmp_path / "real.json", tmp_path / "link.json")
    assert read_json(tmp_path / "link.json", kind="record") == {"a": 1}


@pytest.mark.parametrize("kind", sorted(CAPS))
def test_a_file_over_its_kind_cap_is_refused_without_reading_it(tmp_path: Path, kind: str) -> None:
    p = tmp_path / "big"
    with open(p, "wb") as f:
        f.truncate(CAPS[kind] + 1)  # sparse: costs no disk
    tracemalloc.start()
    try:
        with pytest.raises(InputFileError, match=rf"over the .* limit for a {kind} file"):
            read_bytes(p, kind=kind)
        assert tracemalloc.get_traced_memory()[1] < 1 << 20
    finally:
        tracemalloc.stop()
    p.write_bytes(b"x" * min(CAPS[kind], 1 << 16))
    assert len(read_bytes(p, kind=kind)) == min(CAPS[kind], 1 << 16)


@given(st.text(max_size=100), st.text(max_size=100))
def test_bad_utf8_names_the_line_and_column(before: str, after: str) -> None:
    head = before.encode("utf-8")
    data = head + b"\xff" + after.encode("utf-8")
    line = head.count(b"\n") + 1
    column = len(head) - (head.rfind(b"\n") + 1) + 1
    with pytest.raises(InputFileError) as e:
        _decode("f.txt", data)
    assert f"line {line}, column {column}" in e.value.reason and "0xff" in e.value.reason


def test_a_byte_order_mark_is_read_away(tmp_path: Path) -> None:
    (tmp_path / "f.json").write_bytes(b"\xef\xbb\xbf" + b'{"a": [1]}')
    assert read_json(tmp_path / "f.json", kind="record") == {"a": [1]}
    assert read_text(tmp_path / "f.json", kind="record").startswith("{")


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                           | st.text(max_size=20),
                           lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                           max_leaves=30)


@given(json_values)
def test_any_json_value_round_trips_and_its_type_is_checked(value: object) -> None:
    text = json.dumps(value)
    assert loads_json(text, source="x", expect=None) == value
    if not isinstance(value, dict):
        with pytest.raises(InputFileError, match="top level is"):
            loads_json(text, source="x")


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", '{"a": -Infinity}', '{"v": NaN}'])
def test_nan_and_infinity_are_refused(text: str) -> None:
    with pytest.raises(InputFileError, match="NaN or Infinity"):
        loads_json(text, source="x.json", expect=None)


@given(st.integers(min_value=1, max_value=200_000), st.sampled_from(["[", '{"a":']))
@settings(max_examples=25)
def test_deep_json_is_refused_quickly_and_shallow_json_read(depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    text = opener * depth + "1" + closer * depth
    t0 = time.monotonic()
    if depth <= JSON_MAX_DEPTH:
        loads_json(text, source="x", expect=None)
    else:
        with pytest.raises(InputFileError, match="nests deeper"):
            loads_json(text, source="x", expect=None)
    assert time.monotonic() - t0 < 2


@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_json_or_one_clear_error(data: bytes) -> None:
    try:
        loads_json(data.decode("utf-8", errors="replace"), source="x.json", expect=None)
    except InputFileError as e:
        assert str(e).startswith("x.json: ")


def test_the_tail_of_a_3_gb_sparse_log_costs_only_the_tail(tmp_path: Path) -> None:
    log = tmp_path / "node.log"
    with open(log, "wb") as f:
        f.truncate(3 << 30)
        f.seek(3 << 30)
        f.write(b"".join(f"line {i}\n".encode() for i in range(100)) + b"last words")
    tracemalloc.start()
    try:
        t0 = time.monotonic()
        lines = tail_lines(log, 15)
        assert time.monotonic() - t0 < 2
        assert tracemalloc.get_traced_memory()[1] < 1 << 20
    finally:
        tracemalloc.stop()
    assert lines[-1] == "last words" and lines[0] == "line 86" and len(lines) == 15


@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n\x0b\x0c"
                                                                     "\x1c\x1d\x1e\x85\u2028\u2029"), max_size=30),
                max_size=40), st.integers(min_value=0, max_value=50))
def test_the_tail_is_the_last_lines(tmp_path_factory: pytest.TempPathFactory, lines: list[str], n: int) -> None:
    p = tmp_path_factory.mktemp("tail") / "log"
    p.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    assert list(tail_lines(p, n)) == (lines[-n:] if n else [])
