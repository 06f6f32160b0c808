"""The session's fixture records, written once by the real tasks and benchmarks (see fleet.py)."""

from __future__ import annotations

import pytest

from tests.report.fleet import Fleet, build


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    return build(tmp_path_factory.mktemp("fleet"))
