"""The BERT task's ``--data`` file goes through the reading layer: a FIFO, a device, a file over the cap or bytes
that are not UTF-8 end as a UsageError naming the file -- never a hang, a traceback or a read without bound."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tasks._common import UsageError
from tasks.sentiment_data import read_data_file


def _refused(path: Path) -> str:
    box: dict[str, BaseException] = {}

    def run() -> None:
        try:
            read_data_file(path)
        except BaseException as e:  # noqa: BLE001 - the thread hands whatever happened back
            box["e"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), f"reading {path} hangs"
    assert isinstance(box.get("e"), UsageError), box
    return str(box["e"])


def test_a_fifo_is_named_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "data.csv"
    os.mkfifo(fifo)
    assert "FIFO" in _refused(fifo)


def test_a_device_and_an_oversized_file_are_refused(tmp_path: Path) -> None:
    assert "/dev/zero" in _refused(Path("/dev/zero"))
    big = tmp_path / "big.csv"
    with big.open("wb") as f:
        f.truncate(65 << 20)  # sparse: over the 64 MiB cap for a task's data file, no disk used
    assert "big.csv" in _refused(big)


@given(st.binary(min_size=1, max_size=300))
def test_any_bytes_are_read_or_refused_with_the_file_named(tmp_path_factory: pytest.TempPathFactory,
                                                           data: bytes) -> None:
    path = tmp_path_factory.mktemp("d") / "data.csv"
    path.write_bytes(data)
    try:
        read_data_file(path)
    except UsageError as e:
        assert "data.csv" in str(e)
