"""YAML safe and standard: generated documents and mutations of the shipped matrix.yaml, through the loader,
load_matrix and ``torchrig validate`` -- exit 2 with a message, never another exception, within time and memory."""

from __future__ import annotations

import contextlib
import io
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torchrig.__main__ import main
from torchrig.errors import ConfigurationError
from torchrig.matrix.load import load_matrix
from torchrig.matrix.yamlsafe import MAX_DEPTH, MAX_NODES, QUOTE_CHARS, YamlError, parse_yaml
from torchrig.results.reading import CAPS

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = (ROOT / "matrix.yaml").read_bytes()
CPU_SECONDS = 2.0  # per case, in process CPU time (wall time on a shared CI box says little)
PEAK_BYTES = 64 << 20


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder where a matrix file sees the checkout's images/ and locks/ (the validator looks there)."""
    d = tmp_path_factory.mktemp("checkout")
    for name in ("images", "locks"):
        (d / name).symlink_to(ROOT / name)
    return d


@contextlib.contextmanager
def bounded(*, memory: bool = True) -> Iterator[None]:
    t0 = time.process_time()
    if memory:
        tracemalloc.start()
    try:
        yield
        if memory:
            peak = tracemalloc.get_traced_memory()[1]
            assert peak < PEAK_BYTES, f"peak memory {peak / (1 << 20):.0f} MiB"
    finally:
        if memory:
            tracemalloc.stop()
    spent = time.process_time() - t0
    assert spent < CPU_SECONDS * (3 if memory else 1), f"{spent:.1f} s of CPU"  # tracemalloc slows Python ~3x


def _load(path: Path) -> None:
    """load_matrix: a Matrix or a ConfigurationError whose every problem line is short -- nothing else."""
    with bounded():
        try:
            load_matrix(path)
        except ConfigurationError as e:
            assert e.problems and all(len(p) <= 1000 for p in e.problems), e.problems


def _validate(path: Path) -> None:
    """``torchrig validate PATH``: exit 0 or 2 with a message on stderr, no traceback."""
    err = io.StringIO()
    with bounded(memory=False), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(["validate", str(path)])
    assert rc in (0, 2), (rc, err.getvalue()[-2000:])
    if rc == 2:
        assert "torchrig: error:" in err.getvalue() and "Traceback" not in err.getvalue()


# ---------------------------------------------------------------- mutations of the shipped matrix.yaml

def _flip(data: bytes, i: int, b: int) -> bytes:
    i %= len(data)
    return data[:i] + bytes([b]) + data[i + 1:]


def _insert(data: bytes, i: int, what: bytes) -> bytes:
    i %= len(data) + 1
    return data[:i] + what + data[i:]


_BOMB = b"x-a: &a [1,1,1,1,1,1,1,1,1,1]\n" + b"".join(
    f"x-{chr(98 + k)}: &{chr(98 + k)} [{','.join([f'*{chr(97 + k)}'] * 10)}]\n".encode() for k in range(9))
_SNIPPETS = [_BOMB, b"&a ", b"*a ", b"<<: *a\n", b"- &r [*r]\n", b"!!python/object/apply:os.system ['id']\n",
             b"\x00", b"\xef\xbb\xbf", b"\xff\xfe", b"\t", b": :", b"? [a, b]\n: c\n", b"3.10: x\n", b"'", b"{",
             b"[" * 5000, b"- " * 200, b"a" * 200_000, "\u2028é\U0001F600".encode()]

mutations = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 20), st.integers(0, 255)).map(lambda t: _flip(SHIPPED, t[1], t[2])),
    st.integers(0, len(SHIPPED)).map(lambda i: SHIPPED[:i]),
    st.tuples(st.integers(0, 1 << 20), st.sampled_from(_SNIPPETS)).map(lambda t: _insert(SHIPPED, *t)),
    st.tuples(st.integers(0, 1 << 20), st.binary(min_size=1, max_size=64)).map(lambda t: _insert(SHIPPED, *t)),
    st.sampled_from(_SNIPPETS).map(lambda s: s + SHIPPED),
)


@given(mutations)
@settings(max_examples=120)
def test_mutated_matrix_through_load_matrix_is_a_matrix_or_exit_2(checkout: Path, data: bytes) -> None:
    path = checkout / "matrix.yaml"
    path.write_bytes(data)
    _load(path)


@given(mutations)
@settings(max_examples=40)
def test_mutated_matrix_through_torchrig_validate_exits_0_or_2(checkout: Path, data: bytes) -> None:
    path = checkout / "matrix.yaml"
    path.write_bytes(data)
    _validate(path)


# ---------------------------------------------------------------- generated YAML documents

_printable = st.characters(whitelist_categories=("L", "N", "P", "Zs"))  # YAML refuses raw control characters
scalars = st.one_of(st.text(_printable, max_size=12), st.integers(), st.booleans(), st.none())
keys = st.text(alphabet="abcdefgh_-<", min_size=1, max_size=6)


def _emit(value: object, indent: int = 0) -> str:
    """Block-style YAML of a generated value (strings quoted as JSON, which YAML reads)."""
    import json

    pad = "  " * indent
    if isinstance(value, dict):
        if not value:
            return "{}"
        rows = (f"{pad}{json.dumps(k, ensure_ascii=False)}: {_emit(v, indent + 1)}\n" for k, v in value.items())
        return "\n" + "".join(rows).rstrip("\n")
    if isinstance(value, list):
        if not value:
            return "[]"
        return "\n" + "".join(f"{pad}- {_emit(v, indent + 1).lstrip()}\n" for v in value).rstrip("\n")
    return json.dumps(value, ensure_ascii=False)


documents = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(keys, c, max_size=4),
                         max_leaves=25)


@given(documents)
def test_generated_documents_parse_to_what_they_say(value: object) -> None:
    text = "root: " + _emit(value, 1) + "\n"
    assert parse_yaml(text) == {"root": value}


@given(st.text(alphabet=" \n-:[]{}&*!|>'\"#,?<a1\t", max_size=200))
def test_generated_yaml_text_is_data_or_a_yaml_error(text: str) -> None:
    with bounded():
        try:
            parse_yaml(text, string_keys=True)
        except YamlError as e:
            assert len(str(e)) < QUOTE_CHARS + 200


# ---------------------------------------------------------------- the named examples

def test_merge_keys_work_for_matrix_rows(checkout: Path) -> None:
    text = SHIPPED.decode().replace("  - id: cpu\n", "  - &cpurow\n    id: cpu\n", 1)
    text += "\n  - <<: *cpurow\n    id: cpu2\n    description: the cpu row, merged\n"
    (checkout / "merged.yaml").write_text(text)
    m = load_matrix(checkout / "merged.yaml")
    cpu, cpu2 = m.get("cpu"), m.get("cpu2")
    assert cpu2.torch == cpu.torch and cpu2.python == cpu.python and cpu2.description == "the cpu row, merged"


def test_merge_key_precedence_follows_the_spec() -> None:
    doc = "a: &a {x: 1, y: 1}\nb: &b {x: 2, z: 2}\nc: {<<: [*a, *b], y: 3}\nd: {<<: *b, x: 9}\n"
    data = parse_yaml(doc)
    assert data["c"] == {"x": 1, "y": 3, "z": 2}  # explicit over merged; earlier merged over later
    assert data["d"] == {"x": 9, "z": 2}


@pytest.mark.parametrize("doc", ["a: 1\na: 2\n", "b: &b {x: 1}\nc: {<<: *b, y: 1, y: 2}\n",
                                 "c: {<<: {x: 1, x: 2}}\n"])
def test_duplicate_keys_are_refused_also_where_a_mapping_merges(doc: str) -> None:
    with pytest.raises(YamlError, match="duplicate key"):
        parse_yaml(doc)


def test_an_alias_bomb_is_refused_fast_and_small(checkout: Path) -> None:
    with bounded(), pytest.raises(YamlError, match=f"more than {MAX_NODES:,} nodes"):
        parse_yaml(_BOMB.decode())  # 10**10 nodes once expanded, 300 bytes written
    (checkout / "bomb.yaml").write_bytes(_BOMB + SHIPPED)
    with bounded(), pytest.raises(ConfigurationError, match="alias bomb") as e:
        load_matrix(checkout / "bomb.yaml")
    assert len(str(e.value)) < 1000


@pytest.mark.parametrize("doc", ["a: &a [*a]\n", "a: &a {b: *a}\n"])
def test_a_recursive_alias_is_refused(doc: str) -> None:
    with pytest.raises(YamlError, match="recursive"):
        parse_yaml(doc)


@pytest.mark.parametrize("doc", ["[" * 100_000, "x: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1),
                                 "".join("  " * i + "a:\n" for i in range(MAX_DEPTH + 5))])
def test_deep_nesting_is_refused_fast(doc: str) -> None:
    with bounded(), pytest.raises(YamlError, match="nests deeper"):
        parse_yaml(doc)


@pytest.mark.parametrize("doc", ["!!python/object/apply:os.system ['echo pwned']\n", "a: !!python/name:os.system\n"])
def test_language_tags_are_refused(doc: str) -> None:
    with pytest.raises(YamlError, match="could not determine a constructor"):
        parse_yaml(doc)


@pytest.mark.parametrize(("doc", "word"), [("3.10: x\n", "float"), ("1: x\n", "int"), ("? [a]\n: b\n", "scalar")])
def test_non_string_keys_are_refused_in_torchrig_files(doc: str, word: str) -> None:
    with pytest.raises(YamlError, match=word):
        parse_yaml(doc, string_keys=True)


def test_a_matrix_over_the_cap_is_refused_before_parsing(checkout: Path) -> None:
    path = checkout / "huge.yaml"
    path.write_bytes(SHIPPED + b"#" * CAPS["matrix"])
    with bounded(), pytest.raises(ConfigurationError, match="limit for a matrix file"):
        load_matrix(path)


@pytest.mark.parametrize("what", ["fifo", "dir", "devnull"])
def test_validate_names_a_special_file(tmp_path: Path, what: str, capsys: pytest.CaptureFixture[str]) -> None:
    import os

    path = {"fifo": tmp_path / "m.yaml", "dir": tmp_path, "devnull": Path(os.devnull)}[what]
    if what == "fifo":
        os.mkfifo(path)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert {"fifo": "is a FIFO", "dir": "is a directory", "devnull": "character device"}[what] in err
