"""The sbatch script per runtime (rendered, syntax-checked, and run against a stand-in `docker`), and what sacct and
scontrol say about a job's elements, including failed, out-of-memory, timed-out and lost nodes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from torchrig.__main__ import main
from torchrig.errors import UsageError
from torchrig.fleet import FleetPlan, SlurmOptions, render_sbatch
from torchrig.fleet.runtimes import pyxis_image
from torchrig.fleet.slurm import parse_sacct, parse_scontrol
from torchrig.matrix import Matrix, load_matrix

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "ghcr.io/torchrig/torchrig:2.0.1-cpu-py3.11"


@pytest.fixture(scope="module")
def matrix() -> Matrix:
    return load_matrix(ROOT / "matrix.yaml")


def plan(matrix: Matrix, env: str = "cpu", results: Path = Path("/shared/results"), **kw: object) -> FleetPlan:
    e = matrix.get(env)
    fields: dict[str, object] = {"env": e, "image": e.tags().immutable, "results": results, "nodes": 2, **kw}
    args = fields.pop("args", ())
    return FleetPlan.with_placeholders(args, **fields)  # type: ignore[arg-type]


def bash_syntax_ok(script: str) -> None:
    proc = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# ----------------------------------------------------------------------------------------------- rendering


def test_directives_one_array_element_per_node(matrix: Matrix) -> None:
    script = render_sbatch(plan(matrix, nodes=4), SlurmOptions(partition="gpu", time="2:00:00", account="ml",
                                                               exclusive=True, gres="gpu:a100:8"))
    directives = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    assert directives == [
        "#SBATCH --job-name=torchrig-cpu", "#SBATCH --array=0-3", "#SBATCH --nodes=1", "#SBATCH --ntasks=1",
        "#SBATCH --output=/shared/results/%A/slurm-%a.out", "#SBATCH --partition=gpu", "#SBATCH --account=ml",
        "#SBATCH --time=2:00:00", "#SBATCH --exclusive", "#SBATCH --gres=gpu:a100:8"]
    assert "#SBATCH --gpus-per-node=8" in render_sbatch(plan(matrix), SlurmOptions(gpus_per_node=8))


@pytest.mark.parametrize("runtime", ["docker", "podman", "pyxis", "apptainer"])
@pytest.mark.parametrize("env", ["cpu", "cuda121", "rocm"])
def test_every_runtime_renders_valid_bash(matrix: Matrix, runtime: str, env: str) -> None:
    script = render_sbatch(plan(matrix, env, suite="both"), SlurmOptions(runtime=runtime))  # type: ignore[arg-type]
    bash_syntax_ok(script)
    assert "python -m tasks --results /results" in script and "python -m bench --results /results" in script


def test_docker_uses_the_run_tasks_options(matrix: Matrix) -> None:
    script = render_sbatch(plan(matrix, quick=True, args=["--only", "smoke", "--seed", "{index}"]), SlurmOptions())
    run = next(line for line in script.splitlines() if line.startswith("in_node docker run"))
    assert '--user="${uid}":"${gid}"' in run  # the job's user, decided on the node
    assert '--mount=type=bind,source="${work}",target=/results' in run
    assert "--shm-size=8g" in run and "--network=none" in run and "--init" in run
    assert '--env=TORCHRIG_HOSTNAME="${host}"' in run and '--env=TORCHRIG_IMAGE_ID="${image_id}"' in run
    assert "--env=NVIDIA_VISIBLE_DEVICES=void" in run  # cpu: no GPU even on an nvidia-default host
    assert run.endswith(f'{IMAGE} python -m tasks --results /results --quick --synthetic-cifar --only smoke --seed '
                        '"${index}"')


def test_cuda_gets_only_the_allocated_gpus(matrix: Matrix) -> None:
    docker = render_sbatch(plan(matrix, "cuda121"), SlurmOptions(gpus_per_node=2))
    assert '--gpus="${docker_gpus}"' in docker and "SLURM_JOB_GPUS" in docker
    podman = render_sbatch(plan(matrix, "cuda121"), SlurmOptions(runtime="podman"))
    assert "--device=nvidia.com/gpu=all" in podman and "--gpus" not in podman
    no_gpu = render_sbatch(plan(matrix, "cuda121", use_gpu=False), SlurmOptions())
    assert "--gpus" not in no_gpu and "NVIDIA_VISIBLE_DEVICES=void" in no_gpu


def test_rocm_devices_and_render_group(matrix: Matrix) -> None:
    script = render_sbatch(plan(matrix, "rocm"), SlurmOptions())
    assert "--device=/dev/kfd" in script and "--device=/dev/dri" in script
    assert '--group-add="${render_gid}"' in script and "getent group render" in script
    assert "--env=ROCR_VISIBLE_DEVICES" in script


def test_pyxis(matrix: Matrix) -> None:
    script = render_sbatch(plan(matrix, "cuda121"), SlurmOptions(runtime="pyxis"))
    srun = next(line for line in script.splitlines() if line.startswith("in_node srun"))
    assert "--container-image=ghcr.io#torchrig/torchrig:2.1.0-cu121-py3.10" in srun
    assert '--container-mounts="${work}":/results,"${data}":/data' in srun
    names = srun.split("--container-env=", 1)[1].split(" ", 1)[0].split(",")
    assert {"TORCHRIG_ENV_ID", "TORCHRIG_IMAGE", "TORCHRIG_HOSTNAME", "HOME"} <= set(names)
    assert 'export TORCHRIG_HOSTNAME="${host}"' in script
    assert pyxis_image("torchrig:cpu") == "torchrig:cpu"
    assert pyxis_image("localhost:5000/torchrig:cpu") == "localhost:5000#torchrig:cpu"
    assert pyxis_image("/shared/torchrig.sqsh") == "/shared/torchrig.sqsh"


def test_apptainer(matrix: Matrix) -> None:
    cuda = render_sbatch(plan(matrix, "cuda121"), SlurmOptions(runtime="apptainer"))
    line = next(x for x in cuda.splitlines() if x.startswith("in_node apptainer"))
    assert " --nv " in line and "docker://ghcr.io/torchrig/torchrig:2.1.0-cu121-py3.10 python -m tasks" in line
    assert '--bind "${work}":/results,"${data}":/data' in line and "--cleanenv" in line
    rocm = render_sbatch(plan(matrix, "rocm", image="/shared/rocm.sif"), SlurmOptions(runtime="apptainer"))
    assert " --rocm " in rocm and " /shared/rocm.sif python" in rocm
    cpu = render_sbatch(plan(matrix), SlurmOptions(runtime="apptainer"))
    assert " --nv" not in cpu and " --rocm" not in cpu


def test_shared_data_is_used_as_is(matrix: Matrix, tmp_path: Path) -> None:
    (tmp_path / "cifar-10-batches-py").mkdir()
    p = plan(matrix, data=tmp_path)
    p.check_data()
    script = render_sbatch(p, SlurmOptions())
    assert f"data={tmp_path}" in script and "--synthetic-cifar" not in script
    with pytest.raises(UsageError, match="no cifar-10-batches-py"):
        plan(matrix, data=tmp_path / "empty").check_data()


@pytest.mark.parametrize(("kw", "opts", "message"), [
    ({"results": Path("relative")}, {}, "absolute path"),
    ({"results": Path("/a,b")}, {}, "comma"),
    ({"nodes": 0}, {}, "at least one node"),
    ({"suite": "both", "args": ["--only", "smoke"]}, {}, "one suite"),
    ({}, {"gpus_per_node": 2, "gres": "gpu:2"}, "not both"),
    ({}, {"time": "two hours"}, "not a Slurm time limit"),
    ({}, {"partition": "a b"}, "cannot hold spaces"),
])
def test_refused_with_a_reason(matrix: Matrix, kw: dict[str, object], opts: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        render_sbatch(plan(matrix, **kw), SlurmOptions(**opts))  # type: ignore[arg-type]


def test_dry_run_prints_the_script(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc = main(["--matrix", str(ROOT / "matrix.yaml"), "submit", "cpu", "--nodes", "3", "--results", str(tmp_path),
               "--runtime", "pyxis", "--dry-run", "--", "--only", "smoke"])
    out = capsys.readouterr().out
    assert rc == 0 and out.startswith("#!/bin/bash") and "#SBATCH --array=0-2" in out
    assert "--only smoke" in out and "srun" in out
    assert not list(tmp_path.iterdir())  # a dry run submits and creates nothing


def test_dry_run_after_the_separator_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))  # were it not refused, nothing could be submitted
    rc = main(["--matrix", str(ROOT / "matrix.yaml"), "submit", "cpu", "--results", str(tmp_path), "--", "--quick",
               "--dry-run"])
    assert rc == 2 and "put it before `--`" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_submit_without_slurm_says_so(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    rc = main(["--matrix", str(ROOT / "matrix.yaml"), "submit", "cpu", "--results", str(tmp_path / "r")])
    assert rc == 8 and "`sbatch` is not installed" in capsys.readouterr().err


# ------------------------------------------------------------------------------- the script, run on a "node"

FAKE_DOCKER = r"""#!/bin/bash
# Stands in for docker: `image inspect` answers, `run` writes a record-shaped file into the /results mount.
case "$1" in
  image) [[ ${3:-} == --format ]] && echo sha256:feed; exit 0 ;;
  rm) [[ -s $TMPDIR/run.pid ]] && kill "$(cat "$TMPDIR/run.pid")" 2>/dev/null; exit 0 ;;
  run)
    for a in "$@"; do
      if [[ $a == --mount=type=bind,source=*,target=/results ]]; then
        dest=${a#--mount=type=bind,source=}; dest=${dest%,target=/results}
      fi
      [[ $a == --env=TORCHRIG_HOSTNAME=* ]] && host=${a#--env=TORCHRIG_HOSTNAME=}
    done
    mkdir -p "$dest/task"
    echo "{\"host\": \"$host\"}" >"$dest/task/smoke-1.json"
    echo "suite output line"
    if [[ -n ${FAKE_SLEEP:-} ]]; then echo $$ >"$TMPDIR/run.pid"; exec sleep "$FAKE_SLEEP"; fi
    exit "${FAKE_EXIT:-0}" ;;
esac
"""


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("code", [0, 3])
def test_the_script_publishes_the_node_folder_in_one_piece(matrix: Matrix, tmp_path: Path, code: int) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    results = tmp_path / "results"
    (results / "77").mkdir(parents=True)
    script = render_sbatch(plan(matrix, results=results), SlurmOptions())
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_ARRAY_JOB_ID": "77",
           "SLURM_JOB_ID": "78", "SLURM_ARRAY_TASK_ID": "1", "TMPDIR": str(tmp_path), "FAKE_EXIT": str(code)}
    proc = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == code, proc.stdout + proc.stderr
    host = subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout.strip()
    folder = results / "77" / f"1-{host}"
    assert sorted(p.name for p in (results / "77").iterdir()) == [folder.name]  # no temporary folder left
    exit_info = json.loads((folder / "exit.json").read_text())
    assert exit_info["exit_code"] == code and exit_info["index"] == 1 and exit_info["host"] == host
    assert exit_info["why"] == ("" if code == 0 else f"tasks exit {code}")
    assert json.loads((folder / "task" / "smoke-1.json").read_text()) == {"host": host}
    log = (folder / "node.log").read_text()
    assert "suite output line" in log and f"tasks exited {code}" in log
    assert not list(tmp_path.glob("torchrig-77-1.*"))  # the node's local work folder is cleaned up


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_a_signalled_element_removes_its_container_and_still_publishes(matrix: Matrix, tmp_path: Path) -> None:
    """Slurm's time limit and scancel send SIGTERM first: the element stops its container and publishes."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    results = tmp_path / "results"
    (results / "80").mkdir(parents=True)
    script = render_sbatch(plan(matrix, results=results), SlurmOptions())
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_ARRAY_JOB_ID": "80",
           "SLURM_JOB_ID": "80", "SLURM_ARRAY_TASK_ID": "0", "TMPDIR": str(tmp_path), "FAKE_SLEEP": "60"}
    proc = subprocess.Popen(["bash", "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    deadline = time.monotonic() + 30
    while not (tmp_path / "run.pid").is_file() and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)  # the suite's "container" was removed: nothing lingers
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 143, out
    (folder,) = (results / "80").iterdir()
    info = json.loads((folder / "exit.json").read_text())
    assert info["exit_code"] == 143 and info["why"] == "stopped by a signal"
    assert (folder / "task" / "smoke-1.json").is_file()  # what the suite wrote before the signal is kept
    assert "stopped by a signal" in (folder / "node.log").read_text()


# --------------------------------------------------------------------------------------------------- states

SACCT = """\
42_0|COMPLETED|0:0|00:03:10|node01|None
42_0.batch|COMPLETED|0:0|00:03:10|node01|
42_0.extern|COMPLETED|0:0|00:03:10|node01|
42_1|FAILED|1:0|00:02:59|node02|NonZeroExitCode
42_1.batch|FAILED|1:0|00:02:59|node02|
42_2|OUT_OF_MEMORY|0:125|00:01:02|node03|OutOfMemory
42_3|TIMEOUT|0:0|1-00:00:05|node04|TimeLimit
42_4|NODE_FAIL|0:0|00:10:00|node05|NodeDown
42_5|CANCELLED by 1000|0:15|00:00:30|node06|None
42_[6-7%2]|PENDING|0:0|00:00:00|None assigned|Resources
"""


def test_sacct_states() -> None:
    states = {s.index: s for s in parse_sacct(SACCT, "42")}
    assert sorted(states) == list(range(8))
    assert not states[0].failed and states[0].elapsed_s == 190 and states[0].node == "node01"
    assert states[1].failed and states[1].exit_code == 1 and states[1].why() == "FAILED, exit code 1"
    assert states[2].state == "OUT_OF_MEMORY" and states[2].failed and states[2].signal == 125
    assert states[3].state == "TIMEOUT" and states[3].elapsed_s == 86405 and "TimeLimit" in states[3].why()
    assert states[4].state == "NODE_FAIL" and states[4].failed
    assert states[5].state == "CANCELLED" and states[5].signal == 15
    assert states[6].state == states[7].state == "PENDING" and not states[6].done and states[6].node is None


def test_sacct_of_another_job_or_a_plain_job() -> None:
    assert parse_sacct("43_0|COMPLETED|0:0|00:00:01|n|None\n", "42") == []
    (only,) = parse_sacct("42|RUNNING|0:0|00:00:07|n1|None\n42.batch|RUNNING|0:0|00:00:07|n1|\n", "42")
    assert only.index == 0 and only.state == "RUNNING" and not only.done


SCONTROL = (
    "JobId=9 ArrayJobId=8 ArrayTaskId=1 JobName=torchrig-cpu JobState=FAILED Reason=NonZeroExitCode "
    "ExitCode=1:0 RunTime=00:00:42 NodeList=vm BatchHost=vm\n"
    "JobId=8 ArrayJobId=8 ArrayTaskId=0 JobName=torchrig-cpu JobState=COMPLETED Reason=None "
    "ExitCode=0:0 RunTime=00:01:40 NodeList=vm BatchHost=vm\n"
    "JobId=10 ArrayJobId=8 ArrayTaskId=2-3 JobName=torchrig-cpu JobState=PENDING Reason=Resources "
    "ExitCode=0:0 RunTime=00:00:00 NodeList=(null)\n"
)


def test_scontrol_states() -> None:
    states = parse_scontrol(SCONTROL)
    assert [s.index for s in states] == [0, 1, 2, 3]
    assert states[0].state == "COMPLETED" and states[0].elapsed_s == 100 and not states[0].failed
    assert states[1].failed and states[1].exit_code == 1 and states[1].node == "vm"
    assert states[3].state == "PENDING" and states[3].node is None


# ------------------------------------------------------------------------------------ submitting (stand-ins)

FAKE_SLURM = {
    "sbatch": '#!/bin/bash\ncat >"$CALLS/script"; echo "sbatch $*" >>"$CALLS/log"; echo "4242;cluster"\n',
    "scontrol": '#!/bin/bash\necho "scontrol $*" >>"$CALLS/log"\n',
    "scancel": '#!/bin/bash\necho "scancel $*" >>"$CALLS/log"\n',
}


@pytest.fixture
def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    calls = tmp_path / "calls"
    calls.mkdir()
    bin_dir = tmp_path / "slurm-bin"
    bin_dir.mkdir()
    for name, text in FAKE_SLURM.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("CALLS", str(calls))
    return calls


def test_submit_holds_describes_then_releases(fake_slurm: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "shared"
    rc = main(["--matrix", str(ROOT / "matrix.yaml"), "submit", "cpu", "--nodes", "2", "--results", str(results)])
    assert rc == 0
    assert (fake_slurm / "log").read_text().splitlines() == ["scontrol show config", "sbatch --parsable --hold",
                                                             "scontrol release 4242"]
    job = json.loads((results / "4242" / "job.json").read_text())
    assert job["job"] == "4242" and job["nodes"] == 2 and job["env"] == "cpu" and job["runtime"] == "docker"
    assert (results / "4242" / "job.sbatch").read_text() == (fake_slurm / "script").read_text()
    assert f"torchrig fleet collect 4242 --results {results}" in capsys.readouterr().out


def test_a_job_folder_that_exists_cancels_the_job(fake_slurm: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "shared"
    (results / "4242").mkdir(parents=True)
    rc = main(["--matrix", str(ROOT / "matrix.yaml"), "submit", "cpu", "--results", str(results)])
    assert rc == 8 and "exists already" in capsys.readouterr().err
    assert (fake_slurm / "log").read_text().splitlines() == ["scontrol show config", "sbatch --parsable --hold",
                                                             "scancel 4242"]
