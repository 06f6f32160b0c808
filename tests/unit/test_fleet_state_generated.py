"""A fleet job's folder as users' shared storage leaves it (issue 17, class 2: fleet job state): generated and
mutated ``job.json``, ``exit.json``, node folder names and ``node.log`` bytes, through ``torchrig fleet status`` and
``fleet collect`` with the scheduler's answer generated too.

Properties: exit 0 or 1 (a node failed) or 2 naming ``job.json`` when the job description is unusable -- never a
traceback; memory and time bounded whatever ``nodes`` says; the node folders and logs are never modified.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torchrig.__main__ import main
from torchrig.cli import fleet as fleet_cli
from torchrig.fleet import ElementState, write_job_file

from .test_records_fuzz import _mutate, json_values

GOOD_JOB = {"scheduler": "slurm", "job": "42", "env": "cpu", "suite": "tasks", "nodes": 3, "runtime": "docker",
            "image": "img", "submitted": "2026-12-07T10:00:00Z", "argv": ["torchrig", "submit", "cpu"]}
GOOD_EXIT = {"schema": "torchrig.fleet-node", "version": 1, "index": 0, "host": "n0", "exit_code": 0, "why": "",
             "elapsed_s": 61}
_folder_names = st.one_of(
    st.sampled_from(["0-n0", "1-n1", "2-n2-r1", "2-n2-r2", "²-n", "٣-n", "-n", "x-n", "00-n", "9" * 200 + "-n",
                     ".0-n.tmp", "0"]),
    st.text(st.characters(blacklist_characters="/\x00", blacklist_categories=["Cs"]), min_size=1, max_size=40))
_states = st.sampled_from(["COMPLETED", "FAILED", "RUNNING", "PENDING", "OUT_OF_MEMORY", "TIMEOUT", "NODE_FAIL"])
_elements = st.lists(st.builds(ElementState, index=st.integers(0, 6), state=_states,
                               exit_code=st.none() | st.integers(-1, 255), signal=st.none() | st.integers(0, 64),
                               elapsed_s=st.none() | st.floats(0, 1e9), node=st.none() | st.text(max_size=8)),
                     max_size=6)
_SETTINGS = settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
                     max_examples=80)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and p.name != "fleet.json"}


@_SETTINGS
@given(data=st.data())
def test_any_job_folder_is_shown_or_refused_naming_job_json(tmp_path_factory: pytest.TempPathFactory,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            data: st.DataObject) -> None:
    results = tmp_path_factory.mktemp("results")
    job_dir = results / "42"
    job_dir.mkdir()
    job = data.draw(st.sampled_from(["good", "mutated", "nodes"]))
    info = dict(GOOD_JOB)
    if job == "mutated":
        info = _mutate(GOOD_JOB, data)
    elif job == "nodes":
        info["nodes"] = data.draw(json_values | st.integers() | st.sampled_from([10**12, 10**400, -1, 0, 2.5, True]))
    write_job_file(job_dir, info)
    for name in data.draw(st.lists(_folder_names, max_size=5, unique=True)):
        folder = job_dir / name
        with contextlib.suppress(OSError):  # a name the file system refuses (too long) is not a case
            folder.mkdir()
            exit_doc = data.draw(st.sampled_from(["good", "mutated", "bytes"]))
            exit_bytes = (json.dumps(GOOD_EXIT).encode() if exit_doc == "good" else
                          json.dumps(_mutate(GOOD_EXIT, data)).encode() if exit_doc == "mutated" else
                          data.draw(st.binary(max_size=200)))
            (folder / "exit.json").write_bytes(exit_bytes)
            (folder / "node.log").write_bytes(data.draw(st.binary(max_size=500)))
    if data.draw(st.booleans()):
        (job_dir / "slurm-1.out").write_bytes(data.draw(st.binary(max_size=300)))
    states = data.draw(_elements)
    monkeypatch.setattr(fleet_cli, "_poll", lambda *a: states)
    before = _tree(job_dir)
    command = data.draw(st.sampled_from(["status", "collect"]))
    out, err = io.StringIO(), io.StringIO()
    t0 = time.process_time()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["fleet", command, "42", "--results", str(results),
                   *(["--timeout", "0.05", "--interval", "0.01"] if command == "collect" else [])])
    assert time.process_time() - t0 < 5, "bounded whatever job.json says"
    assert rc in (0, 1, 2), err.getvalue()
    assert "Traceback" not in err.getvalue()
    if rc == 2:
        assert "job.json" in err.getvalue()
    assert _tree(job_dir) == before  # nothing the nodes left is changed (fleet.json is the only file written)


@pytest.mark.parametrize("nodes", ["3", "lots", [3], {"n": 3}, 2.5, True, 0, -1, 10**12, 10**400])
def test_a_job_json_whose_nodes_is_not_a_node_count_is_exit_2_naming_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, nodes: Any) -> None:
    job_dir = tmp_path / "42"
    job_dir.mkdir()
    write_job_file(job_dir, {**GOOD_JOB, "nodes": nodes})
    monkeypatch.setattr(fleet_cli, "_poll", lambda *a: [])
    assert main(["fleet", "status", "42", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "job.json" in err and "nodes" in err


@pytest.mark.parametrize("scheduler", ["pbs", 3, None, ["slurm"]])
def test_a_job_json_for_an_unknown_scheduler_is_exit_2_naming_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], scheduler: Any) -> None:
    job_dir = tmp_path / "42"
    job_dir.mkdir()
    write_job_file(job_dir, {**GOOD_JOB, "scheduler": scheduler})
    assert main(["fleet", "status", "42", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "job.json" in err and "scheduler" in err
