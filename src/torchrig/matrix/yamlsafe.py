"""The one YAML loader for torchrig's files (matrix.yaml, compat.yaml, locks/bases.yaml): safe, standard, bounded.

- Safe: PyYAML's SafeLoader underneath, so ``!!python/object`` and other language tags are refused, never run.
- Standard: merge keys work (``<<: *row``, ``<<: [*a, *b]``; explicit keys override merged ones, earlier merged
  mappings override later ones, as the YAML merge-key spec says).
- Strict: a key written twice in one mapping is refused (PyYAML keeps the last one silently), also in a mapping
  that merges or is merged; with ``string_keys`` every mapping key must be a string (``3.10:`` is a float).
- Bounded: while the document is composed -- before anything is constructed -- nesting deeper than
  :data:`MAX_DEPTH`, more than :data:`MAX_NODES` nodes once aliases are expanded, or more than
  :data:`MAX_SCALAR_CHARS` characters of scalars once expanded (an alias bomb), is refused; an anchor that
  refers to itself too. The file size is capped by :mod:`torchrig.results.reading`.

Errors are :class:`YamlError` with a one-line message naming line and column; the quoted text is capped at
:data:`QUOTE_CHARS`, so a message can never expand what an alias points at.
"""

from __future__ import annotations

import os
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


def _explicit_duplicates(node: MappingNode) -> None:
    """Refuse a key written twice among ``node``'s own (not merged) keys."""
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG:
            continue
        if not isinstance(key_node, ScalarNode):
            continue  # a collection key is refused when constructed
        key = (key_node.tag, key_node.value)
        if key in seen:
            raise ConstructorError(None, None, f"duplicate key {_quote(key_node.value)!r} (first on line "
                                               f"{seen[key] + 1}); keep one of them", key_node.start_mark)
        seen[key] = key_node.start_mark.line


def _merge_sources(node: MappingNode) -> list[MappingNode]:
    out: list[MappingNode] = []
    for key_node, value in node.value:
        if key_node.tag == _MERGE_TAG:
            out.extend(v for v in (value.value if isinstance(value, SequenceNode) else [value])
                       if isinstance(v, MappingNode))
    return out


def _construct_mapping(loader: _Loader, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
    if not isinstance(node, MappingNode):
        raise ConstructorError(None, None, f"expected a mapping, found {node.id}", node.start_mark)
    _explicit_duplicates(node)
    for source in _merge_sources(node):
        _explicit_duplicates(source)
    loader.flatten_mapping(node)  # merged pairs first, then the explicit ones (which win): the spec's order
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
        if not isinstance(key_node, ScalarNode):
            raise ConstructorError(None, None, "a mapping key must be a scalar, not a list or mapping",
                                   key_node.start_mark)
        if loader.string_keys and not isinstance(key, str):
            raise ConstructorError(None, None, f"key {_quote(str(key_node.value))!r} is {type(key).__name__}, "
                                               "not a string; quote it", key_node.start_mark)
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


def _flow_too_deep(text: str) -> str | None:
    """Refuse ``[[[[...`` before PyYAML sees it: its scanner looks ahead over every open flow collection, which
    costs quadratic time (a 1 MiB line of brackets would take hours). Counts brackets outside quotes and
    comments, with slack (2 x MAX_DEPTH) so brackets in plain text cannot refuse a real file."""
    depth, quote, line, comment = 0, "", 1, False
    for ch in text:
        if ch == "\n":
            line += 1
            comment = False
            continue
        if comment:
            continue
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#":
            comment = True
        elif ch in "[{":
            depth += 1
            if depth > 2 * MAX_DEPTH:
                return f"{line}:nests deeper than {MAX_DEPTH} levels ([ and {{ opened {depth} deep)"
        elif ch in "]}":
            depth = max(0, depth - 1)
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

