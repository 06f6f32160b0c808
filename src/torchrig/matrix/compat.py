"""The PyTorch compatibility table (``compat.yaml`` beside this file), parsed once into typed objects."""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, TypeVar

from torchrig.errors import ConfigurationError
from torchrig.matrix.yamlsafe import YamlError, load_yaml
from torchrig.results.reading import InputFileError

T = TypeVar("T")

__all__ = ["Aarch64Wheels", "BaseImageFacts", "Compat", "RuntimePin", "Tf32Range", "TorchRelease", "load_compat",
           "parse_version"]

TF32_APIS = ("allow_tf32", "fp32_precision")

Version = tuple[int, ...]


def parse_version(text: str) -> Version:
    return tuple(int(p) for p in text.split("."))


@dataclass(frozen=True, kw_only=True)
class TorchRelease:
    minor: str  # "2.0"
    python_min: str
    python_max: str
    torch_only_python: tuple[str, ...]  # torch has wheels for these, torchvision has not
    cuda: tuple[str, ...]  # advertised: what validate accepts
    cuda_unadvertised: tuple[str, ...]  # on the index, but without PyTorch's support promise
    pypi_cuda: str  # the CUDA of PyPI's default (plain-version) Linux wheel
    rocm: tuple[str, ...]
    torchvision: dict[str, str | None]  # patch release -> torchvision (None: none released for it yet)
    torchvision_unpaired: tuple[str, ...]  # torchvision releases of the series that no patch pins
    wheel_tag: str
    compile_max_python: str
    confirmed: bool

    @property
    def needs_glibc(self) -> str | None:
        m = re.match(r"manylinux_(\d+)_(\d+)_", self.wheel_tag)
        return f"{m.group(1)}.{m.group(2)}" if m else None

    def python_ok(self, python: str) -> bool:
        return parse_version(self.python_min) <= parse_version(python) <= parse_version(self.python_max)

    @property
    def pythons(self) -> tuple[str, ...]:
        """Every CPython minor with wheels, oldest first (``("3.10", ..., "3.14")``)."""
        major, lo = parse_version(self.python_min)[:2]
        hi = parse_version(self.python_max)[1]
        return tuple(f"{major}.{m}" for m in range(lo, hi + 1))

    @property
    def flavours(self) -> tuple[str, ...]:
        """The local-version labels the PyTorch index carries: ``cpu``, ``cu126`` ..., ``rocm7.2`` ..."""
        cuda = (*self.cuda, *self.cuda_unadvertised)
        return ("cpu", *("cu" + c.replace(".", "") for c in cuda), *("rocm" + r for r in self.rocm))


@dataclass(frozen=True, kw_only=True)
class BaseImageFacts:
    python: str | None
    glibc: str | None


@dataclass(frozen=True, kw_only=True)
class Tf32Range:
    """The TF32 API the benchmarks drive on torch ``first`` (inclusive) up to ``below`` (exclusive), with why
    (compat.yaml ``tf32_api``; read by bench/tf32_api.py)."""

    first: tuple[int, int]
    below: tuple[int, int]
    api: str  # one of TF32_APIS
    why: str

    def holds(self, release: tuple[int, int]) -> bool:
        return self.first <= release < self.below


def _tf32_range(item: dict[str, Any]) -> Tf32Range:
    first, below = (tuple(int(x) for x in str(item[k]).split(".")) for k in ("first", "below"))
    if len(first) != 2 or len(below) != 2 or not first < below:
        raise ValueError(f"tf32_api range {item['first']}..{item['below']}: give two minors, first < below")
    if item["api"] not in TF32_APIS:
        raise ValueError(f"tf32_api {item['api']!r}: not one of {', '.join(TF32_APIS)}")
    return Tf32Range(first=(first[0], first[1]), below=(below[0], below[1]), api=str(item["api"]),
                     why=str(item["why"]))


@dataclass(frozen=True, kw_only=True)
class RuntimePin:
    """A package torch below ``torch_below`` needs at run time that its metadata does not pin (compat.yaml
    ``runtime_pins``): ``requirement`` is added to the environment unless its extras name the package."""

    requirement: str  # "setuptools<82"
    torch_below: str  # "2.2"
    why: str

    @property
    def name(self) -> str:
        return re.split(r"[<>=!~;\[ ]", self.requirement, maxsplit=1)[0].strip()

    def applies(self, torch: str) -> bool:
        return parse_version(".".join(torch.partition("+")[0].split(".")[:2])) < parse_version(self.torch_below)


@dataclass(frozen=True, kw_only=True)
class Aarch64Wheels:
    """The Linux aarch64 torch builds of one minor release (compat.yaml ``aarch64``)."""

    pypi: str | None  # the flavour of PyPI's aarch64 wheel ("cpu", "cu130"); None: no aarch64 wheel on PyPI
    index: tuple[str, ...]  # flavours whose PyTorch-index folder carries aarch64 wheels
    sources: tuple[str, ...]

    def describe(self) -> str:
        pypi = f"PyPI's is the {self.pypi} build" if self.pypi else "PyPI has none"
        index = ", ".join(self.index) if self.index else "none known"
        return f"{pypi}; on the PyTorch index: {index}"


@dataclass(frozen=True, kw_only=True)
class Compat:
    releases: dict[str, TorchRelease]
    driver_min: dict[str, str]
    _base_images: tuple[tuple[re.Pattern[str], str | None, str | None], ...]
    runtime_pins: tuple[RuntimePin, ...] = ()
    aarch64: dict[str, Aarch64Wheels] = field(default_factory=dict)  # minor -> its aarch64 builds
    free_threaded: dict[str, tuple[str, ...]] = field(default_factory=dict)  # minor -> Pythons with cp3XXt wheels
    tf32_api: tuple[Tf32Range, ...] = ()  # which TF32 API bench drives per release range

    def pins_for(self, torch: str) -> tuple[RuntimePin, ...]:
        """The runtime pins an environment with this torch gets (compat.yaml ``runtime_pins``)."""
        return tuple(p for p in self.runtime_pins if p.applies(torch))

    def release(self, torch: str) -> TorchRelease | None:
        minor = ".".join(torch.split(".")[:2])
        return self.releases.get(minor)

    @property
    def known_range(self) -> str:
        keys = sorted(self.releases, key=parse_version)
        return f"{keys[0]} .. {keys[-1]}"

    def first_with_cuda(self, cuda: str) -> str | None:
        for minor in sorted(self.releases, key=parse_version):
            if cuda in self.releases[minor].cuda:
                return minor
        return None

    def first_with_rocm(self, rocm: str) -> str | None:
        for minor in sorted(self.releases, key=parse_version):
            if rocm in self.releases[minor].rocm:
                return minor
        return None

    def base_image(self, ref: str) -> BaseImageFacts | None:
        """What a well-known base image ships (Python from the tag for python:X images), or None if unknown."""
        for pattern, python, glibc in self._base_images:
            m = pattern.search(ref)
            if m:
                py = m.groupdict().get("python") or python
                return BaseImageFacts(python=py, glibc=glibc)
        return None


def _from_data(data: dict[str, Any]) -> Compat:
    releases = {}
    for minor, r in data["torch"].items():
        releases[str(minor)] = TorchRelease(
            minor=str(minor),
            python_min=str(r["python"][0]),
            python_max=str(r["python"][1]),
            torch_only_python=tuple(str(x) for x in r.get("torch_only_python", ())),
            cuda=tuple(str(x) for x in r["cuda"]),
            cuda_unadvertised=tuple(str(x) for x in r.get("cuda_unadvertised", ())),
            pypi_cuda=str(r["pypi_cuda"]),
            rocm=tuple(str(x) for x in r["rocm"]),
            torchvision={str(k): None if v is None else str(v) for k, v in r["torchvision"].items()},
            torchvision_unpaired=tuple(str(x) for x in r.get("torchvision_unpaired", ())),
            wheel_tag=str(r["wheel_tag"]),
            compile_max_python=str(r["compile_max_python"]),
            confirmed=bool(r.get("confirmed", True)),
        )
    bases = tuple(
        (re.compile(b["match"]), b.get("python"), b.get("glibc")) for b in data.get("base_images", [])
    )
    return Compat(
        releases=releases,
        driver_min={str(k): str(v) for k, v in data["nvidia_driver_min"].items()},
        _base_images=bases,
        runtime_pins=tuple(RuntimePin(requirement=str(p["requirement"]), torch_below=str(p["torch_below"]),
                                      why=str(p["why"])) for p in data.get("runtime_pins", ())),
        aarch64={str(k): Aarch64Wheels(pypi=None if v["pypi"] is None else str(v["pypi"]),
                                       index=tuple(str(x) for x in v["index"]),
                                       sources=tuple(str(x) for x in v["sources"]))
                 for k, v in (data.get("aarch64") or {}).items()},
        free_threaded={str(k): tuple(str(x) for x in v) for k, v in (data.get("free_threaded") or {}).items()},
        tf32_api=_tf32_ranges(data.get("tf32_api") or ()),
    )


def _tf32_ranges(items: Any) -> tuple[Tf32Range, ...]:
    ranges = tuple(sorted((_tf32_range(i) for i in items), key=lambda r: r.first))
    for a, b in itertools.pairwise(ranges):
        if b.first < a.below:
            raise ValueError(f"tf32_api ranges overlap at {b.first[0]}.{b.first[1]}")
    return ranges


@functools.cache
def load_compat() -> Compat:
    """The packaged table, read through the reading layer and the bounded YAML loader (it can be edited in a
    checkout); ConfigurationError naming the file when it cannot be used."""
    return read_packaged(_from_data, "not a compatibility table torchrig can read")


def read_packaged(build: Callable[[dict[str, Any]], T], what: str) -> T:
    """``build`` applied to the packaged compat.yaml, read through the reading layer and the bounded YAML loader;
    ConfigurationError naming the file (``what`` it is not, when ``build`` fails) when it cannot be used."""
    with resources.as_file(resources.files("torchrig.matrix").joinpath("compat.yaml")) as path:
        try:
            data = load_yaml(path, kind="compat", string_keys=True)
            if not isinstance(data, dict):
                raise TypeError(f"the top level is {type(data).__name__}, not a mapping")
            return build(data)
        except (InputFileError, YamlError) as e:
            raise ConfigurationError([str(e)], source=str(path)) from None
        except (KeyError, TypeError, ValueError, AttributeError, re.error) as e:
            raise ConfigurationError([f"{what} ({type(e).__name__}: {e}); restore it from git"],
                                     source=str(path)) from None
