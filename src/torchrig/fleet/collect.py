"""A fleet job's outcome per node: the scheduler's word joined with what each node left on shared storage.

The job folder (``RESULTS/<job>/``) holds ``job.json`` (what was submitted), one folder per element that finished
(``<index>-<host>/``: records, ``node.log``, ``exit.json``) and, after ``torchrig fleet collect``, ``fleet.json``:
every node's state, exit code, elapsed time, record count and -- for failed nodes -- the last lines of its log, for
the report to read beside the records.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torchrig.errors import UsageError
from torchrig.fleet.plan import MAX_NODES, SCHEDULERS
from torchrig.fleet.state import ElementState
from torchrig.results.io import Log, atomic_write_text, load_records
from torchrig.results.reading import InputFileError, read_json, tail_lines

__all__ = [
    "FLEET_FILE",
    "JOB_FILE",
    "NODE_FILE",
    "NodeReport",
    "gather",
    "read_job_file",
    "render",
    "wait",
    "write_fleet_file",
    "write_job_file",
]

JOB_FILE = "job.json"
MAX_ELEMENTS = max(MAX_NODES.values())  # the most elements a job of any scheduler can have
NODE_FILE = "exit.json"
FLEET_FILE = "fleet.json"
_TAIL = 15


def write_job_file(folder: Path, info: dict[str, Any]) -> Path:
    return atomic_write_text(folder / JOB_FILE, json.dumps(
        {"schema": "torchrig.fleet-job", "version": 1, **info}, indent=2, sort_keys=True) + "\n")


def read_job_file(folder: Path) -> dict[str, Any]:
    path = folder / JOB_FILE
    try:
        data = read_json(path, kind="job", expect=None)
    except InputFileError as e:
        if e.reason == "no such file":
            raise UsageError(f"{folder} holds no {JOB_FILE}: is it the folder of a job `torchrig submit` made? Pass "
                             "the job's --results folder with --results") from None
        raise UsageError(f"{path} cannot be read: {e.reason}") from None
    if not isinstance(data, dict) or data.get("schema") != "torchrig.fleet-job":
        raise UsageError(f"{path} is not a torchrig fleet job description")
    scheduler = data.get("scheduler", "slurm")
    if scheduler not in SCHEDULERS:
        raise UsageError(f"{path}: 'scheduler' is {_shown(scheduler)}, not one of {', '.join(SCHEDULERS)}: was the "
                         "file changed by hand? Put back the scheduler `torchrig submit` wrote")
    nodes = data.get("nodes", 1)
    if isinstance(nodes, bool) or not isinstance(nodes, int) or not 1 <= nodes <= MAX_ELEMENTS:
        raise UsageError(f"{path}: 'nodes' is {_shown(nodes)}, not a node count (a whole number 1..{MAX_ELEMENTS:,}, "
                         "as `torchrig submit` writes it): was the file changed by hand?")
    return data


def _shown(value: Any) -> str:
    """A JSON value for a message: at most 60 characters (a 400-digit number is said by its length)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**30:
        return f"a number of {len(str(abs(value)))} digits"
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:60] + "..."


@dataclass(frozen=True, kw_only=True)
class NodeReport:
    """One element: what the scheduler says and what the node published."""

    index: int
    element: ElementState | None  # None: the scheduler no longer knows the job
    folder: Path | None  # the published <index>-<host>/ folder
    exit: dict[str, Any] | None  # its exit.json
    records: int
    verdicts: dict[str, int]
    log_tail: tuple[str, ...] = ()
    visible: bool = True  # False: the job's folder is not on this machine (a PVC not mounted here)

    @property
    def host(self) -> str:
        if self.exit and self.exit.get("host"):
            return str(self.exit["host"])
        return (self.element.node if self.element else None) or "-"

    @property
    def state(self) -> str:
        if self.element is not None:
            return self.element.state
        if self.exit is not None:
            return "COMPLETED" if self.exit.get("exit_code") == 0 else "FAILED"
        return "UNKNOWN"

    @property
    def exit_code(self) -> int | None:
        if self.element is not None and self.element.exit_code is not None:
            return self.element.exit_code
        code = (self.exit or {}).get("exit_code")
        return code if isinstance(code, int) and not isinstance(code, bool) and -(2**31) <= code < 2**31 else None

    @property
    def elapsed_s(self) -> float | None:
        if self.element is not None and self.element.elapsed_s is not None:
            return self.element.elapsed_s
        value = (self.exit or {}).get("elapsed_s")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1e12:
            return None  # exit.json as a node wrote it has seconds; anything else (an edit, a huge int) is unknown
        return float(value)

    @property
    def done(self) -> bool:
        return self.element.done if self.element is not None else True

    @property
    def failed(self) -> bool:
        if not self.done:
            return False
        if self.element is not None and self.element.failed:
            return True
        if not self.visible:
            return self.element is None
        return self.folder is None or self.exit_code != 0

    def why(self) -> str:
        parts = [self.element.why()] if self.element is not None else [f"{self.state}, exit code {self.exit_code}"]
        if self.exit and self.exit.get("why"):
            parts.append(str(self.exit["why"]))
        if self.folder is None and self.visible:
            parts.append("the node published no folder (it died, or was killed before it could)")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "host": self.host, "state": self.state, "exit_code": self.exit_code,
                "elapsed_s": self.elapsed_s, "records": self.records, "verdicts": self.verdicts,
                "folder": self.folder.name if self.folder else None, "failed": self.failed,
                "why": self.why() if self.failed else None, "log_tail": list(self.log_tail) if self.failed else [],
                "scheduler": asdict(self.element) if self.element else None}


def _node_folders(job_dir: Path) -> dict[int, Path]:
    """index -> the element's published folder (the latest restart's, when Slurm requeued it)."""
    found: dict[int, Path] = {}
    for d in sorted(job_dir.iterdir(), key=lambda p: p.name) if job_dir.is_dir() else []:
        head = d.name.split("-", 1)[0]
        if (head.isascii() and head.isdigit() and len(head) <= 7 and not d.name.startswith(".") and d.is_dir()
                and (d / NODE_FILE).is_file()):  # ASCII digits only: "²".isdigit(), but int("²") fails
            found[int(head)] = d  # sorted: "-r2" after "-r1" after none
    return found


def _tail(path: Path) -> tuple[str, ...]:
    """The log's last lines, from its last 64 KiB only (a failed node's log can be gigabytes)."""
    try:
        return tail_lines(path, _TAIL)
    except InputFileError as e:
        return () if e.reason == "no such file" else (f"(log not read: {e})",)


def gather(job_dir: Path, states: list[ElementState], nodes: int) -> list[NodeReport]:
    """One report per element 0..nodes-1 (and any other the scheduler names)."""
    folders = _node_folders(job_dir)
    visible = job_dir.is_dir()
    by_index = {s.index: s for s in states}
    out: list[NodeReport] = []
    for index in sorted(set(range(nodes)) | set(by_index) | set(folders)):
        folder = folders.get(index)
        exit_info: dict[str, Any] | None = None
        records, verdicts = 0, Counter[str]()
        if folder is not None:
            try:
                exit_info = read_json(folder / NODE_FILE, kind="job")
            except InputFileError:
                exit_info = None  # the node left no usable exit.json: the scheduler's word stands alone
            recs, _ = load_records([folder])
            records, verdicts = len(recs), Counter(r.verdict for r in recs)
        log = folder / "node.log" if folder is not None else job_dir / f"slurm-{index}.out"
        out.append(NodeReport(index=index, element=by_index.get(index), folder=folder, exit=exit_info,
                              records=records, verdicts=dict(verdicts), log_tail=_tail(log), visible=visible))
    return out


def wait(poll: Callable[[], list[ElementState]], *, nodes: int, interval_s: float, timeout_s: float | None,
         log: Log, sleep: Callable[[float], None] = time.sleep, unknown_is_final: bool = False) -> list[ElementState]:
    """Poll until every element has ended; a progress line whenever the counts change (and every minute).

    ``unknown_is_final``: a job the scheduler does not know will not appear later (Slurm knows a job from its
    submission on), so stop at once; Kubernetes creates pods only once a queue admits the Job, so keep waiting.
    """
    t0 = time.monotonic()
    last, last_said = "", t0
    while True:
        states = poll()
        if not states and unknown_is_final:
            return states
        counts = Counter(s.state for s in states)
        done = len(states) >= nodes and all(s.done for s in states)
        line = ", ".join(f"{n} {state.lower()}" for state, n in sorted(counts.items())) or "not known yet"
        now = time.monotonic()
        if line != last or now - last_said >= 60:
            log(f"torchrig: {line} ({now - t0:.0f} s)")
            last, last_said = line, now
        if done:
            return states
        if timeout_s is not None and now - t0 >= timeout_s:
            log(f"torchrig: stopped waiting after {timeout_s:g} s; the job goes on (collect it again later)")
            return states
        sleep(interval_s)


def _elapsed(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def render(job: str, info: dict[str, Any], reports: list[NodeReport], job_dir: Path) -> list[str]:
    """The per-node table, then the failed nodes with why and their last log lines, then where the records are."""
    what = (f"{info['suite']} of {info['env']} on {info.get('nodes', len(reports))} node(s)"
            if "suite" in info and "env" in info else f"{len(reports)} node(s)")
    through = f" through {info['runtime']}" if info.get("runtime") else ""
    lines = [f"job {job} ({info.get('scheduler', '?')}): {what}{through}; records in {job_dir}"]
    width = max([4, *(len(r.host) for r in reports)])
    lines.append(f"  {'index':>5}  {'node':<{width}}  {'state':<13} {'exit':>4}  {'elapsed':>8}  records")
    for r in reports:
        code = "-" if r.exit_code is None else str(r.exit_code)
        verdicts = ", ".join(f"{n} {v}" for v, n in sorted(r.verdicts.items()))
        lines.append(f"  {r.index:>5}  {r.host:<{width}}  {r.state:<13} {code:>4}  {_elapsed(r.elapsed_s):>8}  "
                     f"{r.records}{f' ({verdicts})' if verdicts else ''}")
    failed = [r for r in reports if r.failed]
    if failed:
        lines.append(f"{len(failed)} of {len(reports)} node(s) failed:")
        for r in failed:
            lines.append(f"  element {r.index} on {r.host}: {r.why()}")
            if r.log_tail:
                lines.append(f"    last {len(r.log_tail)} lines of its log:")
                lines += [f"    | {x}" for x in r.log_tail]
    if reports and not any(r.visible for r in reports):
        lines.append(f"the records are not on this machine ({job_dir} does not exist): mount the job's volume and "
                     "pass its folder with --results to count them")
        return lines
    total = sum(r.records for r in reports)
    kept = sum(1 for r in reports if r.records)
    lines.append(f"{total} record(s) from {kept} node(s) in {job_dir}: torchrig report {job_dir}")
    return lines


def write_fleet_file(job_dir: Path, job: str, info: dict[str, Any], reports: list[NodeReport]) -> Path:
    data = {"schema": "torchrig.fleet", "version": 1, "job": job, "submitted": info,
            "nodes": [r.to_dict() for r in reports], "failed": sum(1 for r in reports if r.failed)}
    return atomic_write_text(job_dir / FLEET_FILE, json.dumps(data, indent=2, sort_keys=True) + "\n")
