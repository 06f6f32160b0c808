"""Slurm: the sbatch script of a fleet job, its submission, and what Slurm says about its elements.

One array element per node. Each element runs the suite in a container, writing records into a folder on the
node's local disk; when the suite ends (or Slurm signals a time limit or ``scancel``) the element writes its exit
status and moves the whole folder onto shared storage in one rename:
``RESULTS/<job>/<index>-<host>/`` (records, ``node.log``, ``exit.json``). A node that dies outright leaves
nothing half-written there; Slurm's own log of the element is ``RESULTS/<job>/slurm-<index>.out``.

The job is submitted held, its folder is created and described (``job.json``, ``job.sbatch``), then released, so
no element can start before the folder its log goes to exists.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from torchrig.errors import SchedulerError, UsageError
from torchrig.fleet.plan import FleetPlan, Runtime, sh_word
from torchrig.fleet.runtimes import container_name, runtime_lines, runtime_setup
from torchrig.fleet.state import ElementState, parse_duration

__all__ = [
    "SACCT_FORMAT",
    "SlurmOptions",
    "parse_sacct",
    "parse_scontrol",
    "query",
    "render_sbatch",
    "submit",
]

SACCT_FORMAT = "JobID,State,ExitCode,Elapsed,NodeList,Reason"
_TIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")


@dataclass(frozen=True, kw_only=True)
class SlurmOptions:
    runtime: Runtime = "docker"
    partition: str | None = None
    time: str | None = None  # Slurm's --time: minutes, MM:SS, HH:MM:SS, D-HH[:MM[:SS]]
    account: str | None = None
    exclusive: bool = False
    gpus_per_node: int | None = None
    gres: str | None = None

    def __post_init__(self) -> None:
        if self.gpus_per_node is not None and self.gres:
            raise UsageError("give --gpus-per-node or --gres, not both")
        if self.gpus_per_node is not None and self.gpus_per_node < 1:
            raise UsageError(f"--gpus-per-node {self.gpus_per_node}: give at least 1 (or leave it out)")
        if self.time and not _TIME.match(self.time):
            raise UsageError(f"--time {self.time!r} is not a Slurm time limit: minutes, HH:MM:SS or D-HH:MM:SS")


def _directives(plan: FleetPlan, opts: SlurmOptions) -> list[str]:
    out = [f"--job-name=torchrig-{plan.env.id}", f"--array=0-{plan.nodes - 1}", "--nodes=1", "--ntasks=1",
           f"--output={plan.results}/%A/slurm-%a.out"]
    out += [f"--partition={opts.partition}"] if opts.partition else []
    out += [f"--account={opts.account}"] if opts.account else []
    out += [f"--time={opts.time}"] if opts.time else []
    out += ["--exclusive"] if opts.exclusive else []
    out += [f"--gpus-per-node={opts.gpus_per_node}"] if opts.gpus_per_node else []
    out += [f"--gres={opts.gres}"] if opts.gres else []
    for d in out:
        if "\n" in d or " " in d:
            raise UsageError(f"#SBATCH {d}: a Slurm option cannot hold spaces or newlines")
    return [f"#SBATCH {d}" for d in out]


# The part of every script that does not depend on the plan: the node's facts, logging, and publishing the node's
# folder in one rename (also on SIGTERM: Slurm's time limit and scancel send it before SIGKILL).
_PROLOGUE = r"""set -uo pipefail
job=${SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}
index=${SLURM_ARRAY_TASK_ID:-0}
host=$(hostname -s)
jobdir=__RESULTS__/$job
node=$index-$host
[[ ${SLURM_RESTART_COUNT:-0} == 0 ]] || node=$node-r$SLURM_RESTART_COUNT
uid=$(id -u)
gid=$(id -g)
work=$(mktemp -d "${TMPDIR:-/tmp}/torchrig-$job-$index.XXXXXX") && chmod 0755 "$work" || exit 1
__DATA__
started=$(date -u +%FT%TZ)
t0=$(date +%s)
rc=0
failed=
say() { printf 'torchrig: %s\n' "$*" | tee -a "$work/node.log"; }
finish() {  # finish CODE [WHY]: write exit.json, move the node's folder onto shared storage in one rename, exit
  trap - TERM INT
  local code=$1 why=${2:-} tmp="$jobdir/.$node.tmp"
  printf '{"schema": "torchrig.fleet-node", "version": 1, "job": "%s", "index": %d, "host": "%s", '\
'"folder": "%s", "exit_code": %d, "why": "%s", "started": "%s", "ended": "%s", "elapsed_s": %d}\n' \
    "$job" "$index" "$host" "$node" "$code" "$why" "$started" "$(date -u +%FT%TZ)" "$(( $(date +%s) - t0 ))" \
    >"$work/exit.json"
  say "exit $code${why:+ ($why)}: publishing $jobdir/$node"
  rm -rf "$tmp" && cp -R "$work" "$tmp" && mv -T "$tmp" "$jobdir/$node" || say "could not publish $jobdir/$node"
  rm -rf "$work" __DATA_CLEANUP__
  exit "$code"
}
in_node() {  # run a suite in the background (so a signal is handled at once); its output to both logs
  ( "$@" 2>&1 | tee -a "$work/node.log"; exit "${PIPESTATUS[0]}" ) &
  wait $!
}
"""


def render_sbatch(plan: FleetPlan, opts: SlurmOptions) -> str:
    """The sbatch script for ``plan``: a job array with one element per node."""
    results = str(plan.results)
    if not plan.results.is_absolute():
        raise UsageError(f"--results {results}: give an absolute path on storage every node sees")
    if any(c in results for c in ",\"'\n"):
        raise UsageError(f"--results {results}: a comma, quote or newline in the path cannot be bind-mounted")
    runtime = opts.runtime
    head = [
        "#!/bin/bash",
        f"# torchrig fleet job: {plan.suite} of {plan.env.id} ({plan.image}) on {plan.nodes} node(s) through "
        f"{runtime}.",
        "# Written by `torchrig submit`; each element publishes RESULTS/<job>/<index>-<host>/ when it ends.",
        *_directives(plan, opts),
        "",
    ]
    if plan.data is None:
        data = 'data=$(mktemp -d "${TMPDIR:-/tmp}/torchrig-data-$job-$index.XXXXXX") || exit 1'
        data_cleanup = '"$data"'
    else:
        data, data_cleanup = f"data={sh_word(str(plan.data))}", ""
    prologue = (_PROLOGUE.replace("__RESULTS__", sh_word(results)).replace("__DATA_CLEANUP__", data_cleanup)
                .replace("__DATA__", data))
    names = [sh_word(container_name(plan, s)) for s in plan.suites]
    cleanup = (f"{runtime} rm -f {' '.join(names)} >/dev/null 2>&1; " if runtime in ("docker", "podman") else "")
    body = [
        f"stop() {{ say 'stopped by a signal (time limit, scancel or node shutdown)'; {cleanup}"
        "finish 143 'stopped by a signal'; }",
        "trap stop TERM INT",
        f'say "{plan.suite} of {plan.env.id} on $host (element $index of job $job) through {runtime}"',
        *runtime_setup(plan, runtime),
    ]
    for suite in plan.suites:
        *exports, command = runtime_lines(plan, runtime, suite)
        timeout = f"timeout --kill-after=30 {plan.timeout_s:g} " if plan.timeout_s else ""
        body += [
            *exports,
            f"in_node {timeout}{command}",
            "code=$?",
            f'say "{suite} exited $code"',
            f'[[ $code == 0 ]] || {{ [[ $rc != 0 ]] || rc=$code; failed="$failed {suite} exit $code"; }}',
        ]
    body.append('finish "$rc" "${failed# }"')
    return "\n".join([*head, prologue, *body]) + "\n"


# ------------------------------------------------------------------------------------------------ submitting


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SchedulerError(f"`{name}` is not installed here: run torchrig on a Slurm login node (or use "
                             "--dry-run to print the script)")
    return path


def _call(argv: Sequence[str], *, stdin: str | None = None, what: str) -> str:
    try:
        proc = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise SchedulerError(f"{what}: `{shlex.join(argv)}` did not answer within 120 s; is slurmctld up?") from None
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise SchedulerError(f"{what}: `{shlex.join(argv)}` failed (exit {proc.returncode}): {detail}")
    return proc.stdout


def submit(script: str, results: Path, describe: Callable[[str, Path], None]) -> str:
    """Submit held, create ``results/<job>/``, let ``describe(job, folder)`` write into it, release; the job id.

    If the folder cannot be prepared the job is cancelled, so no element runs without a place for its log.
    """
    sbatch, scontrol = _tool("sbatch"), _tool("scontrol")
    results.mkdir(parents=True, exist_ok=True)
    out = _call([sbatch, "--parsable", "--hold"], stdin=script, what="submitting the job")
    job = out.strip().split(";", 1)[0]
    if not job.isdigit():
        raise SchedulerError(f"sbatch answered {out.strip()!r} instead of a job id")
    folder = results / job
    try:
        folder.mkdir(parents=True, exist_ok=False)
        describe(job, folder)
    except BaseException as e:
        subprocess.run([_tool("scancel"), job], capture_output=True)
        if isinstance(e, OSError):
            why = "exists already (a job of an earlier Slurm with the same id?)" if isinstance(
                e, FileExistsError) else f"cannot be written ({e.strerror})"
            raise SchedulerError(f"{folder} {why}: job {job} was cancelled; pass another --results") from None
        raise
    _call([scontrol, "release", job], what=f"releasing job {job}")
    return job


# --------------------------------------------------------------------------------------------------- states


def _exit(text: str) -> tuple[int | None, int | None]:
    code, _, sig = text.partition(":")
    return (int(code) if code.isdigit() else None, int(sig) if sig.isdigit() else None)


def _indexes(spec: str) -> list[int]:
    """``3``, ``[0-3,5]``, ``[0-7%2]`` (a pending range) -> the indexes."""
    out: list[int] = []
    for part in spec.strip("[]").split("%", 1)[0].split(","):
        lo, _, hi = part.partition("-")
        if lo.isdigit():
            out += range(int(lo), int(hi) + 1) if hi.isdigit() else [int(lo)]
    return out


def parse_sacct(text: str, job: str) -> list[ElementState]:
    """``sacct -j JOB --parsable2 --noheader --format=`` :data:`SACCT_FORMAT`, one state per array element.

    Steps (``12_0.batch``, ``12_0.extern``) are skipped: the element's own line carries its state and exit code.
    A job that is not an array counts as element 0.
    """
    states: dict[int, ElementState] = {}
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) < 6 or fields[0] == "JobID":
            continue
        job_id, state, exit_code, elapsed, nodes, reason = fields[:6]
        base, _, element = job_id.partition("_")
        if base != job or "." in job_id:
            continue
        code, sig = _exit(exit_code)
        word = state.split()[0] if state.strip() else "UNKNOWN"  # "CANCELLED by 0" -> CANCELLED
        for index in _indexes(element) if element else [0]:
            states[index] = ElementState(
                index=index, state=word, exit_code=code, signal=sig, elapsed_s=parse_duration(elapsed),
                node=None if nodes in ("", "None assigned") else nodes, reason=reason or None)
    return [states[i] for i in sorted(states)]


_FIELD = re.compile(r"(?:^|\s)([A-Za-z][\w:/]*)=(\S*)")


def parse_scontrol(text: str) -> list[ElementState]:
    """``scontrol show job JOB --oneliner``: one line per element (pending ranges share one line)."""
    states: dict[int, ElementState] = {}
    for line in text.splitlines():
        f = dict(_FIELD.findall(line))
        if "JobState" not in f:
            continue
        code, sig = _exit(f.get("ExitCode", ""))
        nodes = f.get("NodeList", "")
        for index in _indexes(f.get("ArrayTaskId", "0")):
            states[index] = ElementState(
                index=index, state=f["JobState"], exit_code=code, signal=sig,
                elapsed_s=parse_duration(f.get("RunTime", "")),
                node=None if nodes in ("", "(null)") else nodes, reason=f.get("Reason") or None)
    return [states[i] for i in sorted(states)]


def query(job: str) -> list[ElementState]:
    """The job's elements from ``sacct`` (Slurm's accounting), else from slurmctld's memory (``scontrol``).

    Clusters without accounting storage (no slurmdbd) still answer through ``scontrol`` for MinJobAge after a job
    ends (300 s by default); after that Slurm has forgotten the job and only its folder tells.
    """
    if not job.isdigit():
        raise UsageError(f"{job!r} is not a Slurm job id (a number, as `torchrig submit` printed it)")
    sacct = shutil.which("sacct")
    if sacct is not None:
        proc = subprocess.run([sacct, "-j", job, "--parsable2", "--noheader", f"--format={SACCT_FORMAT}"],
                              capture_output=True, text=True, timeout=120)
        states = parse_sacct(proc.stdout, job) if proc.returncode == 0 else []
        if states:
            return states
    proc = subprocess.run([_tool("scontrol"), "show", "job", job, "--oneliner"], capture_output=True, text=True,
                          timeout=120)
    if proc.returncode != 0:
        return []  # "Invalid job id specified": unknown, or ended longer than MinJobAge ago without accounting
    return parse_scontrol(proc.stdout)
