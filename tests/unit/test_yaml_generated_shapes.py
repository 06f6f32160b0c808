"""The YAML loader's bounds and standard features, each driven by generated shapes rather than one example:

- alias bombs of any width and depth (nodes) and of any scalar size and fan-out (characters): refused when the
  expansion is past the bound, read exactly when it is well inside it; refused in bounded time and memory, with a
  message that never quotes the expansion;
- nesting of any depth, block or flow or mixed: read exactly up to MAX_DEPTH, refused past it;
- brackets inside quoted scalars, block scalars and comments never count as nesting (``[`` in text is text);
- merge keys (``<<: *a``, ``<<: [*a, *b]``) give the spec's result for any generated mappings; a key written twice
  among one mapping's own keys is refused, also where it is spelled twice differently (``1``/``0x1``/``0o1``,
  ``true``/``yes``/``on``, ``a``/``"a"``), and also inside a mapping that is merged.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from torchrig.matrix.yamlsafe import MAX_DEPTH, MAX_NODES, MAX_SCALAR_CHARS, QUOTE_CHARS, YamlError, parse_yaml

from .test_yaml_safe import bounded

# ------------------------------------------------------------------------------------------------ alias bombs


def _layered(width: int, depth: int) -> tuple[str, int, Any]:
    """``depth`` anchored lists, each ``width`` aliases of the one before: (text, nodes once expanded, value)."""
    lines = [f"l0: &l0 [{', '.join(['1'] * width)}]"]
    value: Any = [1] * width
    nodes, per = 1 + 2 * (depth + 1), width + 1  # the root mapping, each layer's key and list
    total = per
    for k in range(1, depth + 1):
        lines.append(f"l{k}: &l{k} [{', '.join([f'*l{k - 1}'] * width)}]")
        per = 1 + width * per
        total += per
        value = [value] * width
    return "\n".join(lines) + "\n", nodes + total, value


@given(st.integers(1, 12), st.integers(1, 10))
def test_a_layered_alias_bomb_is_refused_past_the_node_bound_and_read_inside_it(width: int, depth: int) -> None:
    text, expanded, last = _layered(width, depth)
    if expanded > MAX_NODES:
        with bounded(), pytest.raises(YamlError, match=f"more than {MAX_NODES:,} nodes") as e:
            parse_yaml(text)
        assert len(str(e.value)) < QUOTE_CHARS + 200
        return
    if expanded > MAX_NODES // 2:
        return  # near the bound the exact count is the loader's business; either answer is bounded
    data = parse_yaml(text)
    assert data[f"l{depth}"] == last


@given(st.integers(1, 300_000), st.integers(1, 200))
def test_a_scalar_fanned_out_by_aliases_is_refused_past_the_character_bound(size: int, fanout: int) -> None:
    text = f"s: &s {'x' * size}\nl: [{', '.join(['*s'] * fanout)}]\n"
    expanded = size * (1 + fanout)
    if expanded > MAX_SCALAR_CHARS:
        with bounded(), pytest.raises(YamlError, match=f"more than {MAX_SCALAR_CHARS:,} characters") as e:
            parse_yaml(text)
        assert "x" * (QUOTE_CHARS + 1) not in str(e.value)  # the message never quotes the expansion
        return
    data = parse_yaml(text)
    assert data["l"] == ["x" * size] * fanout


# ------------------------------------------------------------------------------------------------ nesting

def _depth(value: Any) -> int:
    """Nodes on the longest path from the document's root: a scalar or an empty collection is 1."""
    if isinstance(value, dict):
        return 1 + max((max(1, _depth(v)) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 1


def _emit(value: Any, styles: list[str], indent: int = 0) -> str:
    """``value`` as YAML, each level in the style ``styles`` gives it (block, or flow: JSON, which YAML reads)."""
    style = styles[indent % len(styles)]
    if style == "flow" or not isinstance(value, (dict, list)) or not value:
        return json.dumps(value)
    pad = "  " * indent
    if isinstance(value, dict):
        return "\n" + "\n".join(f"{pad}{json.dumps(k)}: {_emit(v, styles, indent + 1)}" for k, v in value.items())
    return "\n" + "\n".join(f"{pad}- {_emit(v, styles, indent + 1).lstrip()}" for v in value)


@st.composite
def nested(draw: st.DrawFn) -> Any:
    """A chain of ``n`` lists and mappings (each maybe with a sibling scalar), ``n`` up to 3 x MAX_DEPTH."""
    n = draw(st.integers(1, 3 * MAX_DEPTH))
    value: Any = draw(st.sampled_from([1, "x", None, [], {}]))
    for _ in range(n):
        if draw(st.booleans()):
            value = [value] + ([draw(st.integers())] if draw(st.booleans()) else [])
        else:
            value = {"k": value, **({"s": "v"} if draw(st.booleans()) else {})}
    return value


@given(nested(), st.lists(st.sampled_from(["block", "flow"]), min_size=1, max_size=3))
def test_nesting_is_read_exactly_up_to_the_bound_and_refused_past_it(value: Any, styles: list[str]) -> None:
    text = "root: " + _emit(value, styles, 1) + "\n"
    depth = 1 + _depth(value)  # the document's root mapping
    with bounded(memory=True):  # CPU bound x3 with tracemalloc: 2 s alone failed once on a loaded 2-core CI box
        if depth <= MAX_DEPTH:
            assert parse_yaml(text) == {"root": value}
        else:
            with pytest.raises(YamlError, match="nests deeper"):
                parse_yaml(text)


_brackets = st.text(alphabet="[]{}x ,", min_size=1, max_size=5_000).map(lambda s: "[" * 100 + s)


@given(_brackets)
def test_brackets_in_a_block_scalar_are_text(text: str) -> None:
    lines = [" ".join(text[i:i + 70].split()) or "x" for i in range(0, len(text), 70)]
    for indicator in ("|", ">", "|-", "|+", "|2"):
        doc = "a: 1\nb: " + indicator + "\n" + "".join(f"  {line}\n" for line in lines) + "c: [1, [2]]\n"
        data = parse_yaml(doc)
        assert data["a"] == 1 and data["c"] == [1, [2]]
        assert data["b"].replace("\n", " ").split() == " ".join(lines).split()


@given(_brackets)
def test_brackets_in_quoted_scalars_and_comments_are_text(text: str) -> None:
    single = "'" + text.replace("'", "''") + "'"
    double = json.dumps(text)
    doc = f"a: {single}\nb: {double}\n# {text.replace(chr(10), ' ')}\nc: [x, {{y: {single}}}]  # {text[:50]}\n"
    assert parse_yaml(doc) == {"a": text, "b": text, "c": ["x", {"y": text}]}


@pytest.mark.parametrize(("doc", "value"), [("a: b#c\n", "b#c"), ("a: b #c\n", "b"), ("a: 'it''s'  # [[\n", "it's"),
                                            ("a: \"q\\\" [\"\n", 'q" [')])
def test_comments_start_only_after_a_space_and_quotes_close_where_yaml_says(doc: str, value: str) -> None:
    assert parse_yaml(doc) == {"a": value}


# ------------------------------------------------------------------------------------------------ merge keys

_keys = st.sampled_from(["a", "b", "c", "d", "e", "id", "torch"])
_mappings = st.dictionaries(_keys, st.integers(-5, 5) | st.text("xyz", max_size=3), max_size=5)


def _flow(mapping: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}: {json.dumps(v)}" for k, v in mapping.items()) + "}"


@given(st.lists(_mappings, min_size=1, max_size=4), _mappings, st.booleans())
def test_merges_give_the_specs_result(sources: list[dict[str, Any]], own: dict[str, Any], block: bool) -> None:
    anchors = "".join(f"s{i}: &s{i} {_flow(m)}\n" for i, m in enumerate(sources))
    merged = "*s0" if len(sources) == 1 else "[" + ", ".join(f"*s{i}" for i in range(len(sources))) + "]"
    if block:
        doc = anchors + "row:\n  <<: " + merged + "\n" + "".join(f"  {k}: {json.dumps(v)}\n" for k, v in own.items())
    else:
        doc = anchors + "row: {<<: " + merged + (", " if own else "") + _flow(own)[1:-1] + "}\n"
    expect: dict[str, Any] = {}
    for m in reversed(sources):  # earlier sources win over later ones, the mapping's own keys over all of them
        expect.update(m)
    expect.update(own)
    assert parse_yaml(doc)["row"] == expect


@given(_mappings.filter(bool), st.data())
def test_a_key_twice_in_a_merging_or_merged_mapping_is_refused(mapping: dict[str, Any], data: st.DataObject) -> None:
    key = data.draw(st.sampled_from(sorted(mapping)))
    twice = _flow(mapping)[:-1] + f", {key}: 0}}"
    where = data.draw(st.sampled_from(["own", "anchored", "inline"]))
    doc = {"own": f"s: &s {{z: 1}}\nrow: {{<<: *s, {twice[1:-1]}}}\n",
           "anchored": f"s: &s {twice}\nrow: {{<<: *s}}\n",
           "inline": f"row: {{<<: [{twice}], z: 1}}\n"}[where]
    with pytest.raises(YamlError, match="duplicate key"):
        parse_yaml(doc)


def _int_forms(n: int) -> list[str]:
    forms = [str(n), hex(n), f"+{n}", bin(n)]
    if n:
        forms.append("0" + format(n, "o"))  # YAML 1.1 octal
    if n >= 1000:
        forms.append(f"{n:_d}")
    return forms


_spellings: dict[str, Any] = {  # one value, written the ways YAML 1.1 (PyYAML) reads as equal keys
    "int": _int_forms,
    "bool": lambda b: ["true", "True", "yes", "Yes", "on", "ON"] if b else ["false", "no", "off", "Off", "NO"],
    "str": lambda s: [s, json.dumps(s), "'" + s + "'"],
}


@given(st.integers(0, 10**6), st.booleans(), st.text("abcxyz", min_size=1, max_size=6), st.data())
def test_a_key_spelled_twice_differently_is_refused(n: int, b: bool, s: str, data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(sorted(_spellings)))
    value = {"int": n, "bool": b, "str": s}[kind]
    forms = sorted(set(_spellings[kind](value)))
    first, second = data.draw(st.permutations(forms))[:2] if len(forms) > 1 else (forms[0], forms[0])
    assert parse_yaml(f"{first}: 1\n") == {value: 1}  # each spelling alone is that key
    with pytest.raises(YamlError, match="duplicate key"):
        parse_yaml(f"{first}: 1\n{second}: 2\n")


@given(st.lists(_mappings, min_size=2, max_size=8))
def test_chained_merges_resolve_row_by_row(rows: list[dict[str, Any]]) -> None:
    """Each row merges the one before and overrides some keys (base -> cuda row -> variant): found refused as a
    duplicate before (a merged node was checked after it had been flattened in place)."""
    doc = f"r0: &r0 {_flow(rows[0])}\n" + "".join(
        f"r{i}: &r{i} {{<<: *r{i - 1}{', ' if m else ''}{_flow(m)[1:-1]}}}\n" for i, m in enumerate(rows[1:], 1))
    data = parse_yaml(doc)
    expect: dict[str, Any] = {}
    for i, m in enumerate(rows):
        expect = {**expect, **m}
        assert data[f"r{i}"] == expect


@pytest.mark.parametrize(("doc", "message"), [
    ("a: &a {x: 1}\nb: {<<: *a, <<: *a}\n", "'<<' written twice"),
    ("a: &a 1\nb: {<<: *a}\n", "merges a mapping or a list of mappings"),
    ("a: &a {x: 1}\nb: {<<: [*a, 2]}\n", "merges a mapping or a list of mappings"),
    ("b: {<<: [[x]]}\n", "merges a mapping or a list of mappings"),
])
def test_a_merge_that_is_not_one_list_of_mappings_is_refused(doc: str, message: str) -> None:
    with pytest.raises(YamlError, match=message):
        parse_yaml(doc)
