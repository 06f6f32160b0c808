"""Measuring an image against its payload: site-packages measured inside it, and the measurements kept on disk.

An image's *payload* is its base image plus the installed site-packages; ``size / payload`` says how much the
image carries beyond what it cannot do without. The site-packages are measured in a throwaway container (network
off) that goes through the one container lifecycle (:func:`torchrig.engine.run`: label, timeout, cleanup), and the
result is kept as ``<cache>/images/<env>-<target>.json`` so a reused image is not measured again and
``torchrig images`` can show the ratio.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchrig.engine.lifecycle import run_python
from torchrig.errors import BuildError, RunError
from torchrig.images.options import BuiltImage
from torchrig.results.io import atomic_write_text
from torchrig.results.reading import InputFileError, read_json

if TYPE_CHECKING:
    import docker

__all__ = ["MEASURE_TIMEOUT_S", "measure_site_packages", "read_record", "size_records_dir", "write_record"]

# Walking a few GB of site-packages takes seconds; a measurement that runs for minutes is stuck.
MEASURE_TIMEOUT_S = 300.0

# Runs inside the image (network off): the apparent size of every file under site-packages, hard links once.
_MEASURE = """import json, os, sysconfig
paths = sorted({sysconfig.get_paths()[k] for k in ("purelib", "platlib")})
seen, total = set(), 0
for top in paths:
    for d, _, files in os.walk(top):
        for f in files:
            st = os.lstat(os.path.join(d, f))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
print(json.dumps({"bytes": total, "paths": paths}))
"""


def measure_site_packages(client: docker.DockerClient, image: str, *, env_id: str, keep: bool = False,
                          timeout: float = MEASURE_TIMEOUT_S) -> int:
    """Bytes installed in the image's site-packages, measured inside it (a ``torchrig-<env>-measure-*``
    container, removed afterwards unless ``keep``)."""
    try:
        out = run_python(client, image, _MEASURE, env_id=env_id, purpose="measure", keep=keep, timeout=timeout)
    except RunError as e:  # the build is what failed, as far as the user is concerned
        raise BuildError(f"measuring site-packages: {e}") from None
    try:
        return int(json.loads(out.strip().splitlines()[-1])["bytes"])
    except (ValueError, IndexError, KeyError, TypeError):
        raise BuildError(f"measuring site-packages in {image} printed no size: {out[-500:]!r}") from None


def size_records_dir(cache_dir: Path) -> Path:
    """Where the measurements are kept: ``<cache_dir>/images`` (``Settings.cache_dir``)."""
    return cache_dir / "images"


def write_record(built: BuiltImage, cache_dir: Path) -> Path:
    """Keep the measurement beside the cache (``~/.cache/torchrig/images/<env>-<target>.json``)."""
    d = size_records_dir(cache_dir)
    d.mkdir(parents=True, exist_ok=True)
    data = {**asdict(built), "ref": asdict(built.ref), "payload_bytes": built.payload_bytes, "ratio": built.ratio,
            "recorded_at": _dt.datetime.now(_dt.timezone.utc).isoformat()}
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    return atomic_write_text(d / f"{built.env_id}-{built.target}.json", text)


def read_record(cache_dir: Path, env_id: str, target: str, image_id: str) -> dict[str, Any] | None:
    """The kept measurement of ``env_id``/``target`` if it is of this very image, else None."""
    path = size_records_dir(cache_dir) / f"{env_id}-{target}.json"
    try:
        data: dict[str, Any] = read_json(path, kind="size-record")
    except InputFileError:
        return None  # no usable measurement: the caller measures again
    return data if data.get("image_id") == image_id else None
