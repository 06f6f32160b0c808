"""``torchrig compat-check``: compare compat.yaml with what a live package index offers for torch and torchvision.

Per release it reads the Linux x86_64 wheels' local-version builds (``+cpu``, ``+cu126``, ``+rocm7.2``; plain =
PyPI's default build) and Python tags (``cp311``) from a simple index (:mod:`torchrig.matrix.simple_index`) and
reports, as a diff, what compat.yaml claims that the index lacks (``-``) and what the index has that compat.yaml
does not know (``+``). An index that carries local-version builds is read as the PyTorch index (compared with
``cuda``/``cuda_unadvertised``/``rocm`` + ``cpu``); one with plain builds only is read as PyPI (compared with the
plain build, and with ``pypi_cuda`` where the index serves PEP 658 core metadata). The Linux aarch64 wheels are
compared with the ``aarch64`` table (:mod:`torchrig.matrix.compat_aarch64`).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from torchrig.errors import UsageError
from torchrig.matrix.compat import Compat, TorchRelease, parse_version
from torchrig.matrix.compat_aarch64 import (
    Arm,
    aarch64_diffs,
    free_threaded_diffs,
    observe_aarch64,
    observe_free_threaded,
)
from torchrig.matrix.simple_index import IndexFile, fetch_metadata, fetch_project, parse_wheel

__all__ = ["PYPI_INDEX", "PYTORCH_INDEX", "Report", "check_index", "compare", "parse_selection"]

PYTORCH_INDEX = "https://download.pytorch.org/whl"
PYPI_INDEX = "https://pypi.org/simple"
_FINAL = re.compile(r"^\d+\.\d+\.\d+$")
_SELECT = re.compile(r"^\d+\.\d+(\.\d+)?$")
# The CUDA a plain wheel is built for, from its pins: nvidia-cuda-runtime-cu12==12.8.90, cuda-toolkit[...]==13.2.0
_CUDA_PIN = re.compile(r"^(nvidia-cuda-runtime(-cu\d+)?|cuda-toolkit)\s*(\[[^\]]*\])?\s*\(?\s*==\s*(\d+)\.(\d+)")

# version -> local label ("" = plain) -> Python tags; plus one file per (version, label) for its metadata
Builds = dict[str, dict[str, set[str]]]
MetadataReader = Callable[[IndexFile], list[str]]


@dataclass(frozen=True, kw_only=True)
class Observed:
    builds: Builds
    files: dict[tuple[str, str], IndexFile]
    aarch64: Arm = field(default_factory=dict)  # the Linux aarch64 wheels (compat.yaml aarch64)
    free_threaded: dict[str, set[str]] = field(default_factory=dict)  # version -> Pythons with cp3XXt wheels


@dataclass(kw_only=True)
class Report:
    index: str
    kind: str  # "PyTorch index" or "PyPI"
    checked: dict[str, int] = field(default_factory=dict)  # project -> releases compared
    diffs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def agrees(self) -> bool:
        return not self.diffs

    def render(self) -> str:
        counts = ", ".join(f"{n} {p} releases" for p, n in self.checked.items())
        lines = [f"{self.index} ({self.kind}): {counts} compared with compat.yaml"]
        lines += [f"note: {n}" for n in self.notes]
        if self.agrees:
            lines.append("in agreement")
        else:
            lines.append(f"{len(self.diffs)} disagreement{'s' if len(self.diffs) != 1 else ''} "
                         "(- in compat.yaml, not on the index; + on the index, not in compat.yaml):")
            lines += [f"  {d}" for d in self.diffs]
        return "\n".join(lines) + "\n"


def parse_selection(items: Iterable[str]) -> tuple[str, ...]:
    """The TORCH arguments (``2.12`` or ``2.12.1``), checked."""
    out = tuple(items)
    for item in out:
        if not _SELECT.match(item):
            raise UsageError(f"{item!r} is not a torch release: give a minor (2.12) or a patch release (2.12.1)")
    return out


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def _selected(version: str, selection: tuple[str, ...]) -> bool:
    return not selection or any(version == s or _minor(version) == s for s in selection)


def observe(files: Iterable[IndexFile]) -> Observed:
    """The final releases' Linux x86_64 builds in an index listing (yanked files are not offers), and its aarch64
    wheels."""
    builds: Builds = defaultdict(lambda: defaultdict(set))
    first: dict[tuple[str, str], IndexFile] = {}
    listed = list(files)
    for f in listed:
        w = parse_wheel(f.filename)
        if w is None or f.yanked or not w.linux_x86_64 or not _FINAL.match(w.version):
            continue
        builds[w.version][w.local].update(w.python_tags)
        first.setdefault((w.version, w.local), f)
    return Observed(builds={v: dict(b) for v, b in builds.items()}, files=first, aarch64=observe_aarch64(listed),
                    free_threaded=observe_free_threaded(listed))


def _expected(compat: Compat, selection: tuple[str, ...]) -> dict[str, dict[str, TorchRelease]]:
    """project -> version -> the torch release whose builds it should have."""
    out: dict[str, dict[str, TorchRelease]] = {"torch": {}, "torchvision": {}}
    for release in compat.releases.values():
        for torch, tv in release.torchvision.items():
            if _selected(torch, selection):
                out["torch"][torch] = release
                if tv is not None:
                    out["torchvision"][tv] = release
    return out


def _known_series(compat: Compat, project: str) -> dict[str, str]:
    """minor series of ``project`` -> the torch minor it belongs to (torchvision 0.27 -> torch 2.12)."""
    out = {}
    for release in compat.releases.values():
        for torch, tv in release.torchvision.items():
            version = torch if project == "torch" else tv
            if version is not None:
                out[_minor(version)] = release.minor
    return out


def _cp(python: str) -> str:
    return "cp" + python.replace(".", "")


def _diff_release(project: str, version: str, release: TorchRelease, have: dict[str, set[str]],
                  kind: str) -> list[str]:
    out = []
    want_builds = set(release.flavours) if kind == "PyTorch index" else {""}
    name = f"{project} {version}"
    missing = sorted(want_builds - set(have))
    extra = sorted(set(have) - want_builds - ({""} if kind == "PyTorch index" else set()))
    if missing:
        out.append(f"- {name}: builds {', '.join(_label(b) for b in missing)}")
    if extra:
        out.append(f"+ {name}: builds {', '.join(_label(b) for b in extra)}")
    want_tags = {_cp(p) for p in release.pythons}
    if project == "torch":
        want_tags |= {_cp(p) for p in release.torch_only_python}
    by_diff: dict[tuple[str, str], list[str]] = defaultdict(list)  # ("-" or "+", tags) -> builds
    for build in sorted(want_builds & set(have)):
        for sign, tags in (("-", want_tags - have[build]), ("+", have[build] - want_tags)):
            if tags:
                by_diff[(sign, ", ".join(sorted(tags, key=_tag_key)))].append(_label(build))
    for (sign, listed), labels in sorted(by_diff.items()):
        where = f"{name} ({', '.join(labels)})" if kind == "PyTorch index" else name
        out.append(f"{sign} {where}: Python {listed} (compat.yaml: {release.python_min}-{release.python_max})")
    return out


def _label(build: str) -> str:
    return build or "plain (PyPI default)"


def _tag_key(tag: str) -> tuple[int, str]:
    m = re.match(r"cp3(\d+)", tag)
    return (int(m.group(1)) if m else 0, tag)


def pypi_cuda(requires: Iterable[str]) -> str | None:
    """The CUDA a plain torch wheel is built for, from its ``Requires-Dist`` pins (None for a CPU-only wheel)."""
    for req in requires:
        m = _CUDA_PIN.match(req.strip())
        if m:
            return f"{m.group(4)}.{m.group(5)}"
    return None


def compare(compat: Compat, observed: dict[str, Observed], *, index: str, selection: tuple[str, ...] = (),
            read_metadata: MetadataReader | None = None) -> Report:
    """The disagreements between compat.yaml and an index's listing of torch and torchvision."""
    torch_obs = observed["torch"]
    pytorch_style = any(local for v, b in torch_obs.builds.items() for local in b if _minor(v) in compat.releases)
    report = Report(index=index, kind="PyTorch index" if pytorch_style else "PyPI")
    expected = _expected(compat, selection)
    unchecked_cuda = False
    for project, releases in expected.items():
        obs = observed[project]
        report.checked[project] = len(releases)
        for version in sorted(releases, key=parse_version):
            release = releases[version]
            if version not in obs.builds:
                report.diffs.append(f"- {project} {version}: not on the index")
                continue
            report.diffs += _diff_release(project, version, release, obs.builds[version], report.kind)
            if project == "torch" and report.kind == "PyPI" and "" in obs.builds[version]:
                file = obs.files[(version, "")]
                if read_metadata is None or not file.has_metadata:
                    unchecked_cuda = True
                    continue
                cuda = pypi_cuda(read_metadata(file))
                if cuda != release.pypi_cuda:
                    report.diffs.append(f"+ torch {version}: PyPI's default wheel is built for "
                                        f"{f'CUDA {cuda}' if cuda else 'no CUDA'}, compat.yaml says pypi_cuda "
                                        f"{release.pypi_cuda}")
        report.diffs += _unknown_releases(compat, project, obs, selection)
    arm_diffs, arm_notes = aarch64_diffs(compat, torch_obs.aarch64, versions=sorted(expected["torch"],
                                         key=parse_version), pypi=report.kind == "PyPI",
                                         read_metadata=read_metadata, cuda_of=pypi_cuda)
    report.diffs += arm_diffs
    report.notes += arm_notes
    if report.kind == "PyPI":  # the PyTorch index's free-threaded builds are per flavour: not compared yet
        ft_diffs, ft_notes = free_threaded_diffs(compat, torch_obs.free_threaded,
                                                 observed["torchvision"].free_threaded,
                                                 versions=sorted(expected["torch"], key=parse_version))
        report.diffs += ft_diffs
        report.notes += ft_notes
    if unchecked_cuda:
        report.notes.append("pypi_cuda not checked: the index serves no core metadata (PEP 658) for the wheels")
    return report


def _unknown_releases(compat: Compat, project: str, obs: Observed, selection: tuple[str, ...]) -> list[str]:
    """Releases on the index that compat.yaml does not know: a new patch, a new minor, a new torchvision."""
    known: set[str] = set()
    for r in compat.releases.values():
        known |= set(r.torchvision) if project == "torch" else {tv for tv in r.torchvision.values() if tv}
        known |= set(r.torchvision_unpaired) if project == "torchvision" else set()
    series = _known_series(compat, project)
    floor = min((parse_version(s) for s in series), default=(0,))
    out = []
    for version in sorted(obs.builds, key=parse_version):
        if version in known or parse_version(_minor(version)) < floor:
            continue
        torch_minor = _minor(version) if project == "torch" else series.get(_minor(version))
        if selection and not any(torch_minor == _minor(s) for s in selection):
            continue
        out.append(f"+ {project} {version}: on the index, not in compat.yaml")
    return out


def check_index(compat: Compat, index: str, *, selection: tuple[str, ...] = (), ca_bundle: Path | None = None,
                timeout: float = 60.0) -> Report:
    """Read torch's and torchvision's pages of ``index`` and compare them with compat.yaml."""
    observed = {p: observe(fetch_project(index, p, ca_bundle=ca_bundle, timeout=timeout))
                for p in ("torch", "torchvision")}

    def read(file: IndexFile) -> list[str]:
        return fetch_metadata(file, ca_bundle=ca_bundle, timeout=timeout)

    return compare(compat, observed, index=index.rstrip("/"), selection=selection, read_metadata=read)
