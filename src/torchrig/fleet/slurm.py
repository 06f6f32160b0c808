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

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from torchrig.errors import SchedulerError, UsageError
from torchrig.fleet.plan import MAX_NODES, FleetPlan, Runtime, sh_word
from torchrig.fleet.runtimes import container_name, runtime_lines, runtime_setup
from torchrig.fleet.state import ElementState, parse_duration

__all__ = [
    "CALL_TIMEOUT_S",
    "MAX_ARRAY_INDEX",
    "SACCT_FORMAT",
    "SlurmOptions",
    "cluster_max_array_size",
    "parse_max_array_size",
    "parse_sacct",
    "parse_sbatch",
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
        raise SchedulerError(f"`{name}` is not installed here (not on PATH): run torchrig on a Slurm login node "
                             "(or use --dry-run to print the script)")
    return path


# Slurm's client commands answer in well under a second when slurmctld is up; a hang means it is not.
CALL_TIMEOUT_S = 60.0


def _run(argv: Sequence[str], *, stdin: str | None = None, timeout: float | None = None) -> tuple[int, str, str]:
    """Run a Slurm command with a timeout; (exit code, stdout, stderr). A hang or a failure to start is a
    SchedulerError naming the command (output that is not UTF-8 is read with replacement characters).

    The command runs in a session of its own and the whole group is killed at the timeout: a wrapper's child that
    kept the pipes open would otherwise keep ``communicate`` waiting after the wrapper is gone.
    """
    timeout = CALL_TIMEOUT_S if timeout is None else timeout
    try:
        proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
                                start_new_session=True)
    except OSError as e:
        raise SchedulerError(f"`{shlex.join(argv)}` could not be started: {e.strerror or e}") from None
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except BaseException as e:  # the timeout, or Ctrl-C (which the command's own session does not receive)
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        if isinstance(e, subprocess.TimeoutExpired):
            raise SchedulerError(f"`{shlex.join(argv)}` did not answer within {timeout:g} s: is slurmctld up "
                                 "(`scontrol ping`)? Try again when it answers.") from None
        raise
    return proc.returncode, out, err


def _call(argv: Sequence[str], *, stdin: str | None = None, what: str) -> str:
    code, out, err = _run(argv, stdin=stdin)
    if code != 0:
        detail = (err or out).strip()[-2000:]
        raise SchedulerError(f"{what}: `{shlex.join(argv)}` failed (exit {code}): {detail}")
    return out


# slurm.conf(5): MaxArraySize is at most MAX_NODES["slurm"]; a figure past it is not this setting (garbage, a stand-in)
_MAX_ARRAY_SIZE_LIMIT = MAX_NODES["slurm"]
_MAX_ARRAY_SIZE = re.compile(r"^\s*MaxArraySize\s*=\s*(\S+)\s*$", re.MULTILINE)
# asked before sbatch, where an answer is a convenience (sbatch refuses too): slurmctld answers in milliseconds
CONFIG_TIMEOUT_S = 10.0


def parse_max_array_size(text: str) -> int | None:
    """``scontrol show config``'s ``MaxArraySize = N`` -> N; None where the line is missing or is not a number in
    slurm.conf's range (0..4000001; 0 turns job arrays off)."""
    m = _MAX_ARRAY_SIZE.search(text)
    if m is None or not m.group(1).isdigit() or len(m.group(1)) > 8:
        return None
    value = int(m.group(1))
    return value if value <= _MAX_ARRAY_SIZE_LIMIT else None


def cluster_max_array_size(scontrol: str) -> int | None:
    """The cluster's MaxArraySize, from ``scontrol show config``; None where it cannot be learnt (the command
    fails, hangs past :data:`CONFIG_TIMEOUT_S` or answers without the setting): sbatch then decides, and says."""
    try:
        code, out, _ = _run([scontrol, "show", "config"], timeout=CONFIG_TIMEOUT_S)
    except SchedulerError:
        return None
    return parse_max_array_size(out) if code == 0 else None


def check_array_size(nodes: int, max_array_size: int | None) -> None:
    """``--nodes N`` makes indexes 0..N-1, each of which must be below MaxArraySize: N <= MaxArraySize."""
    if max_array_size is None or nodes <= max_array_size:
        return
    if max_array_size == 0:
        raise UsageError("this cluster has job arrays turned off (MaxArraySize = 0 in `scontrol show config`): "
                         "torchrig submits one array element per node; ask its admins, or run the suite per node")
    raise UsageError(f"--nodes {nodes:,} is more than this cluster takes in one job array (MaxArraySize = "
                     f"{max_array_size:,} in `scontrol show config`: indexes 0..{max_array_size - 1:,}): give "
                     f"--nodes {max_array_size:,} or fewer, or split the fleet into several submissions")


def submit(script: str, results: Path, describe: Callable[[str, Path], None], *, nodes: int | None = None) -> str:
    """Submit held, create ``results/<job>/``, let ``describe(job, folder)`` write into it, release; the job id.

    With ``nodes``, the cluster's MaxArraySize is asked first and a larger fleet is a UsageError before anything
    is submitted (where the setting cannot be read, sbatch's own refusal stands).
    If the folder cannot be prepared the job is cancelled, so no element runs without a place for its log.
    """
    sbatch, scontrol = _tool("sbatch"), _tool("scontrol")
    if nodes is not None:
        check_array_size(nodes, cluster_max_array_size(scontrol))
    results.mkdir(parents=True, exist_ok=True)
    out = _call([sbatch, "--parsable", "--hold"], stdin=script, what="submitting the job")
    job = parse_sbatch(out)
    folder = results / job
    try:
        folder.mkdir(parents=True, exist_ok=False)
        describe(job, folder)
    except BaseException as e:
        _run([_tool("scancel"), job])
        if isinstance(e, OSError):
            why = "exists already (a job of an earlier Slurm with the same id?)" if isinstance(
                e, FileExistsError) else f"cannot be written ({e.strerror})"
            raise SchedulerError(f"{folder} {why}: job {job} was cancelled; pass another --results") from None
        raise
    _call([scontrol, "release", job], what=f"releasing job {job}")
    return job


def parse_sbatch(out: str) -> str:
    """``sbatch --parsable``'s answer (``JOB`` or ``JOB;CLUSTER``) -> the job id; SchedulerError otherwise."""
    job = out.strip().split(";", 1)[0]
    if not _DIGITS.fullmatch(job):
        raise SchedulerError(f"sbatch answered {out.strip()[:200]!r} instead of a job id (a number)")
    return job


# --------------------------------------------------------------------------------------------------- states

_DIGITS = re.compile(r"[0-9]{1,18}")  # ASCII digits only: str.isdigit() admits '²', which int() refuses
# One element per node: a torchrig job has as many as the cluster has nodes. Slurm allows up to 4000000 (its
# largest MaxArraySize - 1), but a range past this bound (garbage, or not a torchrig job) is not expanded.
MAX_ARRAY_INDEX = 100_000


def _number(text: str) -> int | None:
    return int(text) if _DIGITS.fullmatch(text) else None


def _duration(text: str) -> float | None:
    return parse_duration(text) if len(text) <= 32 else None  # int() refuses numbers of over 4300 digits


def _exit(text: str) -> tuple[int | None, int | None]:
    code, _, sig = text.partition(":")
    return _number(code), _number(sig)


def _indexes(spec: str) -> list[int]:
    """``3``, ``[0-3,5]``, ``[0-7%2]`` (a pending range) -> the indexes (none past :data:`MAX_ARRAY_INDEX`)."""
    out: list[int] = []
    for part in spec.strip("[]").split("%", 1)[0].split(","):
        lo_text, _, hi_text = part.partition("-")
        lo, hi = _number(lo_text), _number(hi_text)
        if lo is None or lo > MAX_ARRAY_INDEX:
            continue
        out += range(lo, min(hi, MAX_ARRAY_INDEX) + 1) if hi is not None else [lo]
        if len(out) > MAX_ARRAY_INDEX:
            break
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
                index=index, state=word, exit_code=code, signal=sig, elapsed_s=_duration(elapsed),
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
                elapsed_s=_duration(f.get("RunTime", "")),
                node=None if nodes in ("", "(null)") else nodes, reason=f.get("Reason") or None)
    return [states[i] for i in sorted(states)]


def query(job: str) -> list[ElementState]:
    """The job's elements from ``sacct`` (Slurm's accounting), else from slurmctld's memory (``scontrol``).

    Clusters without accounting storage (no slurmdbd) still answer through ``scontrol`` for MinJobAge after a job
    ends (300 s by default); after that Slurm has forgotten the job and only its folder tells.
    """
    if not _DIGITS.fullmatch(job):
        raise UsageError(f"{job!r} is not a Slurm job id (a number, as `torchrig submit` printed it)")
    sacct = shutil.which("sacct")
    if sacct is not None:
        code, out, _ = _run([sacct, "-j", job, "--parsable2", "--noheader", f"--format={SACCT_FORMAT}"])
        states = parse_sacct(out, job) if code == 0 else []
        if states:
            return states
    code, out, _ = _run([_tool("scontrol"), "show", "job", job, "--oneliner"])
    if code != 0:
        return []  # "Invalid job id specified": unknown, or ended longer than MinJobAge ago without accounting
    return parse_scontrol(out)
