"""Every place the project points a reader at exists: files under src/torchrig, tasks/ and bench/ named in code,
comments, .dockerignore, workflows and docs; README / docs links and their #anchors (slugged as GitHub slugs
headings); README sections named in quotes; and the ``torchrig.x.y`` modules and names that docstrings cite."""

from __future__ import annotations

import re
import unicodedata
from functools import cache
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]


def _sources() -> list[Path]:
    """What a reader reads besides the tests: code, the noxfile, CI, .dockerignore, workflows, docs."""
    files = [*(ROOT / "src" / "torchrig").rglob("*.py"), *(ROOT / "tasks").rglob("*.py"),
             *(ROOT / "bench").rglob("*.py"), ROOT / "noxfile.py", ROOT / ".ci" / "run",
             *ROOT.glob("**/.dockerignore"), *(ROOT / ".github").rglob("*.yml"), ROOT / "README.md",
             *(ROOT / "docs").glob("*.md"), ROOT / "pyproject.toml", ROOT / "matrix.yaml",
             *(ROOT / "images").rglob("Dockerfile*"), *(ROOT / "images").glob("*.sh")]
    return sorted(p for p in set(files) if p.is_file() and ".nox" not in p.parts)


def github_slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: inline markup dropped, lower case, letters, digits, ``-`` and ``_``
    kept, each space a hyphen (github-slugger)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link reads as its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    text = text.strip().lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


@cache
def anchors(md: Path) -> frozenset[str]:
    """Every anchor of a Markdown file: each heading's slug, repeats numbered -1, -2 as GitHub does."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    in_fence = False
    for line in md.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
            continue
        m = None if in_fence else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            slug = github_slug(m.group(1))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            out.add(slug if n == 0 else f"{slug}-{n}")
    return frozenset(out)


def _headings(md: Path) -> set[str]:
    return {m.group(1).strip() for m in re.finditer(r"^#{1,6}\s+(.*?)\s*$", md.read_text(encoding="utf-8"), re.M)}


_PATH = re.compile(r"(?<![\w/.-])((?:src/torchrig|tasks|bench)/[\w/.-]*?\.py)\b")
_DOC = re.compile(r"(?<![\w/.-])(README\.md|docs/[\w.-]+\.md)(#[\w-]+)?")
_LINK = re.compile(r"\]\(([^)\s#]*\.md)?(#[^)\s]+)?\)")
_QUOTED = re.compile(r"""README(?:\.md)?(?:'s)? (?:section )?["“]([^"”\n]+)["”]""")
_DOTTED = re.compile(r"(?<![\w.])torchrig(?:\.[A-Za-z_]\w*)+")


def _rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


def broken_paths(path: Path, text: str) -> list[str]:
    return [f"{_rel(path)}: {m.group(1)} does not exist" for m in _PATH.finditer(text)
            if "*" not in m.group(1) and not (ROOT / m.group(1)).exists()]


def broken_doc_refs(path: Path, text: str) -> list[str]:
    bad = []
    refs = [((ROOT / m.group(1)), m.group(2)) for m in _DOC.finditer(text)]
    if path.suffix == ".md":  # Markdown links resolve beside the file; `(#x)` is this file's anchor
        refs += [((path.parent / m.group(1)) if m.group(1) else path, m.group(2)) for m in _LINK.finditer(text)
                 if m.group(1) or m.group(2)]
    for target, anchor in refs:
        if not target.is_file():
            bad.append(f"{_rel(path)}: {target} does not exist")
        elif anchor and anchor[1:] not in anchors(target.resolve()):
            bad.append(f"{_rel(path)}: {_rel(target.resolve())} has no heading for {anchor}")
    for m in _QUOTED.finditer(text):
        if not any(m.group(1).lower() in h.lower() for h in _headings(ROOT / "README.md")):
            bad.append(f"{_rel(path)}: README has no section {m.group(1)!r}")
    return bad


@cache
def _module_text(dotted: str) -> str | None:
    base = ROOT / "src" / Path(*dotted.split("."))
    for f in (base.with_suffix(".py"), base / "__init__.py"):
        if f.is_file():
            return f.read_text(encoding="utf-8")
    return None


@cache
def _identifiers() -> frozenset[str]:
    """Dotted names the code uses as strings (container labels ``torchrig.env``, the schema id), not modules."""
    return frozenset(m.group(1) for p in (ROOT / "src" / "torchrig").rglob("*.py")
                     for m in re.finditer(r"[\"']((?:torchrig)(?:\.\w+)+)[\"']", p.read_text(encoding="utf-8")))


def broken_dotted(path: Path, text: str) -> list[str]:
    """``torchrig.a.b.name``: the longest module prefix exists, and what follows is defined in it."""
    bad = []
    for m in _DOTTED.finditer(text):
        if m.group(0) in _identifiers():
            continue
        parts = m.group(0).split(".")
        k = next((k for k in range(len(parts), 0, -1) if _module_text(".".join(parts[:k])) is not None), 0)
        if k == 0:
            continue
        rest = parts[k:]
        if not rest:
            continue
        if rest[0] in ("py", "toml", "yaml", "egg-info"):  # torchrig.toml, a file name
            continue
        src = _module_text(".".join(parts[:k])) or ""
        name = rest[0]
        if not re.search(rf"(^|\n)\s*(def|class|async def)\s+{name}\b|(^|\n){name}\s*[:=]|\b{name}\b.*\bimport\b|"
                         rf"\bimport\b[^\n]*\b{name}\b|\"{name}\"", src):
            bad.append(f"{_rel(path)}: {m.group(0)}: {'.'.join(parts[:k])} has no {name!r}")
    return bad


def test_every_reference_resolves() -> None:
    bad: list[str] = []
    for p in _sources():
        text = p.read_text(encoding="utf-8", errors="replace")
        bad += broken_paths(p, text) + broken_doc_refs(p, text) + broken_dotted(p, text)
    assert not bad, "references to nothing:\n" + "\n".join(sorted(set(bad)))


# The named cases that were stale (issue 23), as regression examples of each kind.
@pytest.mark.parametrize("text", [
    'README "Configuration" lists the settings.',
    "(src/torchrig/ci.py)",
    "see torchrig.build_context",
    "see [doctor](docs/doctor.md#no-such-heading)",
])
def test_the_stale_kinds_are_caught(text: str) -> None:
    p = ROOT / "README.md"
    assert broken_paths(p, text) + broken_doc_refs(p, text) + broken_dotted(p, text)


_words = st.lists(st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=12),
                  min_size=1, max_size=6)


@given(words=_words)
def test_a_slug_is_what_github_accepts(words: list[str]) -> None:
    slug = github_slug(" ".join(words))
    assert slug == slug.lower() and " " not in slug
    assert all(c in "-_" or unicodedata.category(c)[0] in "LN" for c in slug)
    assert github_slug(f"`{' '.join(words)}`") == slug  # code spans slug as their text


@pytest.mark.parametrize(("heading", "slug"), [
    ("Settings written once: `torchrig.toml`", "settings-written-once-torchrigtoml"),
    ("Behind a proxy, or with no registry at all", "behind-a-proxy-or-with-no-registry-at-all"),
    ("Verify and SBOM", "verify-and-sbom"),
    ("CUDA 12.1 / ROCm", "cuda-121--rocm"),
])
def test_slug_examples(heading: str, slug: str) -> None:
    assert github_slug(heading) == slug


def test_repeated_headings_are_numbered(tmp_path: Path) -> None:
    md = tmp_path / "x.md"
    md.write_text("# A\n## A\n```\n# not a heading\n```\n### A\n")
    assert anchors(md) == {"a", "a-1", "a-2"}
