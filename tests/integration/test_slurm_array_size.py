"""The cluster's MaxArraySize from a real slurmctld (tests/integration/slurm_local.sh keeps Slurm's default, 1001):
a fleet one node larger is exit 2 before sbatch, and the real sbatch agrees that it is too large."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from torchrig.__main__ import main
from torchrig.fleet import slurm

pytestmark = [pytest.mark.slurm]
ROOT = Path(__file__).resolve().parents[2]


def _jobs() -> list[str]:
    return subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True,
                          timeout=30).stdout.split()


def test_the_real_clusters_setting_is_read_and_enforced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scontrol = shutil.which("scontrol")
    assert scontrol
    limit = slurm.cluster_max_array_size(scontrol)
    shown = subprocess.run([scontrol, "show", "config"], capture_output=True, text=True, check=True, timeout=30)
    assert limit is not None and f"MaxArraySize            = {limit}" in shown.stdout
    before = _jobs()
    rc = main(["--matrix", str(ROOT / "matrix.yaml"), "submit", "cpu", "--to", "slurm", "--nodes", str(limit + 1),
               "--results", str(tmp_path / "shared")])
    err = capsys.readouterr().err
    assert rc == 2 and f"MaxArraySize = {limit:,}" in err, err
    assert _jobs() == before and not (tmp_path / "shared").exists()
    # sbatch itself refuses the same array (so the check says what the cluster would)
    refused = subprocess.run(["sbatch", "--hold", f"--array=0-{limit}", "--wrap", "true"], capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode != 0 and _jobs() == before, refused.stdout
