"""The one YAML loader for torchrig's files (matrix.yaml, compat.yaml, locks/bases.yaml): safe, standard, bounded.

- Safe: PyYAML's SafeLoader underneath, so ``!!python/object`` and other language tags are refused, never run.
- Standard: merge keys work (``<<: *row``, ``<<: [*a, *b]``; explicit keys override merged ones, earlier merged
  mappings override later ones, as the YAML merge-key spec says).
- Strict: a key written twice in one mapping is refused (PyYAML keeps the last one silently), also in a mapping
  that merges or is merged, and also when spelled twice differently (``1`` and ``0x1``); with ``string_keys``
  every mapping key must be a string (``3.10:`` is a float).
- Bounded: while the document is composed -- before anything is constructed -- nesting deeper than
  :data:`MAX_DEPTH`, more than :data:`MAX_NODES` nodes once aliases are expanded, or more than
  :data:`MAX_SCALAR_CHARS` characters of scalars once expanded (an alias bomb), is refused; an anchor that
  refers to itself too. The file size is capped by :mod:`torchrig.results.reading`.

Errors are :class:`YamlError` with a one-line message naming line and column; the quoted text is capped at
:data:`QUOTE_CHARS`, so a message can never expand what an alias points at.
"""

from __future__ import annotations

import os
import re
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from torchrig.results.reading import read_text

__all__ = ["MAX_DEPTH", "MAX_NODES", "MAX_SCALAR_CHARS", "QUOTE_CHARS", "YamlError", "load_yaml", "parse_yaml"]

MAX_DEPTH = 32  # matrix.yaml nests 4 deep, compat.yaml 4
MAX_NODES = 100_000  # nodes after alias expansion; the shipped matrix.yaml has ~300, compat.yaml ~2,000
MAX_SCALAR_CHARS = 4 << 20  # characters of scalar text after alias expansion (the file itself is capped at 1 MiB)
QUOTE_CHARS = 200
_MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlError(ValueError):
    """The document is not YAML torchrig accepts: ``problem``, and ``where`` (``line:column``) when known."""

    def __init__(self, problem: str, where: str | None = None, *, path: str | os.PathLike[str] | None = None) -> None:
        self.problem, self.where, self.path = problem, where, path
        prefix = ":".join(str(x) for x in (path, where) if x is not None)
        super().__init__(f"{prefix}: {problem}" if prefix else problem)


def _quote(text: str) -> str:
    return text if len(text) <= QUOTE_CHARS else text[:QUOTE_CHARS] + f"... ({len(text)} characters)"


class _Loader(yaml.SafeLoader):
    """Counts what composing the document would expand to, and refuses bombs before any object exists."""

    string_keys = False

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0
        self._chars = 0
        self._sizes: dict[int, tuple[int, int]] = {}  # id(anchored node) -> (nodes, chars) it expands to
        self._open: set[str] = set()  # anchors of collections still being composed (an alias to one recurses)
        self.flat: dict[int, list[tuple[Node, Node]]] = {}  # id(mapping node) -> its pairs, merges resolved

    def _account(self, nodes: int, chars: int, mark: Any) -> None:  # mark: a yaml Mark
        self._nodes += nodes
        self._chars += chars
        if self._nodes > MAX_NODES:
            raise ComposerError(None, None, f"expands to more than {MAX_NODES:,} nodes (aliases counted each "
                                            "time they are used): an alias bomb, or far more than torchrig needs",
                                mark)
        if self._chars > MAX_SCALAR_CHARS:
            raise ComposerError(None, None, f"expands to more than {MAX_SCALAR_CHARS:,} characters of text "
                                            "(aliases counted each time they are used)", mark)

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self._open:
                raise ComposerError(None, None, f"alias *{_quote(event.anchor)} refers to the node that contains "
                                                "it (a recursive structure)", event.start_mark)  # type: ignore[arg-type]
            node = self.anchors.get(event.anchor)
            if node is not None:
                self._account(*self._sizes.get(id(node), (1, 0)), event.start_mark)
            return super().compose_node(parent, index)  # type: ignore[no-untyped-call, no-any-return]
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise ComposerError(None, None, f"nests deeper than {MAX_DEPTH} levels", event.start_mark)
        before = (self._nodes, self._chars)
        is_scalar = isinstance(event, yaml.ScalarEvent)
        self._account(1, len(event.value) if is_scalar else 0, event.start_mark)
        anchor = None if is_scalar else getattr(event, "anchor", None)
        if anchor is not None:
            self._open.add(anchor)
        try:
            node = super().compose_node(parent, index)  # type: ignore[no-untyped-call]
        finally:
            self._depth -= 1
            if anchor is not None:
                self._open.discard(anchor)
        if getattr(event, "anchor", None) is not None and node is not None:
            self._sizes[id(node)] = (self._nodes - before[0], self._chars - before[1])
        return node  # type: ignore[no-any-return]


def _explicit_duplicates(loader: _Loader, node: MappingNode) -> None:
    """Refuse a key written twice among ``node``'s own (not merged) keys: equal once constructed, as the dict
    would keep only one (``1`` and ``0x1``, ``true`` and ``yes``, ``a`` and ``"a"``)."""
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG:
            continue
        if not isinstance(key_node, ScalarNode):
            continue  # a collection key is refused when constructed
        key = loader.construct_object(key_node)  # type: ignore[no-untyped-call]
        try:
            hash(key)
        except TypeError:  # not a dict key at all: refused when the mapping is constructed
            continue
        if key in seen:
            raise ConstructorError(None, None, f"duplicate key {_quote(key_node.value)!r} (first on line "
                                               f"{seen[key] + 1}); keep one of them", key_node.start_mark)
        seen[key] = key_node.start_mark.line


_VALUE_TAG = "tag:yaml.org,2002:value"


def _merge_list(node: MappingNode) -> list[MappingNode]:
    """The mappings ``node``'s one ``<<`` key merges, in the order written."""
    merges = [(k, v) for k, v in node.value if k.tag == _MERGE_TAG]
    if len(merges) > 1:
        raise ConstructorError(None, None, "'<<' written twice in one mapping: merge several with one "
                                           "'<<: [*a, *b]'", merges[1][0].start_mark)
    if not merges:
        return []
    value = merges[0][1]
    sources = [value] if isinstance(value, MappingNode) else value.value if isinstance(value, SequenceNode) else None
    if sources is None or not all(isinstance(v, MappingNode) for v in sources):
        raise ConstructorError(None, None, "'<<' merges a mapping or a list of mappings (<<: *row, "
                                           "<<: [*a, *b])", value.start_mark)
    return sources


def _pairs(loader: _Loader, node: MappingNode) -> list[tuple[Node, Node]]:
    """``node``'s (key, value) pairs with its merges resolved, without changing the node (an anchored node is
    shared, and PyYAML's flatten_mapping rewrites it in place; PyYAML 6.0.4's also drops repeated merged keys by
    the id() of the key's text, so for keys longer than one character, which CPython does not intern, a later
    source wins against the spec).

    The merge-key spec's order, by construction: the merged pairs come first, each source's after those of the
    sources written after it (so an earlier source wins), then the mapping's own keys (which win over all of them).
    A key written twice among one mapping's own keys is refused; in a source, among that source's own keys.
    """
    done = loader.flat.get(id(node))
    if done is not None:
        return done
    _explicit_duplicates(loader, node)
    merged: list[tuple[Node, Node]] = []
    for source in reversed(_merge_list(node)):
        merged.extend(_pairs(loader, source))
    own = []
    for key_node, value_node in node.value:
        if key_node.tag == _MERGE_TAG:
            continue
        if key_node.tag == _VALUE_TAG:  # '=' as a key: a string, as PyYAML reads it
            key_node.tag = "tag:yaml.org,2002:str"
        own.append((key_node, value_node))
    loader.flat[id(node)] = out = merged + own
    return out


def _construct_mapping(loader: _Loader, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
    if not isinstance(node, MappingNode):
        raise ConstructorError(None, None, f"expected a mapping, found {node.id}", node.start_mark)
    mapping: dict[Any, Any] = {}
    for key_node, value_node in _pairs(loader, node):
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
        if not isinstance(key_node, ScalarNode):
            raise ConstructorError(None, None, "a mapping key must be a scalar, not a list or mapping",
                                   key_node.start_mark)
        if loader.string_keys and not isinstance(key, str):
            raise ConstructorError(None, None, f"key {_quote(str(key_node.value))!r} is {type(key).__name__}, "
                                               "not a string; quote it", key_node.start_mark)
        try:
            hash(key)
        except TypeError:  # a scalar tagged !!set, !!seq, !!omap or !!pairs constructs a collection
            raise ConstructorError(None, None, f"key {_quote(str(key_node.value))!r} tagged {key_node.tag} is a "
                                               f"{type(key).__name__}, which cannot be a mapping key",
                                   key_node.start_mark) from None
        mapping[key] = loader.construct_object(value_node, deep=deep)  # type: ignore[no-untyped-call]
    return mapping


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class _StringKeyLoader(_Loader):
    string_keys = True


def _error(e: yaml.YAMLError) -> YamlError:
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    where = f"{mark.line + 1}:{mark.column + 1}" if mark is not None else None
    return YamlError(_quote(" ".join(str(problem).split())), where)


_QUOTE_OPENS_AFTER = frozenset(" \t\r\n[{,:")  # where a quoted scalar can start; in "it's" the ' is plain text
_BLOCK_SCALAR = re.compile(r"[|>][-+1-9]{0,2}[ \t]*(?:#[^\n]*)?(?:\n|$)")  # | or > ending its line: text follows


def _quote_end(text: str, i: int) -> int:
    """The index after the quoted scalar opening at ``text[i]`` (``''`` inside single quotes, ``\\x`` inside
    double quotes escape), or ``len(text)`` when it does not close."""
    q, j = text[i], i + 1
    while True:
        k = text.find(q, j)
        if k < 0:
            return len(text)
        if q == "'" and text.startswith("''", k):
            j = k + 2
            continue
        if q == '"':
            slashes = k - len(text[j:k].rstrip("\\")) - j  # backslashes right before the quote
            if slashes % 2:
                j = k + 1
                continue
        return k + 1


def _skip_block_scalar(text: str, i: int) -> int:
    """From the ``|``/``>`` at ``text[i]``: the index of the first line after the block scalar's text (lines
    blank or indented deeper than the indicator's line)."""
    line_start = text.rfind("\n", 0, i) + 1
    indent = len(text[line_start:i]) - len(text[line_start:i].lstrip(" "))
    j = text.find("\n", i)
    while j >= 0:
        nxt = text.find("\n", j + 1)
        row = text[j + 1:nxt if nxt >= 0 else len(text)]
        if row.strip() and len(row) - len(row.lstrip(" ")) <= indent:
            return j + 1
        j = nxt
    return len(text)


def _flow_too_deep(text: str) -> str | None:
    """Refuse ``[[[[...`` before PyYAML sees it: its scanner looks ahead over every open flow collection, which
    costs quadratic time (a 1 MiB line of brackets would take hours). Counts brackets outside quoted scalars,
    comments (``#`` after a space or at a line's start: ``a#b`` is text) and block scalars (``|``, ``>``), with
    slack (2 x MAX_DEPTH) so that brackets in plain text cannot refuse a real file."""
    depth, i, n = 0, 0, len(text)
    while i < n:
        ch = text[i]
        prev = text[i - 1] if i else "\n"
        if ch in "'\"" and prev in _QUOTE_OPENS_AFTER:
            i = _quote_end(text, i)
            continue
        if ch == "#" and prev in " \t\r\n":
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if ch in "|>" and depth == 0 and prev in " \t\n" and _BLOCK_SCALAR.match(text, i):
            i = _skip_block_scalar(text, i)
            continue
        if ch in "[{":
            depth += 1
            if depth > 2 * MAX_DEPTH:
                line = text.count("\n", 0, i) + 1
                return f"{line}:nests deeper than {MAX_DEPTH} levels ([ and {{ opened {depth} deep)"
        elif ch in "]}":
            depth = max(0, depth - 1)
        i += 1
    return None


def parse_yaml(text: str, *, string_keys: bool = False) -> Any:
    """The one document in ``text``; :class:`YamlError` when it is not YAML torchrig accepts."""
    if found := _flow_too_deep(text):
        line, problem = found.split(":", 1)
        raise YamlError(problem, f"{line}:1")
    try:
        loader = (_StringKeyLoader if string_keys else _Loader)(text)
    except yaml.YAMLError as e:  # the reader refuses NUL and other non-printable characters up front
        raise _error(e) from None
    try:
        return loader.get_single_data()
    except yaml.YAMLError as e:
        raise _error(e) from None
    except RecursionError:  # a guard behind MAX_DEPTH and the bracket count
        raise YamlError(f"nests deeper than {MAX_DEPTH} levels") from None
    finally:
        loader.dispose()


def load_yaml(path: str | os.PathLike[str], *, kind: str, string_keys: bool = False) -> Any:
    """Read ``path`` through the reading layer (size cap, special files, UTF-8) and parse it as :func:`parse_yaml`.

    :class:`InputFileError` for the file, :class:`YamlError` (prefixed with the path) for its content.
    """
    text = read_text(path, kind=kind)
    try:
        return parse_yaml(text, string_keys=string_keys)
    except YamlError as e:
        raise YamlError(e.problem, e.where, path=path) from None

