"""Images: plan, build, tag, measure and lock an environment's image through the Docker SDK.

The modules, in the order a build uses them:

* :mod:`~torchrig.images.options` -- :class:`BuildOptions` (the site overrides: base image, index, wheelhouse, CA
  bundle, size budget; :meth:`BuildOptions.from_settings` merges the CLI's flags with the ``TORCHRIG_*``
  settings) and :class:`BuiltImage` (tags, labels, size, payload, which steps ran).
* :mod:`~torchrig.images.plan` -- everything a build needs, decided without building: sources, lock, context,
  build args, labels and the ``io.torchrig.inputs`` digest.
* :mod:`~torchrig.images.context` -- the build context, assembled file by file, reproducibly.
* :mod:`~torchrig.images.serve` -- the CA bundle and wheelhouse served on 127.0.0.1 for one build or lock.
* :mod:`~torchrig.images.build` -- :func:`build_image`, :func:`ensure_image` (reuse an image built from the same
  inputs), :func:`find_image` (only look); tag only after the size budget is met.
* :mod:`~torchrig.images.measure` -- site-packages measured inside the image; the measurements kept on disk.
* :mod:`~torchrig.images.lock` and :mod:`~torchrig.images.uvlock` -- the lock file (format, header, when a build
  uses it, when it is stale) and resolving one on the host with ``uv pip compile`` (no container).
* :mod:`~torchrig.images.pin` -- base image digests (``locks/bases.yaml``, ``torchrig pin-bases``).
* :mod:`~torchrig.images.base` -- a local Debian base made with debootstrap (``torchrig base-local``).

The CLI (:mod:`torchrig.cli.images`) and the runner call the names re-exported here.
"""

from __future__ import annotations

from torchrig.images.build import build_image, ensure_image, find_image
from torchrig.images.measure import measure_site_packages, size_records_dir
from torchrig.images.options import LABEL_INPUTS, MB, SOURCE_URL, BuildOptions, BuiltImage, Log, default_root
from torchrig.images.plan import extras_as_constraints, image_labels, with_labels

__all__ = [
    "LABEL_INPUTS",
    "MB",
    "SOURCE_URL",
    "BuildOptions",
    "BuiltImage",
    "Log",
    "build_image",
    "default_root",
    "ensure_image",
    "extras_as_constraints",
    "find_image",
    "image_labels",
    "measure_site_packages",
    "size_records_dir",
    "with_labels",
]
