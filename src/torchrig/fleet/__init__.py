"""Beyond one machine: run an environment's suites on every node of a Slurm or Kubernetes cluster, and collect.

* :mod:`~torchrig.fleet.plan` -- :class:`FleetPlan`: what every node runs (scheduler-neutral).
* :mod:`~torchrig.fleet.runtimes` -- how a Slurm node starts the container: docker, podman, pyxis, apptainer.
* :mod:`~torchrig.fleet.slurm` -- the sbatch script (a job array), submission, ``sacct``/``scontrol`` states.
* :mod:`~torchrig.fleet.kubernetes` -- the Indexed Job manifest, applying it, its pods' states.
* :mod:`~torchrig.fleet.collect` -- per node: state, exit code, elapsed, records, why it failed; ``fleet.json``.

Every node publishes ``RESULTS/<job>/<index>-<host>/`` (records, ``node.log``, ``exit.json``) in one rename, so
``torchrig report RESULTS/<job>`` reads a fleet like any other results folder.
"""

from __future__ import annotations

from torchrig.fleet import kubernetes, slurm
from torchrig.fleet.collect import (
    FLEET_FILE,
    JOB_FILE,
    NODE_FILE,
    NodeReport,
    gather,
    read_job_file,
    render,
    wait,
    write_fleet_file,
    write_job_file,
)
from torchrig.fleet.kubernetes import FLEET_MOUNT, KubernetesOptions, job_manifest
from torchrig.fleet.plan import INDEX_PLACEHOLDER, RUNTIMES, SCHEDULERS, SUITES, FleetPlan
from torchrig.fleet.slurm import SlurmOptions, render_sbatch
from torchrig.fleet.state import ElementState

__all__ = [
    "FLEET_FILE",
    "FLEET_MOUNT",
    "INDEX_PLACEHOLDER",
    "JOB_FILE",
    "NODE_FILE",
    "RUNTIMES",
    "SCHEDULERS",
    "SUITES",
    "ElementState",
    "FleetPlan",
    "KubernetesOptions",
    "NodeReport",
    "SlurmOptions",
    "gather",
    "job_manifest",
    "kubernetes",
    "read_job_file",
    "render",
    "render_sbatch",
    "slurm",
    "wait",
    "write_fleet_file",
    "write_job_file",
]
