"""Settings: defaults + the environment (+ the CLI's flags), read once into one frozen object.

Every ``TORCHRIG_*`` variable the host side of torchrig honours is read here and nowhere else, so the list below is
the complete reference (README "Configuration" points here). Code below the CLI receives a :class:`Settings` (or
the one field it needs) instead of reading ``os.environ`` itself, which keeps tests free of environment patching
and makes a run's configuration visible in one place.

The variables torchrig *passes into* containers (``TORCHRIG_IMAGE``, ``TORCHRIG_HOSTNAME``, ...) are the host/image
contract and live in :mod:`torchrig.results.contract`, which the images import without this module.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from torchrig.errors import UsageError

__all__ = [
    "ENV_VARS",
    "Settings",
    "default_matrix_path",
    "default_results_dir",
]

# name -> what it sets (documentation and a test that every name here is actually read by from_environ)
ENV_VARS: dict[str, str] = {
    "TORCHRIG_MATRIX": "the matrix file (default: ./matrix.yaml or the nearest parent directory's)",
    "TORCHRIG_REGISTRY": "registry prefix of image names instead of matrix.yaml's (empty: local names only)",
    "TORCHRIG_RESULTS": "results directory (default: results/ beside matrix.yaml)",
    "TORCHRIG_DATA": "data directory mounted into task containers (default: data/ beside matrix.yaml)",
    "TORCHRIG_KEEP_CONTAINERS": "1 keeps containers after they exit, for debugging",
    "TORCHRIG_CACHE": "cache directory (default: $XDG_CACHE_HOME/torchrig or ~/.cache/torchrig)",
    "TORCHRIG_DEBIAN_MIRROR": "Debian mirror for `base-local` (default: the host's apt source)",
    "TORCHRIG_BASE_IMAGE": "base image for builds instead of matrix.yaml's target base",
    "TORCHRIG_INDEX_URL": "package index for torch instead of matrix.yaml's",
    "TORCHRIG_EXTRA_INDEX_URL": "extra package indexes (space- or comma-separated)",
    "TORCHRIG_WHEELHOUSE": "install offline from this folder of wheels",
    "TORCHRIG_CA_BUNDLE": "CA bundle served to the build (a file, or 'none'; default: PIP_CERT, "
                          "REQUESTS_CA_BUNDLE, SSL_CERT_FILE)",
    "TORCHRIG_KEEP_CA_BUNDLE": "1 installs the CA bundle into the image's trust store",
    "TORCHRIG_SIZE_BUDGET_MB": "image size budget in MB instead of matrix.yaml's",
    "TORCHRIG_REQUIRE_LOCK": "1 fails a build that has no matching lock instead of building unlocked (CI sets it)",
}

_TRUE = ("1", "true", "yes", "on")


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in _TRUE


def default_matrix_path(environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> Path:
    """``$TORCHRIG_MATRIX``, else ``matrix.yaml`` in the current directory or the nearest parent holding one."""
    env = os.environ if environ is None else environ
    if env.get("TORCHRIG_MATRIX"):
        return Path(env["TORCHRIG_MATRIX"])
    here = cwd or Path.cwd()
    for d in (here, *here.parents):
        if (d / "matrix.yaml").is_file():
            return d / "matrix.yaml"
    return here / "matrix.yaml"


def default_results_dir(matrix_path: Path) -> Path:
    """The one default results directory: ``results/`` beside the matrix file (so every command, run from any
    subfolder of the checkout, writes and reads the same place)."""
    return matrix_path.resolve().parent / "results"


@dataclass(frozen=True, kw_only=True)
class Settings:
    """What the environment says, parsed once; the CLI's flags override the fields they name where they are used."""

    matrix_path: Path
    registry: str | None = None  # None: matrix.yaml's; "" means local names without a registry
    results_dir: Path
    data_dir: Path | None = None  # None: <matrix root>/data
    keep_containers: bool = False
    cache_dir: Path
    debian_mirror: str | None = None
    base_image: str | None = None
    index_url: str | None = None
    extra_index_urls: tuple[str, ...] | None = None
    wheelhouse: Path | None = None
    ca_bundle: str | None = None  # raw: a path or "none"; checked by images.serve.resolve_ca_bundle
    ca_bundle_source: str | None = None  # which variable ca_bundle came from
    keep_ca_bundle: bool = False
    size_budget_mb: int | None = None
    require_lock: bool = False
    source_date_epoch: int | None = None  # $SOURCE_DATE_EPOCH (reproducible-builds.org); None: the commit's time

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None, *, matrix: str | os.PathLike[str] | None = None,
                     cwd: Path | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        matrix_path = Path(matrix) if matrix is not None else default_matrix_path(env, cwd)
        results = env.get("TORCHRIG_RESULTS")
        data = env.get("TORCHRIG_DATA")
        extra = env.get("TORCHRIG_EXTRA_INDEX_URL")
        house = env.get("TORCHRIG_WHEELHOUSE")
        budget: int | None = None
        if env.get("TORCHRIG_SIZE_BUDGET_MB"):
            try:
                budget = int(env["TORCHRIG_SIZE_BUDGET_MB"])
            except ValueError:
                raise UsageError(f"TORCHRIG_SIZE_BUDGET_MB={env['TORCHRIG_SIZE_BUDGET_MB']!r} is not a whole "
                                 "number of MB: set it to e.g. 6000, or unset it") from None
        epoch: int | None = None
        if env.get("SOURCE_DATE_EPOCH"):
            try:
                epoch = int(env["SOURCE_DATE_EPOCH"])
            except ValueError:
                raise UsageError(f"SOURCE_DATE_EPOCH={env['SOURCE_DATE_EPOCH']!r} is not a Unix time in seconds: "
                                 "set it to e.g. `git log -1 --format=%ct`, or unset it") from None
        ca, ca_source = None, None
        for name in ("TORCHRIG_CA_BUNDLE", "PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
            if (name == "TORCHRIG_CA_BUNDLE" and name in env) or env.get(name):
                ca, ca_source = env[name], name
                break
        if env.get("TORCHRIG_CACHE"):
            cache = Path(env["TORCHRIG_CACHE"])
        else:
            xdg = env.get("XDG_CACHE_HOME")
            cache = (Path(xdg) if xdg else Path.home() / ".cache") / "torchrig"
        return cls(
            matrix_path=matrix_path,
            registry=env.get("TORCHRIG_REGISTRY"),
            results_dir=Path(results).expanduser() if results else default_results_dir(matrix_path),
            data_dir=Path(data).expanduser() if data else None,
            keep_containers=_flag(env.get("TORCHRIG_KEEP_CONTAINERS")),
            cache_dir=cache,
            debian_mirror=env.get("TORCHRIG_DEBIAN_MIRROR") or None,
            base_image=env.get("TORCHRIG_BASE_IMAGE") or None,
            index_url=env.get("TORCHRIG_INDEX_URL") or None,
            extra_index_urls=tuple(extra.replace(",", " ").split()) if extra is not None else None,
            wheelhouse=Path(house).expanduser().resolve() if house else None,
            ca_bundle=ca,
            ca_bundle_source=ca_source,
            keep_ca_bundle=_flag(env.get("TORCHRIG_KEEP_CA_BUNDLE")),
            size_budget_mb=budget,
            require_lock=_flag(env.get("TORCHRIG_REQUIRE_LOCK")),
            source_date_epoch=epoch,
        )

    @property
    def matrix_root(self) -> Path:
        return self.matrix_path.resolve().parent
