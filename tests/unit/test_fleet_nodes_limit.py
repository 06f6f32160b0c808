"""``--nodes`` within what the target scheduler accepts in one job, refused (exit 2) before it is contacted."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from torchrig.__main__ import main
from torchrig.cli.fleet import check_nodes
from torchrig.errors import UsageError
from torchrig.fleet.plan import MAX_NODES


@given(st.sampled_from(sorted(MAX_NODES)), st.integers(min_value=1, max_value=10**12))
def test_nodes_are_refused_exactly_past_the_schedulers_limit(to: str, nodes: int) -> None:
    if nodes <= MAX_NODES[to]:
        check_nodes(to, nodes)
    else:
        with pytest.raises(UsageError, match=f"more than {to} accepts"):
            check_nodes(to, nodes)


@pytest.mark.parametrize(("to", "nodes"), [("kubernetes", "100001"), ("slurm", "4000002"), ("slurm", "0"),
                                           ("kubernetes", "-3"), ("slurm", "1e3"), ("slurm", "nan")])
def test_the_cli_refuses_them_with_exit_2_before_any_scheduler(to: str, nodes: str, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")  # no sbatch, no kubectl: nothing may be contacted
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/config")
    assert main(["submit", "cpu", "--to", to, "--nodes", nodes, "--dry-run"]) == 2
    assert "--nodes" in capsys.readouterr().err
