"""The rules one matrix.yaml row is validated by: one function per concern, each returning its problems.

:class:`Row` is the draft of one environment: the merged raw mapping (defaults + row) and the values the parsing
rules have read from it so far. A rule reads the draft, may record what it parsed (``row.torch``, ``row.release``),
and returns ``[(where, message)]``; :class:`~torchrig.matrix.validate.Validator` runs them in stages
(:data:`PRECHECK`, :data:`FIELDS`, :data:`URLS`), counts the problems in one place and builds the
:class:`~torchrig.matrix.model.Environment` once. A new key touches one rule (plus ``ENV_KEYS`` in
:mod:`~torchrig.matrix.row`).
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

from torchrig.matrix.compat import parse_version
from torchrig.matrix.model import ACCELERATORS, DEFAULT_PLATFORMS, PLATFORMS, TARGETS, Target, requirement_name
from torchrig.matrix.onnx_extras import onnx_extras_problems, onnxruntime_build_advice
from torchrig.matrix.platforms import platform_problems
from torchrig.matrix.references import image_reference_problem, index_url_problem
from torchrig.matrix.row import (
    ENV_KEYS,
    REQUIRED_VALUE,
    Problem,
    Row,
    Rule,
    string_list,
    string_value,
    suggest,
)
from torchrig.matrix.runtime_pins import runtime_pin_problems

__all__ = ["FIELDS", "PRECHECK", "URLS", "complete"]

_TORCH_RE = re.compile(r"^\d+\.\d+\.\d+$")
_PY_RE = re.compile(r"^3\.\d{1,2}$")
_GPU_VER_RE = re.compile(r"^\d+\.\d+(\.\d+)?$")
_REQ_RE = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._,-]+\])?"  # name[extras]
    r"\s*((===|==|!=|~=|<=|>=|<|>)\s*[A-Za-z0-9.*+!_-]+\s*,?\s*)*"  # version specifiers
    r"(;.*)?$"  # environment marker
)

# ------------------------------------------------------------------------------ stage 1: keys and empty values


def unknown_keys(row: Row) -> list[Problem]:
    return [(row.key(str(k)), f"unknown key {k!r}.{suggest(str(k), ENV_KEYS)}") for k in row.raw if k not in ENV_KEYS]


def empty_values(row: Row) -> list[Problem]:
    """`torch:` with nothing after it is null in YAML, not "absent": a required key given no value."""
    out = [(row.key(k), f"has no value: give one (e.g. {k}: {REQUIRED_VALUE[k]}) or remove the key")
           for k, v in row.merged.items() if v is None and k in REQUIRED_VALUE]
    row.merged = {k: v for k, v in row.merged.items() if v is not None or k not in REQUIRED_VALUE}
    return out


# ------------------------------------------------------------------------------------- stage 2: every field


def accelerator(row: Row) -> list[Problem]:
    row.accelerator = value = row.merged.get("accelerator")
    if value in ACCELERATORS:
        return []
    close = difflib.get_close_matches(str(value), ACCELERATORS, 1, 0.5)
    hint = f" Perhaps you meant {close[0]!r}?" if close else ""
    return [(row.key("accelerator"), f"{value!r} is not one of {', '.join(ACCELERATORS)}.{hint}")]


def versions(row: Row) -> list[Problem]:
    """torch, python, cuda, rocm and description: their types and forms, and the two that every row states."""
    out: list[Problem] = []
    m = row.merged
    row.torch = string_value(row.key("torch"), m.get("torch"), out, pattern=_TORCH_RE, example='"2.0.1"')
    if "torch" not in m:
        out.append((row.key("torch"), 'missing: state the exact torch release, e.g. torch: "2.0.1"'))
    row.python = string_value(row.key("python"), m.get("python"), out, pattern=_PY_RE, example='"3.10"')
    if "python" not in m:
        out.append((row.key("python"), 'missing: state the CPython minor version, e.g. python: "3.10"'))
    row.cuda = string_value(row.key("cuda"), m.get("cuda"), out, pattern=_GPU_VER_RE, example='"11.8"')
    row.rocm = string_value(row.key("rocm"), m.get("rocm"), out, pattern=_GPU_VER_RE, example='"5.4.2"')
    row.description = string_value(row.key("description"), m.get("description", ""), out) or ""
    return out


def gpu_keys(row: Row) -> list[Problem]:
    """cuda: for a cuda row, rocm: for a rocm row, and neither elsewhere."""
    out: list[Problem] = []
    acc, m = row.accelerator, row.merged
    if acc == "cuda" and "cuda" not in m:
        out.append((row.key("cuda"), 'missing: a cuda environment states its CUDA version, e.g. cuda: "11.8"'))
    if acc == "rocm" and "rocm" not in m:
        out.append((row.key("rocm"), 'missing: a rocm environment states its ROCm version, e.g. rocm: "5.4.2"'))
    if acc != "cuda" and "cuda" in m:
        out.append((row.key("cuda"), f"set, but accelerator is {acc!r}: remove it or set accelerator: cuda"))
    if acc != "rocm" and "rocm" in m:
        out.append((row.key("rocm"), f"set, but accelerator is {acc!r}: remove it or set accelerator: rocm"))
    return out


def torch_release(row: Row) -> list[Problem]:
    """The torch release is in the compat table, and torchvision is the one it pairs with (derived when absent)."""
    out: list[Problem] = []
    row.torchvision = string_value(row.key("torchvision"), row.merged.get("torchvision"), out, pattern=_TORCH_RE,
                              example='"0.15.2"')
    torch = row.torch
    if torch is None:
        return out
    row.release = release = row.compat.release(torch)
    if release is None:
        return [*out, (row.key("torch"), f"torch {torch} is not in torchrig's compatibility table (known: "
                       f"{row.compat.known_range}); pick a known release or add it to compat.yaml")]
    if torch not in release.torchvision:
        known = ", ".join(release.torchvision)
        return [*out, (row.key("torch"), f"torch {torch} is not a known {release.minor} release ({known})")]
    tv = release.torchvision[torch]
    if tv is None:
        out.append((row.key("torch"), f"torch {torch} has no torchvision release yet (compat.yaml); pick an earlier "
                    "torch, or add the pair to compat.yaml once torchvision ships one"))
    elif row.torchvision is not None and row.torchvision != tv:
        out.append((row.key("torchvision"), f"torchvision {row.torchvision} does not match torch {torch}; torch "
                    f"{torch} pairs with torchvision {tv} (remove the key to derive it)"))
    row.torchvision = tv
    if not release.confirmed:
        row.warnings.append(f"{row.eid}: the compatibility data for torch {release.minor} could not be confirmed "
                            "against a published source; check the index before relying on it")
    return out


def python_range(row: Row) -> list[Problem]:
    release, python = row.release, row.python
    if release is None or python is None:
        return []
    if not release.python_ok(python):
        return [(row.key("python"), f"torch {row.torch} has wheels for Python {release.python_min}-"
                 f"{release.python_max}, not {python}; pick a Python in that range or another torch")]
    if parse_version(python) > parse_version(release.compile_max_python):
        row.warnings.append(f"{row.eid}: torch.compile in torch {release.minor} supports Python <= "
                            f"{release.compile_max_python}; with Python {python} only eager mode works")
    return []


def cuda_build(row: Row) -> list[Problem]:
    """The torch release ships the row's CUDA build, and compat.yaml knows that CUDA's minimum driver."""
    cuda, release, torch = row.cuda, row.release, row.torch
    if cuda is None or row.accelerator != "cuda":
        return []
    out: list[Problem] = []
    if release is not None and cuda not in release.cuda:
        flav = "cu" + cuda.replace(".", "")
        first = row.compat.first_with_cuda(cuda)
        need = f"{flav} needs torch >= {first}.0" if first else f"no torch release in the table offers {flav}"
        if cuda in release.cuda_unadvertised:
            need = f"its {flav} wheels are on the index, but PyTorch neither advertises nor supports them"
        offers = ", ".join("cu" + c.replace(".", "") for c in release.cuda)
        out.append((row.key("cuda"), f"torch {torch} has no {flav} build; {need} ({torch} offers {offers})"))
    if cuda not in row.compat.driver_min:
        out.append((row.key("cuda"), f"CUDA {cuda} has no known minimum driver; known CUDA versions: "
                    f"{', '.join(row.compat.driver_min)}"))
    return out


def rocm_build(row: Row) -> list[Problem]:
    rocm, release, torch = row.rocm, row.release, row.torch
    if release is None or rocm is None or row.accelerator != "rocm" or rocm in release.rocm:
        return []
    first = row.compat.first_with_rocm(rocm)
    need = f"rocm{rocm} first shipped with torch {first}" if first else f"PyTorch never shipped a rocm{rocm} build"
    offers = ", ".join("rocm" + r for r in release.rocm) or "no ROCm build known to compat.yaml"
    return [(row.key("rocm"), f"torch {torch} has no rocm{rocm} build; {need} ({torch} offers {offers})")]


def _base_problems(row: Row, where: str, b: str) -> list[Problem]:
    """A base image whose Python or glibc cannot carry the row (compat.yaml ``base_images``)."""
    facts = row.compat.base_image(b)
    if facts is None:
        return []
    out: list[Problem] = []
    python, release = row.python, row.release
    if python is not None and facts.python and facts.python != python:
        out.append((where, f"base image {b} ships Python {facts.python} but python is {python}; use a base with "
                    f"Python {python} or set python: \"{facts.python}\""))
    need = release.needs_glibc if release is not None else None
    if release is not None and facts.glibc and need and parse_version(facts.glibc) < parse_version(need):
        out.append((where, f"base image {b} has glibc {facts.glibc}, but torch {row.torch} wheels are "
                    f"{release.wheel_tag} (glibc >= {need}); use a newer base (e.g. ubuntu22.04)"))
    return out


def targets(row: Row) -> list[Problem]:
    """A base image per target (runtime required), placeholders filled, each one a reference Docker accepts and
    able to carry the row's Python and torch."""
    where, raw = row.key("targets"), row.merged.get("targets")
    if raw is None:
        return [(where, "missing: give a base image per target, e.g. {runtime: python:{python}-slim-bookworm}")]
    if not isinstance(raw, dict):
        return [(where, f"expected a mapping of target -> base image, got {type(raw).__name__}")]
    out: list[Problem] = []
    found: dict[Target, str] = {}
    fmt = {"python": row.python or "", "torch": row.torch or "", "cuda": row.cuda or "", "rocm": row.rocm or ""}
    for tgt, base in raw.items():
        if tgt not in TARGETS:
            out.append((f"{where}.{tgt}", f"unknown target {tgt!r}.{suggest(str(tgt), TARGETS)}"))
            continue
        b = None if base is None else string_value(f"{where}.{tgt}", base, out)  # None: a defaults target switched off
        if b is None:
            continue
        try:
            b = b.format(**fmt)
        except (KeyError, IndexError, ValueError) as e:
            out.append((f"{where}.{tgt}", f"bad placeholder {e} in {base!r}"))
            continue
        if problem := image_reference_problem(b):
            out.append((f"{where}.{tgt}", problem))
            continue
        out += _base_problems(row, f"{where}.{tgt}", b)
        found[tgt] = b
    if "runtime" not in found:
        return [*out, (f"{where}.runtime", "missing: every environment needs a runtime base image")]
    row.targets = found
    return out


def indexes(row: Row) -> list[Problem]:
    out: list[Problem] = []
    row.index = string_value(row.key("index"), row.merged.get("index"), out)
    if row.index is None and "index" not in row.merged:
        out.append((row.key("index"), "missing: the package index torch comes from "
                    "(e.g. https://download.pytorch.org/whl/{flavour})"))
    row.extra_index = string_list(row.key("extra_index"), row.merged.get("extra_index"), out)
    return out


def extras(row: Row) -> list[Problem]:
    """Pip requirements, not torch/torchvision (the `torch` key pins them), agreeing with the row's numpy and the
    runtime pins its torch needs."""
    where = row.key("extras")
    out: list[Problem] = []
    row.extras = string_list(where, row.merged.get("extras"), out)
    reqs = row.extras or ()
    for req in reqs:
        if not _REQ_RE.match(req.strip()):
            out.append((where, f"{req!r} is not a pip requirement (e.g. 'transformers==4.40.2')"))
        elif requirement_name(req) in ("torch", "torchvision"):
            out.append((where, f"{req!r}: torch and torchvision are pinned by the `torch` key; remove them from "
                        "extras"))
    if row.torch:
        out += [(where, msg) for msg in onnx_extras_problems(row.torch, reqs)]
        if row.accelerator == "cuda":
            ort_problems, ort_warnings = onnxruntime_build_advice(row.torch, row.cuda, reqs)
            out += [(where, msg) for msg in ort_problems]
            row.warnings += [f"{row.eid}: {msg}" for msg in ort_warnings]
        out += [(where, msg) for msg in runtime_pin_problems(row.torch, reqs, row.compat)]
    return out


def budgets(row: Row) -> list[Problem]:
    where, raw = row.key("size_budget_mb"), row.merged.get("size_budget_mb")
    if raw is None:
        row.budgets = {}
        return []
    if not isinstance(raw, dict):
        return [(where, f"expected a mapping target -> megabytes, got {raw!r}")]
    out: list[Problem] = []
    found: dict[Target, int] = {}
    for tgt, mb in raw.items():
        if tgt not in TARGETS:
            out.append((f"{where}.{tgt}", f"unknown target {tgt!r}.{suggest(str(tgt), TARGETS)}"))
        elif not isinstance(mb, int) or isinstance(mb, bool) or mb <= 0:
            out.append((f"{where}.{tgt}", f"expected a positive integer (MB), got {mb!r}"))
        else:
            found[tgt] = mb
    row.budgets = found
    return out


def platforms(row: Row) -> list[Problem]:
    """A non-empty list of the platforms torchrig builds, each once (whether the wheels exist: :func:`wheels`)."""
    where, raw = row.key("platforms"), row.merged.get("platforms", list(DEFAULT_PLATFORMS))
    if not isinstance(raw, list) or not raw or not all(isinstance(p, str) for p in raw):
        return [(where, f"expected a non-empty list of platforms (e.g. [linux/amd64, linux/arm64]), got {raw!r}")]
    out: list[Problem] = []
    for p in raw:
        if p not in PLATFORMS:
            close = difflib.get_close_matches(p, PLATFORMS, 1, 0.6)
            hint = f" Perhaps you meant {close[0]!r}?" if close else ""
            out.append((where, f"{p!r} is not a platform torchrig builds; allowed: {', '.join(PLATFORMS)}.{hint}"))
    dups = sorted({p for p in raw if raw.count(p) > 1})
    if dups:
        out.append((where, f"{', '.join(dups)} listed more than once; list each platform once"))
    row.platforms = tuple(raw) if not out else None
    return out


def dockerfile(row: Row) -> list[Problem]:
    out: list[Problem] = []
    row.dockerfile = path = string_value(row.key("dockerfile"), row.merged.get("dockerfile", "images/Dockerfile"), out)
    if path is None:
        return out
    root = row.root
    # lexically (a symlinked images/ folder is fine; `../` or an absolute path elsewhere is not)
    if not Path(os.path.normpath(root.absolute() / path)).is_relative_to(Path(os.path.normpath(root.absolute()))):
        return [(row.key("dockerfile"), f"{path!r} is outside the project ({root}): the build context is the "
                 "project, so keep the Dockerfile inside it, e.g. images/Dockerfile")]
    if not (root / path).is_file():
        return [(row.key("dockerfile"), f"{path} does not exist (relative to {root})")]
    return []


def complete(row: Row) -> list[Problem]:
    if row.torch and row.python and row.torchvision and row.index is not None and row.targets is not None:
        return []
    return [(row.eid, "incomplete: torch, python, torchvision, index and targets are all needed")]


# ------------------------------------------------------------------------- stage 3: what needs all the fields


def index_urls(row: Row) -> list[Problem]:
    """The index URLs with their placeholders filled, each one pip can use."""
    assert row.index is not None
    fmt = {"python": row.python, "torch": row.torch, "cuda": row.cuda or "", "rocm": row.rocm or "",
           "flavour": row.flavour}
    try:
        row.index_url = row.index.format(**fmt)
        row.extra_urls = tuple(x.format(**fmt) for x in row.extra_index or ())
    except (KeyError, IndexError, ValueError) as e:
        return [(row.key("index"), f"bad placeholder {e} (use {{python}}, {{torch}}, {{flavour}}, {{cuda}}, "
                 "{rocm})")]
    return [(row.key(key), problem) for key, url in (("index", row.index_url), *(("extra_index", x)
            for x in row.extra_urls)) if (problem := index_url_problem(url))]


def wheels(row: Row) -> list[Problem]:
    """Every platform has a torch wheel of the row's flavour on its index (compat.yaml ``aarch64``)."""
    assert row.torch is not None
    return [(row.key("platforms"), msg) for msg in platform_problems(
        row.platforms or DEFAULT_PLATFORMS, torch=row.torch, flavour=row.flavour, index=row.index_url,
        compat=row.compat)]


# Run in order; a stage with problems ends the row (later stages need what earlier ones parsed).
PRECHECK: tuple[Rule, ...] = (unknown_keys, empty_values)
FIELDS: tuple[Rule, ...] = (accelerator, versions, gpu_keys, torch_release, python_range, cuda_build, rocm_build,
                            targets, indexes, extras, budgets, platforms, dockerfile)
URLS: tuple[Rule, ...] = (index_urls, wheels)
