"""What a build is asked for (:class:`BuildOptions`) and what it produced (:class:`BuiltImage`), plus the constants
the other image modules share."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from torchrig.container import IMAGE_GID, IMAGE_UID
from torchrig.images.pin import bases_file
from torchrig.images.serve import resolve_ca_bundle
from torchrig.matrix import ImageRef, Matrix, Target, default_matrix_path
from torchrig.results.io import Log
from torchrig.settings import Settings

__all__ = [
    "LABEL_INPUTS",
    "MB",
    "SOURCE_URL",
    "BuildOptions",
    "BuiltImage",
    "Log",
    "default_root",
]

SOURCE_URL = "https://github.com/torchrig/torchrig"
LABEL_INPUTS = "io.torchrig.inputs"
MB = 1_000_000  # sizes in MB as `docker images` shows them (10^6 bytes)


def default_root() -> Path:
    """The torchrig checkout: where images/, locks/ and the code copied into images live."""
    here = Path(__file__).resolve().parents[3]
    if (here / "images" / "Dockerfile").is_file():
        return here
    return default_matrix_path().parent


@dataclass(frozen=True, kw_only=True)
class BuildOptions:
    """How to build. Every field defaults to "what matrix.yaml says"; see ``torchrig build --help``.

    :meth:`from_settings` gives what the CLI uses: the resolved :class:`~torchrig.settings.Settings` (flags,
    environment, torchrig.toml). A plain ``BuildOptions()`` takes nothing from the environment.
    """

    base_image: str | None = None  # instead of env.targets[target]
    index_url: str | None = None  # instead of env.index
    extra_index_urls: tuple[str, ...] | None = None  # instead of env.extra_index
    wheelhouse: Path | None = None  # install offline from these wheels (pip --no-index --find-links)
    ca_bundle: Path | None = None  # served to every downloading step, never kept (unless keep_ca_bundle)
    keep_ca_bundle: bool = False  # install ca_bundle into the image's trust store
    size_budget_mb: int | None = None  # instead of env.size_budget_mb[target]
    use_lock: bool = True
    lock_file: Path | None = None  # instead of the lock for the build's index (locks/<env>.txt for matrix.yaml's)
    require_lock: bool = False  # no usable lock is a BuildError instead of an unlocked build
    bases_file: Path | None = None  # the pinned base digests instead of <root>/locks/bases.yaml
    # the image's created time (Unix seconds) instead of the last commit's (SOURCE_DATE_EPOCH)
    source_date_epoch: int | None = None
    uid: int = IMAGE_UID
    gid: int = IMAGE_GID
    no_cache: bool = False
    root: Path | None = None  # the checkout (images/, locks/, src/torchrig, tasks/, bench/); default_root()
    ref: ImageRef | None = None  # tag under these names instead of env.tags(target)
    extra_labels: Mapping[str, str] = field(default_factory=dict)
    # where the size measurements are kept (<cache_dir>/images); None: measure every time, keep nothing
    cache_dir: Path | None = None
    keep_containers: bool = False  # keep the helper containers (measuring, locking) for debugging
    # the OCI platform to build (and lock) for: one of the row's platforms (images/platforms.py)
    platform: str = "linux/amd64"

    @classmethod
    def from_settings(cls, settings: Settings, matrix: Matrix | None = None, *, use_lock: bool = True,
                      lock_file: Path | None = None, uid: int = IMAGE_UID, gid: int = IMAGE_GID,
                      no_cache: bool = False) -> BuildOptions:
        """The one way the CLI builds options: every source, index and budget from the resolved settings
        (defaults -> matrix.yaml -> torchrig.toml -> environment -> flags), the checkout and the pinned bases from
        the matrix, and the few build-only choices as arguments. ``build``, ``lock``, ``run-tasks``, ``run-bench``
        and ``dev`` all come through here, so they compute the same image inputs and reuse each other's images.
        """
        root = bases = None
        if matrix is not None:
            root = matrix.root if (matrix.root / "images").is_dir() else default_root()
            bases = bases_file(matrix.path)
        return cls(
            base_image=settings.base_image,
            index_url=settings.index_url,
            extra_index_urls=settings.extra_index_urls,
            wheelhouse=settings.wheelhouse,
            ca_bundle=resolve_ca_bundle(None, settings.ca_bundle, settings.ca_bundle_source),
            keep_ca_bundle=settings.keep_ca_bundle,
            size_budget_mb=settings.size_budget_mb,
            use_lock=use_lock,
            lock_file=lock_file,
            require_lock=settings.require_lock,
            bases_file=bases,
            source_date_epoch=settings.source_date_epoch,
            uid=uid,
            gid=gid,
            no_cache=no_cache,
            root=root,
            cache_dir=settings.cache_dir,
            keep_containers=settings.keep_containers,
        )


@dataclass(frozen=True, kw_only=True)
class BuiltImage:
    """An image that exists in the engine, with what a user wants to know about it."""

    env_id: str
    target: Target
    image_id: str
    ref: ImageRef
    labels: Mapping[str, str]
    size_bytes: int
    base_size_bytes: int
    site_packages_bytes: int
    build_seconds: float
    reused: bool  # True: an image built from the same inputs already existed (ensure_image)
    steps_run: tuple[str, ...] = ()  # Dockerfile steps that ran (not taken from the layer cache)
    steps_total: int = 0
    budget_mb: int | None = None
    lock_sha256: str | None = None

    @property
    def payload_bytes(self) -> int:
        """What the image cannot do without: its base image plus the installed site-packages."""
        return self.base_size_bytes + self.site_packages_bytes

    @property
    def ratio(self) -> float:
        """Image size / payload: 1.0 is no overhead at all; torchrig aims for <= 1.10."""
        return self.size_bytes / self.payload_bytes if self.payload_bytes else float("inf")

    def summary(self) -> str:
        budget = f", budget {self.budget_mb} MB" if self.budget_mb else ""
        return (f"{self.ref.immutable} ({self.image_id[7:19]}): {self.size_bytes / MB:,.0f} MB = {self.ratio:.3f} x "
                f"payload {self.payload_bytes / MB:,.0f} MB (base {self.base_size_bytes / MB:,.0f} MB + "
                f"site-packages {self.site_packages_bytes / MB:,.0f} MB){budget}")
