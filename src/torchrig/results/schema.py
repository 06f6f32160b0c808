"""The result record's schema: typed dataclasses, the machine fingerprint, and validation of loaded JSON.

A record is what one task run or one benchmark produced, together with the context that makes its numbers
meaningful (machine, software, container image, configuration). :func:`validate_record` lists every way a dict
differs from the schema; :func:`record_from_dict` turns a valid one into a :class:`Record`.

Standard library only, Python >= 3.10: this module ships into every image.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = [
    "GATE_OPS",
    "KINDS",
    "SCHEMA_ID",
    "SCHEMA_VERSION",
    "VERDICTS",
    "Container",
    "Gate",
    "Kind",
    "Machine",
    "Metric",
    "Record",
    "RecordError",
    "Software",
    "Verdict",
    "machine_fingerprint",
    "new_run_id",
    "record_from_dict",
    "utc_now",
    "validate_record",
]

SCHEMA_ID = "torchrig.record"
SCHEMA_VERSION = 1

Kind = Literal["task", "bench"]
Verdict = Literal["pass", "fail", "skip", "error"]
KINDS: tuple[str, ...] = ("task", "bench")
VERDICTS: tuple[str, ...] = ("pass", "fail", "skip", "error")
GATE_OPS: tuple[str, ...] = ("<", "<=", ">", ">=")


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


class RecordError(ValueError):
    """A record (or a dict claiming to be one) does not follow the schema."""


@dataclass(frozen=True, kw_only=True)
class Metric:
    """One measured number with its unit. ``repeats`` is how many measurements it summarises (1 for a task)."""

    value: float
    unit: str
    higher_is_better: bool = True
    repeats: int = 1
    stddev: float | None = None


@dataclass(frozen=True, kw_only=True)
class Gate:
    """A quality gate: ``metrics[metric] <op> threshold`` must hold for the verdict to be "pass"."""

    metric: str
    op: str
    threshold: float
    passed: bool

    @staticmethod
    def check(metric: str, op: str, threshold: float, value: float) -> Gate:
        if op not in GATE_OPS:
            raise RecordError(f"gate op {op!r} is not one of {', '.join(GATE_OPS)}")
        ok = {
            "<": value < threshold,
            "<=": value <= threshold,
            ">": value > threshold,
            ">=": value >= threshold,
        }[op]
        return Gate(metric=metric, op=op, threshold=threshold, passed=bool(ok) and math.isfinite(value))


@dataclass(frozen=True, kw_only=True)
class Machine:
    """Where the run happened. ``fingerprint`` groups records that may be compared with each other."""

    hostname: str
    os: str
    cpu: str
    cpu_count: int
    accelerator: str  # "cpu", "cuda" or "rocm": what the run actually used
    gpu_name: str | None = None
    gpu_count: int = 0
    gpu_memory_gb: float | None = None
    driver: str | None = None
    fingerprint: str = ""

    def with_fingerprint(self) -> Machine:
        return Machine(**{**asdict(self), "fingerprint": machine_fingerprint(self)})


@dataclass(frozen=True, kw_only=True)
class Software:
    """The software stack the numbers came from."""

    python: str
    torch: str | None = None
    torch_git: str | None = None
    torchvision: str | None = None
    transformers: str | None = None
    cuda: str | None = None
    rocm: str | None = None
    cudnn: str | None = None  # cuDNN on CUDA, MIOpen on ROCm


@dataclass(frozen=True, kw_only=True)
class Container:
    """The image a run happened in (absent when the run was on the host)."""

    image: str | None = None
    image_id: str | None = None
    image_digest: str | None = None


@dataclass(frozen=True, kw_only=True)
class Record:
    kind: Kind
    name: str
    env_id: str | None
    machine: Machine
    software: Software
    verdict: Verdict
    wall_time_s: float
    metrics: Mapping[str, Metric] = field(default_factory=dict)
    gates: tuple[Gate, ...] = ()
    config: Mapping[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    container: Container | None = None
    # machine load before/after the session (bench/load.py): {"busy": bool, "reasons": [str], ...}; absent in
    # records written before it existed, and in task records
    load: Mapping[str, Any] | None = None
    run_id: str = field(default_factory=new_run_id)
    created: str = field(default_factory=utc_now)
    schema: str = SCHEMA_ID
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["gates"] = [asdict(g) for g in self.gates]
        d["warnings"] = list(self.warnings)
        d["metrics"] = {k: asdict(v) for k, v in self.metrics.items()}
        d["config"] = dict(self.config)
        d["load"] = dict(self.load) if self.load is not None else None
        return d


def machine_fingerprint(m: Machine) -> str:
    """A short hash of what makes numbers comparable: accelerator, GPU model/count/driver, CPU model."""
    key = "|".join(str(x) for x in (m.accelerator, m.gpu_name, m.gpu_count, m.driver, m.cpu, m.cpu_count))
    return hashlib.sha256(key.encode()).hexdigest()[:12]


# ------------------------------------------------------------------------------------------------ validation


def _expect(d: Mapping[str, Any], key: str, types: type | tuple[type, ...], where: str, errs: list[str],
            *, optional: bool = False) -> Any:
    if key not in d or d[key] is None:
        if not optional:
            errs.append(f"{where}{key}: missing")
        return None
    v = d[key]
    if isinstance(v, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        errs.append(f"{where}{key}: expected {types}, got bool")
        return None
    if not isinstance(v, types):
        errs.append(f"{where}{key}: expected {getattr(types, '__name__', types)}, got {type(v).__name__}")
        return None
    return v


def validate_record(d: Any) -> list[str]:
    """Every way ``d`` differs from the schema (empty when it is a valid record of this schema version)."""
    errs: list[str] = []
    if not isinstance(d, dict):
        return [f"a record is a JSON object, got {type(d).__name__}"]
    if d.get("schema") != SCHEMA_ID:
        return [f"schema: expected {SCHEMA_ID!r}, got {d.get('schema')!r}"]
    ver = d.get("schema_version")
    if not isinstance(ver, int) or isinstance(ver, bool):
        return [f"schema_version: expected an integer, got {ver!r}"]
    if ver > SCHEMA_VERSION:
        return [f"schema_version {ver} is newer than this torchrig understands ({SCHEMA_VERSION}): upgrade torchrig"]
    if ver < 1:
        return [f"schema_version {ver} is not a known version"]
    kind = _expect(d, "kind", str, "", errs)
    if kind is not None and kind not in KINDS:
        errs.append(f"kind: {kind!r} is not one of {KINDS}")
    _expect(d, "name", str, "", errs)
    _expect(d, "env_id", str, "", errs, optional=True)
    _expect(d, "run_id", str, "", errs)
    _expect(d, "created", str, "", errs)
    verdict = _expect(d, "verdict", str, "", errs)
    if verdict is not None and verdict not in VERDICTS:
        errs.append(f"verdict: {verdict!r} is not one of {VERDICTS}")
    _expect(d, "wall_time_s", (int, float), "", errs)
    m = _expect(d, "machine", dict, "", errs)
    if m is not None:
        for k in ("hostname", "os", "cpu", "accelerator", "fingerprint"):
            _expect(m, k, str, "machine.", errs)
        _expect(m, "cpu_count", int, "machine.", errs)
        _expect(m, "gpu_count", int, "machine.", errs)
        for k in ("gpu_name", "driver"):
            _expect(m, k, str, "machine.", errs, optional=True)
        _expect(m, "gpu_memory_gb", (int, float), "machine.", errs, optional=True)
    s = _expect(d, "software", dict, "", errs)
    if s is not None:
        _expect(s, "python", str, "software.", errs)
        for k in Software.__dataclass_fields__:
            _expect(s, k, str, "software.", errs, optional=True)
    metrics = _expect(d, "metrics", dict, "", errs)
    for name, mv in (metrics or {}).items():
        if not isinstance(mv, dict):
            errs.append(f"metrics.{name}: expected an object")
            continue
        _expect(mv, "value", (int, float), f"metrics.{name}.", errs)
        _expect(mv, "unit", str, f"metrics.{name}.", errs)
        _expect(mv, "repeats", int, f"metrics.{name}.", errs)
        _expect(mv, "higher_is_better", bool, f"metrics.{name}.", errs, optional=True)
        _expect(mv, "stddev", (int, float), f"metrics.{name}.", errs, optional=True)
    gates = _expect(d, "gates", list, "", errs)
    for i, g in enumerate(gates or []):
        if not isinstance(g, dict):
            errs.append(f"gates[{i}]: expected an object")
            continue
        _expect(g, "metric", str, f"gates[{i}].", errs)
        op = _expect(g, "op", str, f"gates[{i}].", errs)
        if op is not None and op not in GATE_OPS:
            errs.append(f"gates[{i}].op: {op!r} is not one of {GATE_OPS}")
        _expect(g, "threshold", (int, float), f"gates[{i}].", errs)
        _expect(g, "passed", bool, f"gates[{i}].", errs)
    _expect(d, "config", dict, "", errs)
    _expect(d, "warnings", list, "", errs)
    c = _expect(d, "container", dict, "", errs, optional=True)
    for k in Container.__dataclass_fields__:
        _expect(c or {}, k, str, "container.", errs, optional=True)
    _validate_load(d, errs)
    _finite(d, errs)
    return errs


def _validate_load(d: Mapping[str, Any], errs: list[str]) -> None:
    load = _expect(d, "load", dict, "", errs, optional=True)
    if load is None:
        return
    _expect(load, "busy", bool, "load.", errs)
    reasons = _expect(load, "reasons", list, "load.", errs)
    if reasons is not None and not all(isinstance(r, str) for r in reasons):
        errs.append("load.reasons: expected a list of strings")


def _finite(d: Mapping[str, Any], errs: list[str]) -> None:
    """NaN and Infinity are not numbers a report can compare (JSON has neither; a dict built in Python can)."""
    numbers = [("wall_time_s", d.get("wall_time_s"))]
    numbers += [(f"metrics.{n}.{k}", mv.get(k)) for n, mv in _obj(d.get("metrics")).items() if isinstance(mv, dict)
                for k in ("value", "stddev")]
    numbers += [("machine.gpu_memory_gb", _obj(d.get("machine")).get("gpu_memory_gb"))]
    errs += [f"{where}: {v} is not a finite number" for where, v in numbers
             if isinstance(v, float) and not math.isfinite(v)]


def _obj(x: Any) -> Mapping[str, Any]:
    return x if isinstance(x, dict) else {}


def record_from_dict(d: Any) -> Record:
    """Parse a dict (e.g. loaded JSON) into a :class:`Record`; raises :class:`RecordError` listing every problem."""
    errs = validate_record(d)
    if errs:
        raise RecordError("; ".join(errs))
    c = d.get("container")
    return Record(
        kind=d["kind"],
        name=d["name"],
        env_id=d.get("env_id"),
        machine=Machine(**{k: v for k, v in d["machine"].items() if k in Machine.__dataclass_fields__}),
        software=Software(**{k: v for k, v in d["software"].items() if k in Software.__dataclass_fields__}),
        verdict=d["verdict"],
        wall_time_s=float(d["wall_time_s"]),
        metrics={k: Metric(**{kk: vv for kk, vv in v.items() if kk in Metric.__dataclass_fields__})
                 for k, v in d["metrics"].items()},
        gates=tuple(Gate(**g) for g in d["gates"]),
        config=d["config"],
        warnings=tuple(str(w) for w in d["warnings"]),
        container=Container(**{k: v for k, v in c.items() if k in Container.__dataclass_fields__}) if c else None,
        load=d.get("load"),
        run_id=d["run_id"],
        created=d["created"],
        schema_version=d["schema_version"],
    )
