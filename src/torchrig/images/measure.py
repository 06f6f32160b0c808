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
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchrig.engine import container_spec, run
from torchrig.errors import BuildError
from torchrig.images.options import BuiltImage
from torchrig.results.io import atomic_write_text

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
    spec = container_spec(env_id=env_id, accelerator="cpu", image=image, purpose="measure",
                          command=["python", "-c", _MEASURE], network_mode="none", shm_size=None)
    result = run(client, spec, keep=keep, timeout=timeout, check=False, echo=False, quiet=True,
                 capture_stdout=True, status=sys.stderr)
    if not result.ok:
        how = f"did not finish within {timeout:g} s" if result.timed_out else f"failed (exit {result.exit_code})"
        raise BuildError(f"measuring site-packages in {image} {how}:\n" + "\n".join(result.last_lines))
    try:
        return int(json.loads((result.stdout or "").strip().splitlines()[-1])["bytes"])
    except (ValueError, IndexError, KeyError, TypeError):
        raise BuildError(f"measuring site-packages in {image} printed no size: {(result.stdout or '')[-500:]!r}"
                         ) from None


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
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if data.get("image_id") == image_id else None
