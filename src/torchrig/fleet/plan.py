"""What a fleet job runs on every node: one environment's image, a suite, and the options of run-tasks/run-bench.

A :class:`FleetPlan` is scheduler-neutral; :mod:`torchrig.fleet.slurm` and :mod:`torchrig.fleet.kubernetes` render it.
Values only a node knows (its host name, array index, work folder) appear in the plan's words as
:func:`var` placeholders, which each renderer turns into a shell variable of its script.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from torchrig.container import (
    SHM_SIZE,
    SuiteContainer,
    SuiteImage,
    SuiteKind,
    compile_max_python,
    gpu_flags,
    suite_container,
)
from torchrig.errors import UsageError
from torchrig.matrix import Environment
from torchrig.results.contract import CIFAR_FOLDER

__all__ = [
    "INDEX_PLACEHOLDER",
    "MAX_NODES",
    "RUNTIMES",
    "SCHEDULERS",
    "SUITES",
    "FleetPlan",
    "NodeFacts",
    "Runtime",
    "Scheduler",
    "SuiteChoice",
    "sh_word",
    "sh_words",
    "var",
]

Scheduler = Literal["slurm", "kubernetes"]
Runtime = Literal["pyxis", "apptainer", "docker", "podman"]
SuiteChoice = Literal["tasks", "bench", "both"]
"""What ``submit --suite`` runs on every node: one suite kind, or both one after the other."""
SCHEDULERS: tuple[str, ...] = get_args(Scheduler)
RUNTIMES: tuple[str, ...] = get_args(Runtime)

# The most elements each scheduler can take in one job, checked before it is contacted. Slurm: a job array's
# indexes must be below MaxArraySize, whose largest allowed value is 4000001 (slurm.conf(5); the default 1001 lets
# a cluster take 1001 nodes, and sbatch itself refuses more than the cluster's setting). Kubernetes: an Indexed
# Job's completions (and parallelism) may not exceed 100000 (batch/v1 JobSpec validation).
MAX_NODES: dict[str, int] = {"slurm": 4_000_001, "kubernetes": 100_000}
SUITES: tuple[str, ...] = get_args(SuiteChoice)

INDEX_PLACEHOLDER = "{index}"
"""In the arguments after ``--``: the node's index in the job (e.g. ``--seed {index}``)."""

# A placeholder is NUL-delimited: no command-line argument or path can contain NUL, so it cannot clash.
_VAR = re.compile("\x00([a-z_]+)\x00")


def var(name: str) -> str:
    """A placeholder for the node-side shell variable ``name`` inside a word."""
    return f"\x00{name}\x00"


def sh_word(word: str, names: Mapping[str, str] | None = None) -> str:
    """``word`` as one shell word: literal parts single-quoted where needed, placeholders as ``"${name}"``.

    ``names`` maps a placeholder to the script's variable when they differ (Kubernetes' index variable).
    """
    out: list[str] = []
    pos = 0
    for m in _VAR.finditer(word):
        if m.start() > pos:
            out.append(shlex.quote(word[pos:m.start()]))
        name = (names or {}).get(m.group(1), m.group(1))
        out.append(f'"${{{name}}}"')
        pos = m.end()
    if pos < len(word) or not out:
        out.append(shlex.quote(word[pos:]))
    return "".join(out)


def sh_words(words: Sequence[str], names: Mapping[str, str] | None = None) -> str:
    return " ".join(sh_word(w, names) for w in words)


@dataclass(frozen=True, kw_only=True)
class FleetPlan:
    """One suite (or both) of one environment on ``nodes`` nodes, each writing its records to its own folder."""

    env: Environment
    image: str
    suite: SuiteChoice = "tasks"
    nodes: int = 1
    results: Path  # on storage every node and the submitting machine see (Slurm), or the PVC's mount path
    data: Path | None = None  # shared data folder; None: each node writes the synthetic CIFAR-10 stand-in locally
    quick: bool = False
    timeout_s: float | None = None
    network: str | None = "none"
    use_gpu: bool = True
    shm_size: str = SHM_SIZE
    ipc_host: bool = False
    args: tuple[str, ...] = ()  # for the suite's command; INDEX_PLACEHOLDER already replaced by var("index")
    user_env: Mapping[str, str] = field(default_factory=dict)  # --env NAME=VALUE

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise UsageError(f"--nodes {self.nodes}: a fleet job needs at least one node")
        if self.suite == "both" and self.args:
            raise UsageError("arguments after `--` go to one suite's command: use --suite tasks or --suite bench "
                             "with them (or leave them out with --suite both)")
        if self.timeout_s is not None and self.timeout_s < 0:
            raise UsageError(f"--timeout {self.timeout_s:g}: give seconds, or 0 for no limit")

    @classmethod
    def with_placeholders(cls, args: Sequence[str], **fields: object) -> FleetPlan:
        """A plan whose pass-through ``args`` have ``{index}`` replaced by the node's index."""
        return cls(args=tuple(a.replace(INDEX_PLACEHOLDER, var("index")) for a in args), **fields)  # type: ignore[arg-type]

    @property
    def suites(self) -> tuple[SuiteKind, ...]:
        return ("tasks", "bench") if self.suite == "both" else (self.suite,)

    @property
    def gpu(self) -> bool:
        """Whether the nodes' containers get the accelerator (never for the cpu environments)."""
        return self.use_gpu and self.env.accelerator != "cpu"

    @property
    def image_digest(self) -> str | None:
        """The registry digest, where the image is named by one (``--pin-image``, ``--image REPO@sha256:...``)."""
        return self.image if "@sha256:" in self.image else None

    def container(self, suite: SuiteKind, node: NodeFacts) -> SuiteContainer:
        """The one description of ``suite``'s container on a node, the node's facts as the runtime names them."""
        gpu = gpu_flags(self.env.accelerator, use_gpu=self.gpu, render_group=node.render_group,
                        nvidia_gpus=node.nvidia_gpus, pass_env=node.pass_env)
        image = SuiteImage(ref=self.image, id=node.image_id, digest=node.image_digest or self.image_digest)
        return suite_container(
            env_id=self.env.id, accelerator=self.env.accelerator, image=image, kind=suite, results=node.results,
            data=node.data, hostname=node.hostname, compile_max_python=compile_max_python(self.env.torch),
            gpu=gpu, uid=node.uid, gid=node.gid, user_env=self.user_env, quick=self.quick,
            # into the node's own data folder: nodes never race on shared storage
            synthetic_cifar=self.data is None, args=self.args, shm_size=self.shm_size, ipc_host=self.ipc_host,
            network_mode=self.network or None, name=node.name,
        )

    def check_data(self) -> None:
        """A shared ``--data`` must hold CIFAR-10: nodes writing the synthetic stand-in into one folder would race."""
        if self.data is not None and "tasks" in self.suites and not (self.data / CIFAR_FOLDER).is_dir():
            raise UsageError(f"--data {self.data} has no {CIFAR_FOLDER}/: put CIFAR-10 there, or leave out --data "
                             "(each node then trains on the synthetic stand-in, written to a local folder)")


@dataclass(frozen=True, kw_only=True)
class NodeFacts:
    """What only the node knows, as the runtime's script names it (:func:`var` placeholders by default)."""

    results: str = var("work")  # the node's local records folder
    data: str = var("data")
    hostname: str = var("host")
    uid: int | str = var("uid")
    gid: int | str = var("gid")
    image_id: str = ""  # docker/podman read it on the node after the pull
    image_digest: str | None = None  # the registry digest, where the node reads it (docker/podman)
    render_group: str | None = None  # ROCm: the node's render GID
    nvidia_gpus: str = "all"  # docker: the GPUs Slurm allocated
    pass_env: tuple[str, ...] = ()  # host variables handed on by name where set
    name: str | None = None  # the container's name (docker/podman: removed by name on a signal)
