"""What a fleet job runs on every node: one environment's image, a suite, and the options of run-tasks/run-bench.

A :class:`FleetPlan` is scheduler-neutral; :mod:`torchrig.fleet.slurm` and :mod:`torchrig.fleet.kubernetes` render it.
Values only a node knows (its host name, array index, work folder) appear in the plan's words as
:func:`var` placeholders, which each renderer turns into a shell variable of its script.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from torchrig.errors import UsageError
from torchrig.matrix import Environment
from torchrig.results.contract import (
    CIFAR_FOLDER,
    DATA_ENV,
    DATA_IN,
    ENV_ID_ENV,
    HOSTNAME_ENV,
    IMAGE_ENV,
    RESULTS_ENV,
    RESULTS_IN,
)

__all__ = [
    "INDEX_PLACEHOLDER",
    "RUNTIMES",
    "SCHEDULERS",
    "SUITES",
    "FleetPlan",
    "Runtime",
    "Scheduler",
    "Suite",
    "SuiteName",
    "sh_word",
    "sh_words",
    "var",
]

Scheduler = Literal["slurm", "kubernetes"]
Runtime = Literal["pyxis", "apptainer", "docker", "podman"]
Suite = Literal["tasks", "bench", "both"]
SuiteName = Literal["tasks", "bench"]
SCHEDULERS: tuple[str, ...] = get_args(Scheduler)
RUNTIMES: tuple[str, ...] = get_args(Runtime)
SUITES: tuple[str, ...] = get_args(Suite)

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
    suite: Suite = "tasks"
    nodes: int = 1
    results: Path  # on storage every node and the submitting machine see (Slurm), or the PVC's mount path
    data: Path | None = None  # shared data folder; None: each node writes the synthetic CIFAR-10 stand-in locally
    quick: bool = False
    timeout_s: float | None = None
    network: str | None = "none"
    use_gpu: bool = True
    shm_size: str = "8g"
    ipc_host: bool = False
    args: tuple[str, ...] = ()  # for the suite's command; INDEX_PLACEHOLDER already replaced by var("index")

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
    def suites(self) -> tuple[SuiteName, ...]:
        return ("tasks", "bench") if self.suite == "both" else (self.suite,)

    @property
    def gpu(self) -> bool:
        """Whether the nodes' containers get the accelerator (never for the cpu environments)."""
        return self.use_gpu and self.env.accelerator != "cpu"

    def command(self, suite: SuiteName) -> list[str]:
        """The command run in the container for ``suite`` (records to :data:`RESULTS_IN`)."""
        cmd = ["python", "-m", suite, "--results", RESULTS_IN, *(["--quick"] if self.quick else [])]
        if suite == "tasks" and self.data is None:
            cmd.append("--synthetic-cifar")  # into the node's own data folder: nodes never race on shared storage
        return [*cmd, *self.args]

    def check_data(self) -> None:
        """A shared ``--data`` must hold CIFAR-10: nodes writing the synthetic stand-in into one folder would race."""
        if self.data is not None and "tasks" in self.suites and not (self.data / CIFAR_FOLDER).is_dir():
            raise UsageError(f"--data {self.data} has no {CIFAR_FOLDER}/: put CIFAR-10 there, or leave out --data "
                             "(each node then trains on the synthetic stand-in, written to a local folder)")

    def environment(self) -> dict[str, str]:
        """The variables every suite container gets (the host/image contract), placeholders for node facts."""
        return {ENV_ID_ENV: self.env.id, IMAGE_ENV: self.image, HOSTNAME_ENV: var("host"),
                RESULTS_ENV: RESULTS_IN, DATA_ENV: DATA_IN, "HOME": "/tmp"}
