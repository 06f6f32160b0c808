"""The result record: one JSON schema shared by tasks, benchmarks and the report -- the public API in one import.

A record is what one task run or one benchmark produced, together with the context that makes its numbers
meaningful (machine, software, container image, configuration). Records are written atomically into a results
directory (``<results>/<kind>/<name>-<run_id>.json``): a killed run leaves no half-written file behind.

The parts live in :mod:`~torchrig.results.schema` (dataclasses, validation), :mod:`~torchrig.results.probe`
(machine, software, container) and :mod:`~torchrig.results.io` (atomic write, load). Callers import from here;
code that wants every record to name another machine patches ``records.collect_machine`` before importing tasks.
Standard library only (torch is imported lazily by the probes): this package ships into every image.
"""

from __future__ import annotations

from torchrig.results.io import LoadProblem, load_records, write_record
from torchrig.results.probe import collect_container, collect_machine, collect_software
from torchrig.results.schema import (
    SCHEMA_ID,
    SCHEMA_VERSION,
    Container,
    Gate,
    Machine,
    Metric,
    Record,
    RecordError,
    Software,
    Verdict,
    machine_fingerprint,
    new_run_id,
    record_from_dict,
    utc_now,
    validate_record,
)

__all__ = [
    "SCHEMA_ID",
    "SCHEMA_VERSION",
    "Container",
    "Gate",
    "LoadProblem",
    "Machine",
    "Metric",
    "Record",
    "RecordError",
    "Software",
    "Verdict",
    "collect_container",
    "collect_machine",
    "collect_software",
    "load_records",
    "machine_fingerprint",
    "new_run_id",
    "record_from_dict",
    "utc_now",
    "validate_record",
    "write_record",
]
