"""The BERT task's text data: the shipped real review sentences, and the user's own CSV or TSV file.

The default is two files of the UCI "Sentiment Labelled Sentences" set (Kotzias, Denil, de Freitas, Smyth, KDD
2015; CC BY 4.0), shipped byte for byte in ``tasks/data/sentiment-labelled-sentences/`` with their attribution
(``SOURCE.md``): 1,000 Amazon and 1,000 Yelp review sentences, 500 negative and 500 positive each. Each line is
``sentence<TAB>label``; quotes are plain characters (some are unbalanced), so the files are read with quoting off.
Their sha256 sums are checked before use.

The held-out split is derived by a fixed rule, the same on every machine and for every ``--seed``: within each
stratum (file x label, 500 sentences) the sentences are ordered by the sha256 of their normalised text (lower
case, whitespace collapsed), then by line number, and the first quarter (125) is held out -- 1,500 training and
500 held-out sentences, balanced in source and label. Hashing the text keeps repeated sentences (15 occur twice)
on one side of the split.

A file of the user's own (``--data``): ``.tsv`` is tab-separated with quoting off, anything else is a CSV. It needs
``text`` and ``label`` columns (a ``.tsv`` may have no header: then its columns are text, label[, split]) and may
have ``split`` (``train``/``test``; a ``split`` column that is entirely empty counts as absent, and then a fixed
20 % is held out). A UTF-8 byte-order mark is read away. Every row needs a label; a label that cannot be a class
(blank, a name among numbers, one that only held-out rows carry, or one not in ``--labels``) is an error naming
its line, as is a split value other than the ones above.
"""

from __future__ import annotations

import csv
import hashlib
import io
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tasks._common import UsageError
from torchrig.results.io import file_sha256
from torchrig.results.reading import InputFileError, read_text

__all__ = [
    "HOLDOUT_SEED",
    "LABEL_NAMES",
    "SENTENCES_DIR",
    "SENTENCE_FILES",
    "TEST_SPLITS",
    "TRAIN_SPLITS",
    "Example",
    "TextData",
    "file_sha256",
    "load_labelled_sentences",
    "read_data_file",
]

Example = tuple[str, int]

SENTENCES_DIR = Path(__file__).resolve().parent / "data" / "sentiment-labelled-sentences"
# name -> sha256 of the shipped copy (SOURCE.md beside them says where the bytes come from).
SENTENCE_FILES = {
    "amazon_cells_labelled.txt": "47003fc0a0d4840b00e96e715b6189bad09e7443a3da41c4cbe12ffc79f86ae3",
    "yelp_labelled.txt": "c76468b7b5c6e56a0804d728345c5f84aa2142ddb214420f61cc9cfd4c00d2ea",
}
LABEL_NAMES = ["negative", "positive"]  # label 0 and 1 in the files
HELDOUT_PER_STRATUM = 125  # of 500: a quarter of each file x label
HOLDOUT_SEED = 12345  # the split of a user file without a split column: fixed, whatever --seed is
TRAIN_SPLITS = frozenset({"train", "training"})
TEST_SPLITS = frozenset({"test", "validation", "val", "dev", "heldout", "held-out"})


@dataclass(frozen=True, kw_only=True)
class TextData:
    """Training and held-out examples (label ids index ``labels``) and what they were read from."""

    name: str
    train: list[Example]
    test: list[Example]
    labels: list[str]
    sha256: dict[str, str]  # file name -> sha256 of the bytes read


def _normalised(text: str) -> str:
    return " ".join(text.lower().split())


def _tab_rows(lines: Iterable[str]) -> Iterator[list[str]]:
    # QUOTE_NONE: a '"' is text (the review files have unbalanced ones), a tab always separates.
    return csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)


# ------------------------------------------------------------------------------------- the shipped sentences


def load_labelled_sentences(folder: Path = SENTENCES_DIR) -> TextData:
    """The shipped Amazon + Yelp sentences with their fixed stratified split (see the module docstring)."""
    strata: dict[tuple[str, int], list[tuple[str, int, str]]] = {}  # (file, label) -> (hash, line, text)
    sums: dict[str, str] = {}
    for name, want in SENTENCE_FILES.items():
        path = folder / name
        if not path.is_file():
            raise UsageError(f"the shipped sentences {path} are missing: restore tasks/data/ from the repository")
        sums[name] = file_sha256(path)
        if sums[name] != want:
            raise UsageError(f"{path} has changed (sha256 {sums[name][:12]}..., shipped {want[:12]}...): restore "
                             "it from the repository")
        with path.open(encoding="utf-8", newline="") as f:
            for line_no, cells in enumerate(_tab_rows(f), start=1):
                if len(cells) != 2 or cells[1] not in ("0", "1"):
                    raise UsageError(f"{path}:{line_no}: expected 'sentence<TAB>0|1'")
                text = cells[0]
                key = hashlib.sha256(_normalised(text).encode("utf-8")).hexdigest()
                strata.setdefault((name, int(cells[1])), []).append((key, line_no, text))
    train: list[Example] = []
    test: list[Example] = []
    for (_, label), rows in sorted(strata.items()):
        for i, (_, _, text) in enumerate(sorted(rows)):
            (test if i < HELDOUT_PER_STRATUM else train).append((text, label))
    return TextData(name="sentiment-labelled-sentences (amazon, yelp)", train=train, test=test,
                    labels=list(LABEL_NAMES), sha256=sums)


# ------------------------------------------------------------------------------------------ the user's file


@dataclass(frozen=True)
class _Row:
    line: int
    text: str
    label: str
    split: str


def _records(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(column names, [(line number, cells)]) of a CSV, or a TSV with or without a header."""
    tsv = path.suffix.lower() == ".tsv"
    out: list[tuple[int, list[str]]] = []
    try:  # the reading layer: no FIFO or device, a size cap, strict UTF-8 naming the line; a BOM is read away
        text = read_text(path, kind="data")
    except InputFileError as e:
        raise UsageError(f"--data {e}") from None
    with io.StringIO(text, newline="") as f:
        if tsv:  # one record per line: quoting is off
            out = [(n, cells) for n, cells in enumerate(_tab_rows(f), start=1) if any(c.strip() for c in cells)]
        else:
            reader = csv.reader(f)
            for cells in reader:  # line_num: where the record ends (a quoted field may span lines)
                if any(c.strip() for c in cells):
                    out.append((reader.line_num, cells))
    if not out:
        return [], []
    first = [c.strip().lower() for c in out[0][1]]
    if "text" in first and "label" in first:
        return first, out[1:]
    if tsv and 2 <= len(first) <= 3:
        return ["text", "label", "split"][: len(first)], out
    return first, out[1:]


def _rows(path: Path) -> list[_Row]:
    try:
        cols, records = _records(path)
    except UnicodeDecodeError as e:
        raise UsageError(f"--data {path}: not UTF-8 text ({e})") from None
    except csv.Error as e:
        raise UsageError(f"--data {path}: not a readable CSV ({e})") from None
    missing = [c for c in ("text", "label") if c not in cols]
    if missing:
        raise UsageError(f"--data {path}: needs columns text and label, found {', '.join(cols) or 'none'}")
    at = {c: cols.index(c) for c in ("text", "label", "split") if c in cols}
    rows = []
    for line, cells in records:
        if len(cells) <= max(at["text"], at["label"]):
            raise UsageError(f"--data {path}, line {line}: {len(cells)} field(s), expected {len(cols)} "
                             f"({', '.join(cols)})")
        split = cells[at["split"]].strip().lower() if "split" in at and at["split"] < len(cells) else ""
        rows.append(_Row(line, cells[at["text"]], cells[at["label"]].strip(), split))
    rows = [r for r in rows if r.text.strip()]
    if not rows:
        raise UsageError(f"--data {path}: no rows with text")
    return rows


def _is_int(v: str) -> bool:
    return v.lstrip("-").isdigit()


def _label_ids(rows: list[_Row], path: Path, declared: list[str] | None) -> tuple[list[int], list[str]]:
    for r in rows:
        if not r.label:
            raise UsageError(f"--data {path}, line {r.line}: blank label (every row needs one)")
    if declared is not None:
        known = {v: i for i, v in enumerate(declared)}
        for r in rows:
            if r.label not in known:
                raise UsageError(f"--data {path}, line {r.line}: unknown label {r.label!r} (--labels: "
                                 f"{', '.join(declared)})")
        return [known[r.label] for r in rows], list(declared)
    numeric = [r for r in rows if _is_int(r.label)]
    if numeric and len(numeric) < len(rows):  # numbers and names mixed: the fewer kind is the odd one out
        mostly_numbers = 2 * len(numeric) >= len(rows)
        odd = next(r for r in rows if _is_int(r.label) != mostly_numbers)
        kind = "numbers" if mostly_numbers else "names"
        raise UsageError(f"--data {path}, line {odd.line}: unknown label {odd.label!r} (the other labels are "
                         f"{kind}; give --labels to name the classes)")
    if numeric:
        values = sorted({int(r.label) for r in rows})
        index = {v: i for i, v in enumerate(values)}
        return [index[int(r.label)] for r in rows], [str(v) for v in values]
    names = sorted({r.label for r in rows})
    index_n = {v: i for i, v in enumerate(names)}
    return [index_n[r.label] for r in rows], names


def read_data_file(path: Path, labels: list[str] | None = None) -> TextData:
    """Training and held-out examples from ``--data``; UsageError naming the file (and line) when it cannot be."""
    if path.is_dir():
        raise UsageError(f"--data {path}: is a directory (give a .csv or .tsv file)")
    if not path.exists():
        raise UsageError(f"--data {path}: no such file")
    rows = _rows(path)
    has_split = any(r.split for r in rows)
    if has_split:
        for r in rows:
            if r.split not in TRAIN_SPLITS and r.split not in TEST_SPLITS:
                what = f"unknown split {r.split!r}" if r.split else "blank split"
                raise UsageError(f"--data {path}, line {r.line}: {what} (use train or test; "
                                 f"{', '.join(sorted(TEST_SPLITS - {'test'}))} also mean held-out)")
        held = {i for i, r in enumerate(rows) if r.split in TEST_SPLITS}
    else:
        order = list(range(len(rows)))
        random.Random(HOLDOUT_SEED).shuffle(order)
        held = set(order[: max(1, len(rows) // 5)])
    ids, names = _label_ids(rows, path, labels)
    if len(set(ids)) < 2:
        raise UsageError(f"--data {path}: needs at least two different labels, found {sorted({r.label for r in rows})}")
    trained = {y for i, y in enumerate(ids) if i not in held}
    for i in sorted(held):
        if ids[i] not in trained:
            raise UsageError(f"--data {path}, line {rows[i].line}: label {rows[i].label!r} occurs only in held-out "
                             "rows: the model cannot learn it")
    train = [(r.text, y) for i, (r, y) in enumerate(zip(rows, ids, strict=True)) if i not in held]
    test = [(r.text, y) for i, (r, y) in enumerate(zip(rows, ids, strict=True)) if i in held]
    if not train or not test:
        raise UsageError(f"--data {path}: needs both training and held-out rows ({len(train)} / {len(test)})")
    return TextData(name=str(path), train=train, test=test, labels=names, sha256={path.name: file_sha256(path)})
