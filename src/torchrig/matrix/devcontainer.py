"""``.devcontainer/<env>/devcontainer.json`` for every environment, generated from matrix.yaml.

VS Code and the Dev Containers CLI offer each ``.devcontainer/<name>/devcontainer.json`` as a choice. The files
are generated (``torchrig devcontainer --all``) and committed; a unit test regenerates them and compares, so they
cannot fall out of step with the matrix. They render the one container description
(:func:`torchrig.container.container`, what ``dev`` and ``run-tasks`` start): ``runArgs`` from
:func:`~torchrig.container.oci_args`, ``containerEnv`` from its environment, so the editor's container gets the
same shared memory, GPU flags and contract variables.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torchrig.container import SHM_SIZE, SuiteContainer, container, oci_args
from torchrig.matrix import Environment, Matrix, Target
from torchrig.results.contract import ENV_ID_ENV, IMAGE_ENV, WORKSPACE_IN

__all__ = [
    "DEVCONTAINER_DIR",
    "IMAGE_PYTHON",
    "IMAGE_USER",
    "RENDER_GID_FALLBACK",
    "RENDER_GID_PLACEHOLDER",
    "DevcontainerFile",
    "dev_target",
    "devcontainer_config",
    "devcontainer_description",
    "devcontainer_files",
    "devcontainer_json",
    "render_devcontainer",
    "stale_devcontainers",
    "write_devcontainers",
]

DEVCONTAINER_DIR = ".devcontainer"
# The image's non-root user and its Python (images/Dockerfile); the Dev Containers CLI maps the user's UID to
# the host's on Linux (updateRemoteUserUID), so files in the workspace stay the user's.
IMAGE_USER = "torchrig"
IMAGE_PYTHON = "/opt/venv/bin/python"
# The render group's number differs between hosts: VS Code substitutes the variable when it starts the container
# (`export TORCHRIG_RENDER_GID=$(getent group render | cut -d: -f3)`). Unset, the second `--group-add` must not
# repeat `video` (it was `video` twice): it falls back to nogroup's number, which grants nothing, so the container
# joins `video` only. A number needs no entry in the image's group file; a group *name* such as `render` would fail
# the container's start where the image lacks it.
RENDER_GID_FALLBACK = "65534"
RENDER_GID_PLACEHOLDER = f"${{localEnv:TORCHRIG_RENDER_GID:{RENDER_GID_FALLBACK}}}"
_HEADER = ("// Generated from matrix.yaml by `torchrig devcontainer --all`: edit matrix.yaml (or "
           "src/torchrig/matrix/devcontainer.py) and regenerate, do not edit by hand.\n")


def dev_target(env: Environment) -> Target:
    """Development happens in the ``devel`` image (compilers, headers) where the environment defines one."""
    return "devel" if "devel" in env.targets else "runtime"


def devcontainer_description(env: Environment) -> SuiteContainer:
    """The editor's container as the one description: the ``dev`` image, the GPU flags, shared memory, the image's
    own user (the Dev Containers CLI maps its UID to the host's)."""
    image = env.tags(dev_target(env)).immutable
    return container(env_id=env.id, accelerator=env.accelerator, image=image, purpose="devcontainer",
                     render_group=RENDER_GID_PLACEHOLDER, shm_size=SHM_SIZE, name="",
                     environment={IMAGE_ENV: image, ENV_ID_ENV: env.id})


def devcontainer_json(c: SuiteContainer) -> dict[str, Any]:
    """The keys of ``devcontainer.json`` that carry the container ``c``: its image, the workspace, the user, the
    ``docker run`` options (``runArgs``) and its environment (``containerEnv``, which the Dev Containers CLI passes
    on as ``--env``: the variables are not repeated in ``runArgs``)."""
    return {
        "image": c.image,
        "workspaceFolder": WORKSPACE_IN,  # the Dev Containers CLI mounts the workspace and starts there
        "workspaceMount": f"source=${{localWorkspaceFolder}},target={WORKSPACE_IN},type=bind",
        "remoteUser": IMAGE_USER,
        "updateRemoteUserUID": True,
        "runArgs": oci_args(c, remove=False, image_and_command=False, environment=False),
        "containerEnv": dict(c.environment),
    }


def devcontainer_config(env: Environment) -> dict[str, Any]:
    """The ``devcontainer.json`` of one environment, as a dict."""
    gpu = {"cpu": "CPU only", "cuda": f"CUDA {env.cuda}", "rocm": f"ROCm {env.rocm}"}[env.accelerator]
    return {
        "name": f"torchrig {env.id}: torch {env.torch}, {gpu}, Python {env.python}",
        **devcontainer_json(devcontainer_description(env)),
        "customizations": {
            "vscode": {
                "extensions": ["ms-python.python", "ms-python.vscode-pylance", "charliermarsh.ruff"],
                "settings": {
                    "python.defaultInterpreterPath": IMAGE_PYTHON,
                    "python.testing.pytestEnabled": True,
                    "python.testing.pytestArgs": ["tests/unit"],
                },
            },
        },
    }


def render_devcontainer(env: Environment) -> str:
    """The file's text: a header saying it is generated, then stable, indented JSON."""
    return _HEADER + json.dumps(devcontainer_config(env), indent=2) + "\n"


@dataclass(frozen=True, kw_only=True)
class DevcontainerFile:
    env_id: str
    path: Path
    text: str


def devcontainer_files(matrix: Matrix, env_ids: tuple[str, ...] | None = None) -> list[DevcontainerFile]:
    """What the generator would write: one file per environment (all, or those named)."""
    envs = matrix.environments if env_ids is None else tuple(matrix.get(i) for i in env_ids)
    root = matrix.root / DEVCONTAINER_DIR
    return [DevcontainerFile(env_id=e.id, path=root / e.id / "devcontainer.json", text=render_devcontainer(e))
            for e in envs]


def write_devcontainers(matrix: Matrix, env_ids: tuple[str, ...] | None = None) -> list[Path]:
    """Write the files whose content changed; returns those paths."""
    changed = []
    for f in devcontainer_files(matrix, env_ids):
        if f.path.is_file() and f.path.read_text(encoding="utf-8") == f.text:
            continue
        f.path.parent.mkdir(parents=True, exist_ok=True)
        f.path.write_text(f.text, encoding="utf-8")
        changed.append(f.path)
    return changed


def stale_devcontainers(matrix: Matrix) -> list[str]:
    """Every way the committed ``.devcontainer/`` differs from the generator (empty when in step)."""
    problems = []
    expected = {f.path: f for f in devcontainer_files(matrix)}
    for path, f in expected.items():
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif path.read_text(encoding="utf-8") != f.text:
            problems.append(f"{path}: differs from what matrix.yaml generates")
    root = matrix.root / DEVCONTAINER_DIR
    for path in sorted(root.glob("*/devcontainer.json")) if root.is_dir() else []:
        if path not in expected:
            problems.append(f"{path}: no environment {path.parent.name!r} in matrix.yaml")
    return problems
