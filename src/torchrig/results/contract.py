"""The host/image contract: what torchrig hands a container, and where things are inside an image.

The host side (``torchrig run-tasks`` / ``run-bench``, the devcontainer files, images/Dockerfile) produces these;
the image side (the result records, ``tasks/``, ``bench/``) consumes them. Both import the names from here, so a
rename cannot leave one side behind. Standard library only: this module ships into every image.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Literal, get_args

__all__ = [
    "ACCELERATORS",
    "ACCELERATOR_ENV",
    "CIFAR_FOLDER",
    "COMPILE_MAX_PYTHON_ENV",
    "CONTAINER_ENV_VARS",
    "DATA_ENV",
    "DATA_IN",
    "ENV_ID_ENV",
    "HOSTNAME_ENV",
    "IMAGE_CODE",
    "IMAGE_DIGEST_ENV",
    "IMAGE_ENV",
    "IMAGE_ID_ENV",
    "RESULTS_ENV",
    "RESULTS_IN",
    "SECRET_VALUE",
    "TORCH_VERSION_ENV",
    "USER_ENV_ENV",
    "WORKSPACE_IN",
    "Accelerator",
    "is_secret_name",
    "recorded_user_env",
]

Accelerator = Literal["cpu", "cuda", "rocm"]
"""What an image is built for and what a run used (``TORCHRIG_ACCELERATOR``, a record's ``machine.accelerator``)."""
ACCELERATORS: tuple[str, ...] = get_args(Accelerator)

# ------------------------------------------------------------------------ variables set when a container starts

ENV_ID_ENV = "TORCHRIG_ENV_ID"
"""The environment id from matrix.yaml (also baked into the image by images/Dockerfile)."""
IMAGE_ENV = "TORCHRIG_IMAGE"
"""The image reference the container was started from."""
IMAGE_ID_ENV = "TORCHRIG_IMAGE_ID"
"""The image's content id (``sha256:...``)."""
IMAGE_DIGEST_ENV = "TORCHRIG_IMAGE_DIGEST"
"""The registry digest of the image, when it has one."""
HOSTNAME_ENV = "TORCHRIG_HOSTNAME"
"""The host's name: a container's own hostname is a random id, useless in a record."""
RESULTS_ENV = "TORCHRIG_RESULTS"
"""Where records go (inside a container: :data:`RESULTS_IN`; on the host the same variable names a directory)."""
DATA_ENV = "TORCHRIG_DATA"
"""Where data sets are read from (inside a container: :data:`DATA_IN`)."""
COMPILE_MAX_PYTHON_ENV = "TORCHRIG_COMPILE_MAX_PYTHON"
"""The newest Python that torch.compile supports with the image's torch, from compat.yaml's ``compile_max_python``
(an image may have no PyYAML to read compat.yaml itself)."""

USER_ENV_ENV = "TORCHRIG_USER_ENV"
"""The names (comma-separated) of the variables the user passed with ``--env NAME=VALUE``: the benchmark
fingerprint records them (values of secret-looking names as ``<set>``)."""

_SECRET = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|KEY|CREDENTIAL", re.IGNORECASE)
SECRET_VALUE = "<set>"


def is_secret_name(name: str) -> bool:
    """Whether a variable's value must not be recorded (``*TOKEN*``, ``*SECRET*``, ``*PASSWORD*``, ``*KEY*``)."""
    return _SECRET.search(name) is not None


def recorded_user_env(environ: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """The user's ``--env`` variables as a record keeps them: the names :data:`USER_ENV_ENV` lists, each with its
    value, or ``<set>`` for a name that looks secret (None: listed, but not set in this process)."""
    environ = dict(os.environ) if environ is None else environ
    names = [n for n in (environ.get(USER_ENV_ENV) or "").split(",") if n]
    return {n: (SECRET_VALUE if is_secret_name(n) and n in environ else environ.get(n)) for n in names}


CONTAINER_ENV_VARS: tuple[str, ...] = (
    ENV_ID_ENV, IMAGE_ENV, IMAGE_ID_ENV, IMAGE_DIGEST_ENV, HOSTNAME_ENV, RESULTS_ENV, DATA_ENV, COMPILE_MAX_PYTHON_ENV,
    USER_ENV_ENV,
)
"""Every variable torchrig passes into the containers it starts for tasks and benchmarks (all of them, on every
runtime: :func:`torchrig.container.suite_environment` sets each; a value not known is empty)."""

# ------------------------------------------------------------------------------ variables baked into the image

ACCELERATOR_ENV = "TORCHRIG_ACCELERATOR"
"""What the image was built for: cpu, cuda or rocm (``ENV`` in images/Dockerfile)."""
TORCH_VERSION_ENV = "TORCHRIG_TORCH_VERSION"
"""The torch version the image was built with (``ENV`` in images/Dockerfile)."""

# --------------------------------------------------------------------------------------------- in-image paths

RESULTS_IN = "/results"
"""The results directory inside a container (the host's results directory is mounted here)."""
DATA_IN = "/data"
"""The data directory inside a container."""
WORKSPACE_IN = "/workspace"
"""The project checkout inside a ``dev`` / devcontainer container."""
IMAGE_CODE = "/opt/torchrig"
"""Where images/Dockerfile puts src/torchrig, tasks/ and bench/ (on the image's PYTHONPATH)."""
CIFAR_FOLDER = "cifar-10-batches-py"
"""The folder under the data directory that torchvision's CIFAR10 loader reads (and tasks/make_data.py writes)."""
