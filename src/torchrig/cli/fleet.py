"""``torchrig submit ENV --to slurm|kubernetes`` and ``torchrig fleet status|collect JOB``: argparse only.

The work lives in :mod:`torchrig.fleet` (plan, Slurm script, Kubernetes manifest, collection).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

from torchrig.cli import types
from torchrig.cli.context import settings as resolve_settings
from torchrig.container import IMAGE_GID, IMAGE_UID, SHM_SIZE, parse_user_env
from torchrig.errors import UsageError
from torchrig.fleet import (
    FLEET_MOUNT,
    INDEX_PLACEHOLDER,
    JOB_FILE,
    RUNTIMES,
    SCHEDULERS,
    SUITES,
    FleetPlan,
    KubernetesOptions,
    SlurmOptions,
    gather,
    job_manifest,
    kubernetes,
    read_job_file,
    render,
    render_sbatch,
    slurm,
    wait,
    write_fleet_file,
    write_job_file,
)
from torchrig.fleet.plan import MAX_NODES
from torchrig.fleet.state import ElementState
from torchrig.matrix import TARGETS, load_matrix
from torchrig.results.schema import utc_now

__all__ = ["register"]


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the pod's script) as literal blocks, so the YAML reads like the script it carries."""


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|" if "\n" in data else None)


_Dumper.add_representer(str, _str)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    opts = _submit_options()
    p = sub.add_parser(
        "submit", parents=[opts], help="run an environment's suites on every node of a Slurm or Kubernetes cluster",
        description="Submit ENV's tasks and/or benchmarks as one job with an element per node: a Slurm job array "
                    "(sbatch) or a Kubernetes Indexed Job. Each node's records land in RESULTS/<job>/<index>-<host>/;"
                    " follow the job with `torchrig fleet collect JOB`. Arguments after `--` go to the suite's "
                    f"command; {INDEX_PLACEHOLDER} in them becomes the node's index.")
    p.add_argument("env", help="environment id from matrix.yaml")
    p.add_argument("rest", nargs=argparse.REMAINDER, metavar="[OPTIONS] [-- ARGS]",
                   help="options above, then `--` and arguments for the suite's command")
    p.set_defaults(func=_submit, options_parser=opts)

    fleet = sub.add_parser("fleet", help="follow a fleet job: per-node state, exit code, records, failures")
    fsub = fleet.add_subparsers(dest="fleet_command", metavar="ACTION", required=True)
    for name, what in (("status", "show the job's nodes now"),
                       ("collect", "wait for the job to end, then show its nodes and write fleet.json")):
        q = fsub.add_parser(name, help=what, description=f"{what[0].upper()}{what[1:]}. Exits 1 when a node failed "
                            "(the records of the nodes that succeeded are kept).")
        q.add_argument("job", help="the job id `torchrig submit` printed (Kubernetes: the Job's name)")
        q.add_argument("--results", metavar="DIR", default=None,
                       help="the --results folder the job was submitted with (default: $TORCHRIG_RESULTS/fleet)")
        q.add_argument("--on", choices=SCHEDULERS, default=None,
                       help="the scheduler (default: as job.json says, else slurm)")
        q.add_argument("--namespace", default="default", help="Kubernetes namespace of the Job")
        if name == "collect":
            q.add_argument("--interval", type=types.positive_seconds, default=10.0, metavar="SECONDS",
                           help="poll every (default 10)")
            q.add_argument("--timeout", type=types.non_negative_seconds, default=0, metavar="SECONDS",
                           help="stop waiting after this long (default 0: until the job ends)")
        q.set_defaults(func=_status if name == "status" else _collect)


def _submit_options() -> argparse.ArgumentParser:
    opts = argparse.ArgumentParser(add_help=False)
    g = opts.add_argument_group("what runs")
    g.add_argument("--to", choices=SCHEDULERS, default="slurm", help="the scheduler (default slurm)")
    g.add_argument("--dry-run", action="store_true", help="print the sbatch script / Job YAML instead of submitting")
    g.add_argument("--nodes", type=types.positive_int, default=1, metavar="N", help="one element per node (default 1)")
    g.add_argument("--suite", choices=SUITES, default="tasks", help="tasks, bench or both (default tasks)")
    g.add_argument("--results", metavar="DIR", default=None,
                   help="Slurm: a folder on shared storage for RESULTS/<job>/ (default: $TORCHRIG_RESULTS/fleet)")
    g.add_argument("--data", metavar="DIR", default=None,
                   help="shared data folder holding CIFAR-10 (default: each node writes the synthetic stand-in)")
    g.add_argument("--quick", action="store_true", help="the short budget (CI, CPU)")
    g.add_argument("--timeout", type=types.non_negative_seconds, default=0, metavar="SECONDS",
                   help="stop each suite after this long (default 0: the scheduler's time limit only)")
    g.add_argument("--network", default="none", help="docker/podman network (default none: offline)")
    g.add_argument("--target", choices=TARGETS, default="runtime", help="which image of the environment")
    g.add_argument("--image", metavar="REF", default=None,
                   help="run this image (default: the environment's immutable tag, pulled by the nodes)")
    g.add_argument("--no-gpu", action="store_true", help="run a GPU image without its GPU")
    g.add_argument("--shm-size", default=SHM_SIZE, type=types.docker_size, help=f"/dev/shm size (default {SHM_SIZE})")
    g.add_argument("--ipc-host", action="store_true", help="share the host's IPC namespace")
    g.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", dest="user_env",
                   help="set a variable in every node's container, repeatable (e.g. NCCL_DEBUG=INFO)")
    s = opts.add_argument_group("slurm")
    s.add_argument("--runtime", choices=RUNTIMES, default="docker", help="container runtime on the nodes")
    s.add_argument("--partition", default=None)
    s.add_argument("--time", default=None, help="time limit per element, e.g. 1:00:00")
    s.add_argument("--account", default=None)
    s.add_argument("--exclusive", action="store_true", help="whole nodes (elements then never share one)")
    s.add_argument("--gpus-per-node", type=types.positive_int, default=None, metavar="G",
                   help="GPUs per node (Kubernetes: the GPU limit, default 1)")
    s.add_argument("--gres", default=None, help="generic resources instead of --gpus-per-node, e.g. gpu:a100:8")
    k = opts.add_argument_group("kubernetes")
    k.add_argument("--pvc", default=None, help="PersistentVolumeClaim (ReadWriteMany) the pods write records to")
    k.add_argument("--namespace", default="default")
    k.add_argument("--name", default=None, help="the Job's name (default torchrig-ENV-SUITE-<random>)")
    k.add_argument("--queue", default=None, help="Kueue LocalQueue (label kueue.x-k8s.io/queue-name)")
    k.add_argument("--gpu-product", default=None,
                   help="nodeSelector on nvidia.com/gpu.product, e.g. NVIDIA-H100-80GB-HBM3")
    k.add_argument("--uid", type=types.uid, default=IMAGE_UID, help=f"the image's non-root UID (default {IMAGE_UID})")
    k.add_argument("--gid", type=types.uid, default=IMAGE_GID, help=f"its GID (default {IMAGE_GID})")
    k.add_argument("--cpu", default=None, metavar="QTY",
                   help="CPU request = limit per pod, a Kubernetes quantity (4, 500m; default 4 per GPU)")
    k.add_argument("--memory", default=None, metavar="QTY",
                   help="memory request = limit per pod (64Gi; default 16Gi per GPU plus --shm-size, which the "
                        "memory-backed /dev/shm takes from it)")
    k.add_argument("--output", metavar="FILE", default=None, help="with --dry-run: write the YAML here")
    k.add_argument("--pin-image", action="store_true",
                   help="run the image by digest (REPO@sha256:...), asked of the registry through the local Docker "
                        "engine; an --image that names a digest is used as it is")
    return opts


def _parse_rest(args: argparse.Namespace) -> list[str]:
    """Options after ENV, and what follows ``--`` (argparse cannot mix both after a positional; see cli/run.py)."""
    rest = list(args.rest)
    own, passthrough = (rest[:rest.index("--")], rest[rest.index("--") + 1:]) if "--" in rest else (rest, [])
    _, unknown = args.options_parser.parse_known_args(own, namespace=args)
    if unknown:
        raise UsageError(f"unknown option(s) {' '.join(unknown)} for `submit {args.env}`; arguments for the suite "
                         f"go after `--`: torchrig submit {args.env} [OPTIONS] -- {' '.join(unknown)}")
    if "--dry-run" in passthrough:  # the suites have no such option: it was meant for submit, which must not submit
        raise UsageError(f"--dry-run after `--` would go to the suite and the job would be submitted: put it "
                         f"before `--`: torchrig submit {args.env} --dry-run [OPTIONS] -- ...")
    return passthrough


def _results_root(args: argparse.Namespace) -> Path:
    if args.results:
        return Path(args.results).expanduser().resolve()
    return resolve_settings(args).results_dir.resolve() / "fleet"




def check_nodes(to: str, nodes: int) -> None:
    limit = MAX_NODES[to]
    if nodes > limit:
        hint = (" (and most clusters keep MaxArraySize at its default 1001: `scontrol show config | grep "
                "MaxArraySize` says)" if to == "slurm" else "")
        raise UsageError(f"--nodes {nodes:,} is more than {to} accepts in one job ({limit:,}){hint}: split the "
                         "fleet into several submissions")


def _submit(args: argparse.Namespace) -> int:
    passthrough = _parse_rest(args)  # the options after ENV land in args here
    check_nodes(args.to, args.nodes)
    matrix = load_matrix(args.matrix)
    env = matrix.get(args.env)
    image = args.image or env.tags(args.target).immutable
    if args.pin_image:
        if args.to != "kubernetes":
            raise UsageError("--pin-image is a Kubernetes option; on Slurm give --image REPO@sha256:... yourself")
        image = kubernetes.image_by_digest(image)
    results = Path(FLEET_MOUNT) if args.to == "kubernetes" else _results_root(args)
    plan = FleetPlan.with_placeholders(
        passthrough, env=env, image=image, suite=args.suite, nodes=args.nodes, results=results,
        data=Path(args.data).expanduser().resolve() if args.data else None, quick=args.quick,
        timeout_s=args.timeout or None, network=args.network, use_gpu=not args.no_gpu, shm_size=args.shm_size,
        ipc_host=args.ipc_host, user_env=parse_user_env(args.user_env))
    if args.to == "kubernetes":
        return _submit_kubernetes(args, plan)
    plan.check_data()
    opts = SlurmOptions(runtime=args.runtime, partition=args.partition, time=args.time, account=args.account,
                        exclusive=args.exclusive, gpus_per_node=args.gpus_per_node, gres=args.gres)
    script = render_sbatch(plan, opts)
    if args.dry_run:
        sys.stdout.write(script)
        return 0
    info: dict[str, Any] = {
        "scheduler": "slurm", "env": env.id, "image": image, "suite": plan.suite, "nodes": plan.nodes,
        "runtime": opts.runtime, "submitted": utc_now(), "argv": ["torchrig", "submit", env.id, *args.rest]}

    def describe(job: str, folder: Path) -> None:
        (folder / "job.sbatch").write_text(script, encoding="utf-8")
        write_job_file(folder, {**info, "job": job})

    job = slurm.submit(script, results, describe, nodes=plan.nodes)
    print(f"torchrig: submitted job {job}: {plan.suite} of {env.id} on {plan.nodes} node(s) through {opts.runtime}; "
          f"records in {results / job}")
    print(f"torchrig: follow it with: torchrig fleet collect {job} --results {shlex.quote(str(results))}")
    return 0


def _submit_kubernetes(args: argparse.Namespace, plan: FleetPlan) -> int:
    if not args.pvc:
        raise UsageError("--to kubernetes needs --pvc NAME: the PersistentVolumeClaim (ReadWriteMany) every pod "
                         "writes its records to")
    if args.gres or args.partition or args.account or args.time or args.exclusive or args.runtime != "docker":
        raise UsageError("--runtime, --partition, --account, --time, --exclusive and --gres are Slurm options; "
                         "with --to kubernetes use --gpus-per-node, --gpu-product, --queue, --pvc")
    if args.data:
        raise UsageError("--data is a Slurm option (a shared folder); the pods write the synthetic CIFAR-10 stand-in")
    opts = KubernetesOptions(pvc=args.pvc, namespace=args.namespace, name=args.name, queue=args.queue,
                             gpu_product=args.gpu_product, gpus_per_node=args.gpus_per_node or 1, uid=args.uid,
                             gid=args.gid, cpu=args.cpu, memory=args.memory)
    manifest = job_manifest(plan, opts)
    text = yaml.dump(manifest, Dumper=_Dumper, sort_keys=False, width=1000)
    if args.dry_run:
        if args.output:
            Path(args.output).write_text(text, encoding="utf-8")
            print(f"torchrig: wrote {args.output}; apply it with: kubectl apply -f {shlex.quote(args.output)}",
                  file=sys.stderr)
        else:
            sys.stdout.write(text)
        return 0
    name = kubernetes.apply(manifest)
    print(f"torchrig: created Job {name} in {opts.namespace}: {plan.suite} of {plan.env.id} on {plan.nodes} "
          f"node(s); records on PVC {opts.pvc} under {name}/")
    print(f"torchrig: follow it with: torchrig fleet collect {name} --on kubernetes --namespace {opts.namespace}")
    return 0


# ---------------------------------------------------------------------------------------------- following


def _job_info(args: argparse.Namespace) -> tuple[Path, dict[str, Any], str]:
    job_dir = _results_root(args) / args.job
    if (job_dir / JOB_FILE).is_file():
        info = read_job_file(job_dir)
    elif args.on == "kubernetes":
        info = {"scheduler": "kubernetes"}  # the PVC is not mounted here: states only
    else:
        info = read_job_file(job_dir)  # raises with what to pass
    return job_dir, info, args.on or str(info.get("scheduler", "slurm"))


def _poll(scheduler: str, job: str, namespace: str) -> list[ElementState]:
    return kubernetes.query(job, namespace) if scheduler == "kubernetes" else slurm.query(job)


def _show(args: argparse.Namespace, job_dir: Path, info: dict[str, Any], states: list[ElementState],
          *, write: bool) -> int:
    nodes = int(info.get("nodes") or len(states))
    if not states:
        print(f"torchrig: the scheduler does not know job {args.job} (any more): showing what its nodes left",
              file=sys.stderr)
    reports = gather(job_dir, states, nodes)
    for line in render(args.job, info, reports, job_dir):
        print(line)
    if write and job_dir.is_dir():
        path = write_fleet_file(job_dir, args.job, info, reports)
        print(f"torchrig: wrote {path}")
    if any(r.failed for r in reports):
        return 1
    return 0


def _status(args: argparse.Namespace) -> int:
    job_dir, info, scheduler = _job_info(args)
    return _show(args, job_dir, info, _poll(scheduler, args.job, args.namespace), write=False)


def _collect(args: argparse.Namespace) -> int:
    job_dir, info, scheduler = _job_info(args)
    nodes = int(info.get("nodes") or 1)
    states = wait(lambda: _poll(scheduler, args.job, args.namespace), nodes=nodes, interval_s=args.interval,
                  timeout_s=args.timeout or None, log=lambda line: print(line, file=sys.stderr, flush=True),
                  unknown_is_final=scheduler == "slurm")
    rc = _show(args, job_dir, info, states, write=all(s.done for s in states))
    if not all(s.done for s in states):
        return 1
    return rc

