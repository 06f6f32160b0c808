"""The table of settings: each one declared once (file key = long flag, variables, parser, accepted values, help).

Adding a setting is one row here and one field in :class:`torchrig.settings.Settings`; the cascade, the
torchrig.toml reader, ``torchrig config`` and the ``torchrig --help`` epilog all read this table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torchrig.config import values as v

__all__ = ["SETTINGS", "Setting", "by_key"]


@dataclass(frozen=True, kw_only=True)
class Setting:
    key: str  # the torchrig.toml key, and the long flag where there is one (--key)
    field: str  # the attribute of Settings
    env: tuple[str, ...]  # variables, first set wins
    parse: Callable[[str], object]
    accepted: str
    doc: str
    flag: str | None = None  # the CLI flag that sets it (most: --key)
    in_file: bool = True  # may be written in torchrig.toml / [tool.torchrig]
    empty_is_value: bool = False  # an empty variable is a value ("" registry: local names), not "unset"
    many: bool = False  # a list (extra-index-url): TOML arrays, repeated flags
    relative: bool = False  # a path: relative to the file it is written in
    fallback: str = "none"  # what applies when no layer sets it (for `torchrig config`)

    @property
    def dest(self) -> str | None:
        """The argparse attribute of the flag."""
        return self.flag.lstrip("-").replace("-", "_") if self.flag else None


def _ca(value: str) -> str:
    """A path or ``none``: the file is checked where the bundle is used (images.serve.resolve_ca_bundle)."""
    word = value.strip()
    if "\0" in word:
        raise ValueError("not a path")
    return word


def _registry(value: str) -> str:
    word = value.strip()
    if any(ch.isspace() for ch in word):
        raise ValueError("not a registry: HOST[:PORT][/NAMESPACE] without spaces, or empty for local names")
    return word


_PATH = "a path"
_DIR = "a directory (not a file, not under /proc, /sys or /dev, creatable)"
_BOOL = v.BOOL_WORDS

SETTINGS: tuple[Setting, ...] = (
    Setting(key="matrix", field="matrix_path", env=("TORCHRIG_MATRIX",), parse=v.path, accepted=_PATH,
            flag="--matrix", in_file=False, fallback="./matrix.yaml or the nearest parent directory's",
            doc="the matrix file; torchrig.toml is read from beside it"),
    Setting(key="registry", field="registry", env=("TORCHRIG_REGISTRY",), parse=_registry,
            accepted="HOST[/NAMESPACE], empty: local names only", empty_is_value=True, fallback="matrix.yaml's",
            doc="registry prefix of image names instead of matrix.yaml's"),
    Setting(key="results", field="results_dir", env=("TORCHRIG_RESULTS",), parse=v.directory, accepted=_DIR,
            relative=True, fallback="results/ beside matrix.yaml", doc="results directory"),
    Setting(key="data", field="data_dir", env=("TORCHRIG_DATA",), parse=v.path, accepted=_PATH, relative=True,
            fallback="data/ beside matrix.yaml", doc="data directory mounted into task containers"),
    Setting(key="cache", field="cache_dir", env=("TORCHRIG_CACHE",), parse=v.directory, accepted=_DIR,
            relative=True, fallback="$XDG_CACHE_HOME/torchrig or ~/.cache/torchrig", doc="cache directory"),
    Setting(key="keep-containers", field="keep_containers", env=("TORCHRIG_KEEP_CONTAINERS",), parse=v.boolean,
            accepted=_BOOL, fallback="false", doc="keep containers after they exit, for debugging"),
    Setting(key="debian-mirror", field="debian_mirror", env=("TORCHRIG_DEBIAN_MIRROR",), parse=v.url,
            accepted="an http(s) URL", flag="--mirror", fallback="the host's apt source",
            doc="Debian mirror for `base-local`"),
    Setting(key="base-image", field="base_image", env=("TORCHRIG_BASE_IMAGE",), parse=v.image_ref,
            accepted="an image reference", flag="--base-image", fallback="matrix.yaml's target base",
            doc="base image for builds, e.g. torchrig-base:bookworm from `torchrig base-local`"),
    Setting(key="index-url", field="index_url", env=("TORCHRIG_INDEX_URL",), parse=v.url,
            accepted="an http(s):// or file:// URL", flag="--index-url", fallback="matrix.yaml's index",
            doc="package index for torch"),
    Setting(key="extra-index-url", field="extra_index_urls", env=("TORCHRIG_EXTRA_INDEX_URL",), parse=v.url_list,
            accepted="URLs (variable: space- or comma-separated; file: an array)", flag="--extra-index-url",
            many=True, empty_is_value=True, fallback="matrix.yaml's extra_index",
            doc="extra package indexes (an empty variable: none)"),
    Setting(key="wheelhouse", field="wheelhouse", env=("TORCHRIG_WHEELHOUSE",), parse=v.path, accepted=_PATH,
            flag="--wheelhouse", relative=True, doc="install offline from this folder of wheels"),
    Setting(key="ca-bundle", field="ca_bundle",
            env=("TORCHRIG_CA_BUNDLE", "PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"), parse=_ca,
            accepted="a PEM file, or none", flag="--ca-bundle", relative=True,
            doc="CA bundle served to every download of a build, kept out of the image"),
    Setting(key="keep-ca-bundle", field="keep_ca_bundle", env=("TORCHRIG_KEEP_CA_BUNDLE",), parse=v.boolean,
            accepted=_BOOL, flag="--keep-ca-bundle", fallback="false",
            doc="install the CA bundle into the image's trust store"),
    Setting(key="size-budget-mb", field="size_budget_mb", env=("TORCHRIG_SIZE_BUDGET_MB",), parse=v.size_budget_mb,
            accepted=f"a whole number of MB, 1 to {v.MAX_SIZE_BUDGET_MB:,}", flag="--size-budget-mb",
            fallback="matrix.yaml's size_budget_mb", doc="image size budget in MB"),
    Setting(key="require-lock", field="require_lock", env=("TORCHRIG_REQUIRE_LOCK",), parse=v.boolean,
            accepted=_BOOL, flag="--require-lock", fallback="false",
            doc="fail a build that has no matching lock instead of building unlocked (CI sets it)"),
    Setting(key="source-date-epoch", field="source_date_epoch", env=("SOURCE_DATE_EPOCH",), parse=v.epoch,
            accepted=f"Unix seconds, {v.EPOCH_MIN} (1980-01-01) to {v.EPOCH_MAX} (2106-02-07)",
            fallback="the last commit's time", doc="the images' created time (reproducible-builds.org)"),
    Setting(key="python", field="python", env=("TORCHRIG_PYTHON",), parse=v.text, accepted="a command or path",
            fallback="python3", doc="the host Python that `nox -s bench` runs the benchmarks on"),
    Setting(key="docker-ping-timeout", field="docker_ping_timeout_s", env=("TORCHRIG_DOCKER_PING_TIMEOUT",),
            parse=v.positive_seconds, accepted="seconds > 0", in_file=False, fallback="5",
            doc="how long to wait for the Docker engine's first answer before saying it does not respond"),
)

_BY_KEY = {s.key: s for s in SETTINGS}


def by_key(key: str) -> Setting:
    return _BY_KEY[key]
