"""The typed matrix: frozen :class:`Matrix` / :class:`Environment` objects that the rest of torchrig receives.

:mod:`torchrig.matrix.load` makes them from ``matrix.yaml`` (validated against the compat data); nothing
downstream sees a raw dict.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from torchrig.errors import UsageError
from torchrig.matrix.compat import Compat, load_compat, parse_version
from torchrig.results.contract import ACCELERATORS, Accelerator  # the values of $TORCHRIG_ACCELERATOR too

__all__ = [
    "ACCELERATORS",
    "DEFAULT_PLATFORMS",
    "IMAGE_EXTRAS",
    "PLATFORMS",
    "SCHEMA_VERSION",
    "TARGETS",
    "Accelerator",
    "Environment",
    "ImageRef",
    "Matrix",
    "Platform",
    "Target",
    "canonical_name",
    "flavour_of",
    "requirement_name",
]

Target = Literal["runtime", "devel"]
TARGETS: tuple[str, ...] = get_args(Target)
# The OCI platforms an environment can build for (matrix.yaml ``platforms:``); amd64 is the default.
Platform = Literal["linux/amd64", "linux/arm64"]
PLATFORMS: tuple[str, ...] = get_args(Platform)
DEFAULT_PLATFORMS: tuple[str, ...] = ("linux/amd64",)

SCHEMA_VERSION = 1
# Every image carries the benchmark suite (bench/) and what runs it, so `torchrig run-bench ENV` needs nothing
# installed at run time (GPU machines often have no internet). An environment that lists one of these in its
# extras keeps its own pin.
IMAGE_EXTRAS: tuple[str, ...] = ("pytest>=7.3", "pytest-benchmark>=4.0")

@dataclass(frozen=True, kw_only=True)
class ImageRef:
    """The names one image is pushed under: an immutable tag and a rolling alias."""

    immutable: str
    alias: str

    @property
    def repository(self) -> str:
        return self.immutable.rsplit(":", 1)[0]


@dataclass(frozen=True, kw_only=True)
class Environment:
    id: str
    description: str
    accelerator: Accelerator
    torch: str
    torchvision: str
    python: str
    cuda: str | None
    rocm: str | None
    targets: Mapping[Target, str]  # target -> base image
    index: str
    extra_index: tuple[str, ...]
    extras: tuple[str, ...]
    size_budget_mb: Mapping[Target, int]
    dockerfile: Path
    registry: str
    image: str
    # OCI platforms this environment builds for, in matrix.yaml's order (``platforms:``; default linux/amd64),
    # each checked against the compat data's aarch64 wheels.
    platforms: tuple[str, ...] = DEFAULT_PLATFORMS

    @property
    def flavour(self) -> str:
        """The PyTorch wheel flavour: ``cpu``, ``cu118``, ``rocm5.4.2``."""
        return flavour_of(self.accelerator, self.cuda, self.rocm)

    @property
    def gpu_version(self) -> str | None:
        return self.cuda or self.rocm

    def tags(self, target: Target = "runtime") -> ImageRef:
        """The one place image names are decided (``<registry>/<image>:<torch>-<flavour>-py<python>[-devel]``).

        The registry is decided once, when the matrix is loaded: matrix.yaml's, unless the settings override it
        (``$TORCHRIG_REGISTRY``; an empty value means local names without a registry).
        """
        registry = self.registry.rstrip("/")
        repo = f"{registry}/{self.image}" if registry else self.image
        suffix = "" if target == "runtime" else f"-{target}"
        return ImageRef(
            immutable=f"{repo}:{self.torch}-{self.flavour}-py{self.python}{suffix}",
            alias=f"{repo}:{self.id}{suffix}",
        )

    def min_driver(self, compat: Compat | None = None) -> str | None:
        """Minimum NVIDIA driver for this environment's CUDA (None for CPU/ROCm)."""
        if self.cuda is None:
            return None
        return (compat or load_compat()).driver_min.get(self.cuda)

    def torch_compile_supported(self, compat: Compat | None = None) -> bool:
        """Whether torch.compile (dynamo) supports this environment's Python in its torch release."""
        release = (compat or load_compat()).release(self.torch)
        return release is not None and parse_version(self.python) <= parse_version(release.compile_max_python)

    @property
    def image_extras(self) -> tuple[str, ...]:
        """The extras, then the runtime pins this torch needs (compat.yaml ``runtime_pins``, e.g. setuptools<82 for
        torch < 2.2), then what every image carries (:data:`IMAGE_EXTRAS`): each unless the extras name it."""
        named = {requirement_name(r) for r in self.extras}
        pins = tuple(p.requirement for p in load_compat().pins_for(self.torch) if requirement_name(p.requirement)
                     not in named)
        return (*self.extras, *pins, *(r for r in IMAGE_EXTRAS if requirement_name(r) not in named))

    def requirements(self) -> tuple[str, ...]:
        """What pip installs into the image, torch and torchvision pinned first."""
        return (f"torch=={self.torch}", f"torchvision=={self.torchvision}", *self.image_extras)


def flavour_of(accelerator: Accelerator, cuda: str | None, rocm: str | None) -> str:
    """The PyTorch wheel flavour of an accelerator and its version: ``cpu``, ``cu118``, ``rocm5.4.2``."""
    match accelerator:
        case "cpu":
            return "cpu"
        case "cuda":
            assert cuda is not None
            return "cu" + cuda.replace(".", "")
        case "rocm":
            return f"rocm{rocm}"


def canonical_name(name: str) -> str:
    """PEP 503 normalisation: ``Jinja2`` and ``jinja2``, ``typing_extensions`` and ``typing-extensions`` agree."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    """The canonical project name of a requirement string (``Pytest_Benchmark[x]>=4`` -> ``pytest-benchmark``)."""
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    return canonical_name(m.group(1)) if m else requirement


@dataclass(frozen=True, kw_only=True)
class Matrix:
    path: Path
    registry: str
    image: str
    environments: tuple[Environment, ...]
    warnings: tuple[str, ...] = field(default=())

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(e.id for e in self.environments)

    def get(self, env_id: str) -> Environment:
        for env in self.environments:
            if env.id == env_id:
                return env
        msg = f"unknown environment {env_id!r} (environments in {self.path.name}: {', '.join(self.ids)})"
        close = difflib.get_close_matches(env_id, self.ids, 1, 0.6)
        if close:
            msg += f". Perhaps you meant {close[0]!r}?"
        raise UsageError(msg)

    @property
    def root(self) -> Path:
        return self.path.parent


