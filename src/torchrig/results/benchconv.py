"""Convert pytest-benchmark JSON (``--benchmark-json``) into result records: one ``kind="bench"`` record per benchmark.

The torchrig suite (``bench/``) stores everything a record needs in the JSON itself: the environment fingerprint in
``machine_info["torchrig"]`` and, per benchmark, ``extra_info`` with the case, the flags, the timing self-check and
the derived metrics (see ``bench/results.py``). This module maps that onto :mod:`torchrig.results.records` and adds:

* model FLOPS utilisation (``mfu_pct``): a model's achieved TFLOP/s as a percentage of the best GEMM TFLOP/s
  measured in the same JSON at the matching precision (fp32, tf32, bf16 or fp16), where both are present;
* gates: the wall-vs-device timer self-check must have flagged no round, and on a GPU the round-to-round
  coefficient of variation must be <= 2 %. A record passes when its gates pass.

Benchmarks from other suites (no ``extra_info["torchrig_bench"]``) still become records, with the mean time.

Usage: ``python -m torchrig.results.benchconv BENCH.json [MORE.json ...] --results DIR``. Standard library only.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torchrig.errors import ConfigurationError, FatalError
from torchrig.results.reading import InputFileError, read_json
from torchrig.results.records import (
    Container,
    Gate,
    Machine,
    Metric,
    Record,
    Software,
    Verdict,
    new_run_id,
    validate_record,
    write_record,
)

__all__ = ["CV_GATE_PCT", "add_utilisation", "convert", "load_bench_json", "main", "records_from_json"]

CV_GATE_PCT = 2.0  # repeat-run coefficient of variation a GPU result must stay under (issue 5)
_GPU = ("cuda", "rocm")


def load_bench_json(path: str | Path) -> dict[str, Any]:
    """Read a pytest-benchmark JSON file; :class:`ConfigurationError` if it is not one."""
    p = Path(path)
    try:
        data = read_json(p, kind="bench-json", expect=None)
    except InputFileError as e:
        raise ConfigurationError([f"cannot read it as JSON: {e.reason}"], source=str(p)) from None
    problems = []
    if not isinstance(data, dict):
        problems.append("expected a JSON object at the top")
    else:
        if not isinstance(data.get("benchmarks"), list):
            problems.append("no 'benchmarks' list: is this a --benchmark-json file?")
        if not isinstance(data.get("machine_info"), dict):
            problems.append("no 'machine_info' object")
    if problems:
        raise ConfigurationError(problems, source=str(p))
    return data  # type: ignore[no-any-return]


# ------------------------------------------------------------------------------------------- utilisation


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def add_utilisation(benchmarks: Sequence[dict[str, Any]]) -> None:
    """Add ``mfu_pct`` to every model benchmark whose ``ceiling_key`` has a GEMM ceiling among ``benchmarks``.

    Idempotent (an existing ``mfu_pct`` is kept). Called by the suite when it writes the JSON, and again by the
    converter, so a JSON from an older run gains the metric too.
    """
    best: dict[str, tuple[float, str]] = {}
    for b in benchmarks:
        e = b.get("extra_info") or {}
        c = e.get("ceiling")
        if isinstance(c, dict) and isinstance(c.get("key"), str):
            t = _num(c.get("tflops"))
            if t and (c["key"] not in best or t > best[c["key"]][0]):
                best[c["key"]] = (t, str(e.get("name") or b.get("name")))
    for b in benchmarks:
        e = b.get("extra_info") or {}
        key, mets = e.get("ceiling_key"), e.get("metrics")
        if not isinstance(mets, dict) or key not in best or "mfu_pct" in mets:
            continue
        tf = mets.get("tflops")
        if not isinstance(tf, dict) or (achieved := _num(tf.get("value"))) is None:
            continue
        ceiling, source = best[key]
        sd = _num(tf.get("stddev"))
        mets["mfu_pct"] = {
            "value": 100 * achieved / ceiling,
            "unit": "%",
            "higher_is_better": True,
            "repeats": int(tf.get("repeats") or 1),
            "stddev": None if sd is None else 100 * sd / ceiling,
        }
        e["mfu_ceiling"] = {"key": key, "tflops": ceiling, "from": source}


# ---------------------------------------------------------------------------------------------- records


def _obj(x: Any) -> dict[str, Any]:
    return x if isinstance(x, dict) else {}


def _fields(cls: type, d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k in cls.__dataclass_fields__}  # type: ignore[attr-defined]


def _machine(mi: Mapping[str, Any], env: Mapping[str, Any]) -> Machine:
    if isinstance(env.get("machine"), dict):
        return Machine(**_fields(Machine, env["machine"]))
    cpu = _obj(mi.get("cpu"))
    m = Machine(
        hostname=str(mi.get("node") or "unknown"),
        os=f"{mi.get('system', '')} {mi.get('release', '')}".strip() or "unknown",
        cpu=str(cpu.get("brand_raw") or mi.get("processor") or mi.get("machine") or "unknown"),
        cpu_count=int(cpu.get("count") or 1),
        accelerator="cpu",
    )
    return m.with_fingerprint()


def _software(mi: Mapping[str, Any], env: Mapping[str, Any]) -> Software:
    if isinstance(env.get("software"), dict):
        return Software(**_fields(Software, env["software"]))
    return Software(python=str(mi.get("python_version") or "unknown"))


def _container(env: Mapping[str, Any]) -> Container | None:
    if isinstance(env.get("container"), dict):
        return Container(**_fields(Container, env["container"]))
    ev = _obj(env.get("env_vars"))
    if ev.get("TORCHRIG_IMAGE_ID") or ev.get("TORCHRIG_IMAGE_DIGEST") or ev.get("TORCHRIG_IMAGE"):
        return Container(image=ev.get("TORCHRIG_IMAGE"), image_id=ev.get("TORCHRIG_IMAGE_ID"),
                         image_digest=ev.get("TORCHRIG_IMAGE_DIGEST"))
    return None


def _created(data: Mapping[str, Any]) -> str | None:
    try:
        t = _dt.datetime.fromisoformat(str(data["datetime"]))
    except (KeyError, ValueError):
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.timezone.utc)
    return t.astimezone(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _metrics(raw: Any, warnings: list[str]) -> dict[str, Metric]:
    out: dict[str, Metric] = {}
    for name, m in (raw or {}).items():
        value = _num(m.get("value")) if isinstance(m, dict) else None
        if value is None:
            warnings.append(f"metric {name!r} has no finite value; left out")
            continue
        out[name] = Metric(value=value, unit=str(m.get("unit", "")), higher_is_better=bool(m.get("higher_is_better",
                           True)), repeats=int(m.get("repeats") or 1), stddev=_num(m.get("stddev")))
    return out


def _stats_summary(stats: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("min", "max", "mean", "stddev", "median", "iqr", "rounds", "iterations", "total")
    return {k: stats.get(k) for k in keys if k in stats}


def _record(b: Mapping[str, Any], data: Mapping[str, Any], env: Mapping[str, Any], *, source: str | None,
            session: str) -> Record:
    mi = data.get("machine_info") or {}
    e = b.get("extra_info") or {}
    stats = b.get("stats") or {}
    warnings: list[str] = [str(w) for w in e.get("warnings") or []]
    ours = bool(e.get("torchrig_bench"))
    machine = _machine(mi, env)
    if not env:
        warnings.append("no torchrig environment fingerprint in machine_info (not run through bench/conftest.py)")
    if ours:
        metrics = _metrics(e.get("metrics"), warnings)
    else:
        mean, sd = _num(stats.get("mean")), _num(stats.get("stddev"))
        metrics = {} if mean is None else {
            "time_s": Metric(value=mean, unit="s", higher_is_better=False, repeats=int(stats.get("rounds") or 1),
                             stddev=sd)}

    gates: list[Gate] = []
    if "timer_flagged_rounds" in metrics:
        gates.append(Gate.check("timer_flagged_rounds", "<=", 0, metrics["timer_flagged_rounds"].value))
    timing = e.get("timing") or {}
    check = timing.get("self_check") or {}
    if check and not check.get("ok", True):
        warnings.append(f"timer self-check: {check.get('message')}")
    if machine.accelerator in _GPU and "cv_pct" in metrics:
        gates.append(Gate.check("cv_pct", "<=", CV_GATE_PCT, metrics["cv_pct"].value))
    loss = e.get("loss") or {}
    if "last" in loss and _num(loss.get("last")) is None:
        warnings.append(f"training loss is not finite: {loss.get('last')}")
    diverged = "last" in loss and _num(loss["last"]) is None
    verdict: Verdict = "pass" if all(g.passed for g in gates) and not diverged else "fail"

    config: dict[str, Any] = {
        "bench": e.get("bench"),
        "case": e.get("case"),
        "workload": e.get("workload"),
        "flags": e.get("flags"),
        "timing": timing or None,
        "loss": loss or None,
        "ceiling": e.get("ceiling"),
        "ceiling_key": e.get("ceiling_key"),
        "mfu_ceiling": e.get("mfu_ceiling"),
        "spec_peak": e.get("spec_peak"),
        "ddp": e.get("ddp"),
        "environment": {k: env.get(k) for k in ("device", "gpu", "smi", "dnn_library", "flags_at_start", "suite",
                                                   "rocm_env",
                                                   "torch_threads", "cuda_visible_devices", "hip_visible_devices")
                        if k in env},
        "pytest_benchmark": {
            "name": b.get("name"), "fullname": b.get("fullname"), "group": b.get("group"), "param": b.get("param"),
            "stats": _stats_summary(stats), "version": data.get("version"), "datetime": data.get("datetime"),
            "source": source, "session": session,
        },
    }
    name = str(e.get("name") or b.get("name") or "unnamed")
    wall = _num(e.get("wall_time_s")) or _num(stats.get("total")) or 0.0
    kw: dict[str, Any] = {}
    created = _created(data)
    if created:
        kw["created"] = created
    return Record(
        kind="bench",
        name=name,
        env_id=env.get("env_id") if isinstance(env.get("env_id"), str) else None,
        machine=machine,
        software=_software(mi, env),
        verdict=verdict,
        wall_time_s=wall,
        metrics=metrics,
        gates=tuple(gates),
        config={k: v for k, v in config.items() if v is not None},
        warnings=tuple(warnings),
        container=_container(env),
        load=_load(data),
        **kw,
    )


def _load(data: Mapping[str, Any]) -> dict[str, Any] | None:
    """The session's machine load (bench/load.py, ``torchrig_load``) where it is a well-formed object."""
    load = data.get("torchrig_load")
    if isinstance(load, dict) and isinstance(load.get("busy"), bool) and isinstance(load.get("reasons"), list) \
            and all(isinstance(r, str) for r in load["reasons"]):
        return load
    return None


def _warn(message: str) -> None:
    print(f"benchconv: warning: {message}", file=sys.stderr)


def records_from_json(data: dict[str, Any], *, source: str | None = None,
                      warn: Callable[[str], None] = _warn) -> list[Record]:
    """One record per benchmark in a loaded pytest-benchmark JSON; an entry that cannot be one is skipped, and
    ``warn`` is told which and why (a hand-edited or truncated file converts what it can)."""
    where = source or "benchmark JSON"
    raw = data.get("benchmarks")
    benchmarks = [b for b in raw if isinstance(b, dict)] if isinstance(raw, list) else []
    if isinstance(raw, list) and len(benchmarks) < len(raw):
        warn(f"{where}: {len(raw) - len(benchmarks)} entr(y/ies) of 'benchmarks' are not objects; skipped")
    try:
        add_utilisation(benchmarks)
    except (TypeError, ValueError, AttributeError, ZeroDivisionError, OverflowError) as e:
        warn(f"{where}: utilisation (mfu_pct) not added: {type(e).__name__}: {e}")
    mi = _obj(data.get("machine_info"))
    env = _obj(mi.get("torchrig"))
    session = new_run_id()
    out: list[Record] = []
    for i, b in enumerate(benchmarks):
        try:
            rec = _record(b, {**data, "machine_info": mi}, env, source=source, session=session)
            problems = validate_record(rec.to_dict())
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as e:
            problems = [f"{type(e).__name__}: {e}"]
        if problems:
            name = str(b["name"]) if isinstance(b.get("name"), str) else f"#{i}"
            warn(f"{where}: benchmark {name[:100]!r} skipped, not convertible: {'; '.join(problems)[:300]}")
            continue
        out.append(rec)
    out += _skipped_records(data, mi, env, where=where, warn=warn)
    return out


def _skipped_records(data: Mapping[str, Any], mi: Mapping[str, Any], env: Mapping[str, Any], *, where: str,
                     warn: Callable[[str], None]) -> list[Record]:
    """The benchmarks the suite skipped (``torchrig_skipped``, written by bench/skips.py): one ``skip`` record
    each, with the reason, so the report shows them instead of leaving them out."""
    raw = data.get("torchrig_skipped")
    if raw is None:
        return []
    if not isinstance(raw, list):
        warn(f"{where}: 'torchrig_skipped' is not a list; ignored")
        return []
    out: list[Record] = []
    machine, software, container = _machine(mi, env), _software(mi, env), _container(env)
    for entry in raw:
        name, reason = (entry.get("name"), entry.get("reason")) if isinstance(entry, dict) else (None, None)
        if not isinstance(name, str) or not name or not isinstance(reason, str):
            warn(f"{where}: a 'torchrig_skipped' entry without a name and reason; ignored")
            continue
        kw: dict[str, Any] = {}
        created = _created(data)
        if created:
            kw["created"] = created
        out.append(Record(kind="bench", name=name[:200], env_id=env.get("env_id") if isinstance(
            env.get("env_id"), str) else None, machine=machine, software=software, verdict="skip", wall_time_s=0.0,
            config={"skip_reason": reason[:2000], "pytest_benchmark": {"nodeid": str(entry.get("nodeid", ""))}},
            warnings=(f"skipped: {reason[:2000]}",), container=container, load=_load(data), **kw))
    return out


def convert(paths: Iterable[str | Path], results_dir: str | Path, *,
            warn: Callable[[str], None] = _warn) -> list[Path]:
    """Convert every file in ``paths``; write the records under ``results_dir``; return the written paths.

    A file that is not pytest-benchmark JSON is a ConfigurationError (nothing written); a benchmark in it that
    cannot become a record is skipped with a warning."""
    written: list[Path] = []
    for p in paths:
        data = load_bench_json(p)
        for rec in records_from_json(data, source=str(p), warn=warn):
            written.append(write_record(rec, results_dir))
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m torchrig.results.benchconv",
                                 description="Convert pytest-benchmark JSON into torchrig result records.")
    ap.add_argument("json", nargs="+", type=Path, help="pytest-benchmark --benchmark-json output file(s)")
    ap.add_argument("--results", type=Path, required=True, help="results directory (records go to DIR/bench/)")
    args = ap.parse_args(argv)
    try:
        written = convert(args.json, args.results)
    except FatalError as e:
        print(f"benchconv: {e}", file=sys.stderr)
        return e.return_code
    for path in written:
        print(path)
    print(f"benchconv: {len(written)} record(s) written under {args.results / 'bench'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
