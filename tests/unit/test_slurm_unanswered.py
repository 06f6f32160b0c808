"""Slurm commands that hang, fail or answer garbage: a SchedulerError (exit 8) naming the command, never a
traceback or a wait without end; the parsers of sbatch/sacct/scontrol output are total over generated text."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torchrig.errors import SchedulerError
from torchrig.fleet import slurm
from torchrig.fleet.slurm import MAX_ARRAY_INDEX, parse_sacct, parse_sbatch, parse_scontrol, query, submit

ROOT = Path(__file__).resolve().parents[2]
HANG = '#!/bin/bash\nsleep 1000\n'  # not exec: the child keeps the pipes open after bash is killed
GOOD = {
    "sbatch": '#!/bin/bash\ncat >/dev/null; echo "4242;cluster"\n',
    "scontrol": '#!/bin/bash\nexit 0\n',
    "scancel": '#!/bin/bash\nexit 0\n',
    "sacct": '#!/bin/bash\necho "4242_0|COMPLETED|0:0|00:01:00|n1|None"\n',
}


def _bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **scripts: str) -> Path:
    bin_dir = tmp_path / "slurm-bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in {**GOOD, **scripts}.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setattr(slurm, "CALL_TIMEOUT_S", 0.5)
    return bin_dir


def _describe(job: str, folder: Path) -> None:
    (folder / "job.json").write_text("{}")


@pytest.mark.parametrize("hung", ["sbatch", "scontrol"])
def test_a_hung_submission_ends_at_the_timeout_naming_the_command(hung: str, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _bin(tmp_path, monkeypatch, **{hung: HANG})
    t0 = time.monotonic()
    with pytest.raises(SchedulerError) as e:
        submit("#!/bin/bash\n", tmp_path / "results", _describe)
    assert time.monotonic() - t0 < 10
    assert f"/{hung} " in str(e.value) and "did not answer within 0.5 s" in str(e.value)
    assert e.value.return_code == 8


@pytest.mark.parametrize("hung", ["sacct", "scontrol"])
def test_a_hung_query_ends_at_the_timeout_naming_the_command(hung: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # a hung sacct is an error, not a reason to wait on scontrol as well
    _bin(tmp_path, monkeypatch, **{"sacct": '#!/bin/bash\nexit 1\n', hung: HANG})
    t0 = time.monotonic()
    with pytest.raises(SchedulerError) as e:
        query("4242")
    assert time.monotonic() - t0 < 10 and f"/{hung} " in str(e.value) and "0.5 s" in str(e.value)


def test_submit_through_the_cli_with_a_hung_sbatch_is_exit_8(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from torchrig.__main__ import main

    _bin(tmp_path, monkeypatch, sbatch=HANG)
    rc = main(["--matrix", str(ROOT / "matrix.yaml"), "submit", "cpu", "--results", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 8 and "sbatch --parsable --hold` did not answer" in err and "Traceback" not in err


@pytest.mark.parametrize(("out", "code"), [("garbage\n", 0), ("", 0), ("²³\n", 0), ("4242\n", 1),
                                           ("\x00\xff" * 10, 0)])
def test_an_sbatch_that_answers_garbage_or_fails_is_a_scheduler_error(out: str, code: int, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "out").write_text(out, encoding="latin-1")
    _bin(tmp_path, monkeypatch, sbatch=f'#!/bin/bash\ncat >/dev/null; cat {tmp_path / "out"}; echo boom >&2; '
                                       f'exit {code}\n')
    with pytest.raises(SchedulerError) as e:
        submit("#!/bin/bash\n", tmp_path / "results", _describe)
    assert ("failed (exit 1): boom" in str(e.value)) if code else ("instead of a job id" in str(e.value))
    assert not (tmp_path / "results" / "4242").exists()


def test_garbage_from_sacct_falls_back_to_scontrol(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _bin(tmp_path, monkeypatch, sacct='#!/bin/bash\nprintf "\\xff\\xfe|||\\n"\n',
         scontrol='#!/bin/bash\necho "JobId=4242 ArrayTaskId=1 JobState=RUNNING RunTime=00:00:05"\n')
    [state] = query("4242")
    assert (state.index, state.state, state.elapsed_s) == (1, "RUNNING", 5.0)


def test_a_missing_binary_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    with pytest.raises(SchedulerError) as e:
        query("4242")
    assert "`scontrol` is not installed here (not on PATH)" in str(e.value)


# ------------------------------------------------------------------------------------- parsers, generated input

_FIELD = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["12", "12_3", "12_[0-3,5]", "12_[0-7%2]", "12_[3-900]", "12_[9-1]", "12_²", "12_3.batch",
                     "0:15", "²:1", "COMPLETED", "CANCELLED by 0", "", "None assigned", "1-02:03:04",
                     "9" * 5000 + ":00", "00:01:00.5"]),
)


@settings(max_examples=150)
@given(st.lists(st.lists(_FIELD, min_size=0, max_size=8).map("|".join), max_size=6).map("\n".join))
def test_parse_sacct_is_total_and_bounded(text: str) -> None:
    states = parse_sacct(text, "12")
    assert len(states) <= MAX_ARRAY_INDEX + 1
    assert all(0 <= s.index <= MAX_ARRAY_INDEX and s.state for s in states)


_PAIR = st.tuples(st.sampled_from(["JobId", "ArrayTaskId", "JobState", "ExitCode", "RunTime", "NodeList", "Reason",
                                   "x"]), _FIELD).map(lambda kv: f"{kv[0]}={kv[1]}")


@settings(max_examples=150)
@given(st.lists(st.lists(_PAIR, max_size=8).map(" ".join), max_size=5).map("\n".join))
def test_parse_scontrol_is_total_and_bounded(text: str) -> None:
    states = parse_scontrol(text)
    assert all(0 <= s.index <= MAX_ARRAY_INDEX for s in states)


@given(st.text(max_size=40))
def test_parse_sbatch_gives_a_number_or_a_scheduler_error(text: str) -> None:
    try:
        job = parse_sbatch(text)
    except SchedulerError as e:
        assert "instead of a job id" in str(e)
    else:
        assert job.isascii() and job.isdigit()


def test_named_cases_that_raised_before() -> None:
    """Each of these was a ValueError or an unbounded list before: '²' passes str.isdigit(), int() refuses it."""
    assert parse_sacct("12_²|FAILED|²:0|00:00:01|n|r", "12") == []
    assert [s.exit_code for s in parse_sacct("12_1|FAILED|²:0|00:00:01|n|r", "12")] == [None]
    assert len(parse_sacct("12_[0-99999999999]|PENDING|0:0|00:00:00||", "12")) == MAX_ARRAY_INDEX + 1
    assert parse_sacct(f"12_1|RUNNING|0:0|{'9' * 5000}:00|n|", "12")[0].elapsed_s is None
    with pytest.raises(SchedulerError):
        parse_sbatch("²")
    assert os.sep  # the module imports cleanly without Slurm installed
