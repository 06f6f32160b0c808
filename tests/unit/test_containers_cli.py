"""run-tasks / run-bench / dev wiring, with a fake engine: what reaches the container, and what is refused first."""

from __future__ import annotations

import dataclasses
import io
import json
import shlex
import socket
from pathlib import Path
from typing import Any, ClassVar

import docker.errors
import pytest
import yaml

from torchrig import run as run_step
from torchrig.__main__ import main
from torchrig.engine import RunResult, SuiteContainer, docker_kwargs
from torchrig.engine.hostcheck import HostFacts
from torchrig.errors import RegistryError
from torchrig.matrix import load_matrix
from torchrig.results.records import Container, Machine, Record, Software, write_record

ROOT = Path(__file__).resolve().parents[2]
IMAGE_ID = "sha256:" + "ab" * 32
CPU_HOST = HostFacts(uid=1234, gid=5678)
NVIDIA_HOST = HostFacts(uid=1234, gid=5678, docker_runtimes=("nvidia", "runc"), nvidia_driver="535.104.05")
AMD_HOST = HostFacts(uid=1234, gid=5678, has_kfd=True, has_dri=True, render_gid=109)


class FakeImage:
    def __init__(self, ref: str) -> None:
        self.id = IMAGE_ID
        self.attrs = {"RepoDigests": [ref.rsplit(":", 1)[0] + "@sha256:" + "cd" * 32]}


class FakeClient:
    """Images: the ids ensure_image returns, what --image names, and what the harness says was pulled/present."""

    present: ClassVar[set[str]] = set()

    def __init__(self) -> None:
        self.images = self

    def info(self) -> dict[str, Any]:
        return {}

    def get(self, ref: str) -> FakeImage:
        if ref.startswith("ghcr.io/") and ref not in self.present:
            raise docker.errors.ImageNotFound(f"No such image: {ref}")
        return FakeImage("ghcr.io/torchrig/torchrig:x")


@dataclasses.dataclass
class Harness:
    tmp: Path
    facts: HostFacts = CPU_HOST
    exit_code: int | None = 0
    timed_out: bool = False
    write: tuple[str, ...] = ("smoke", "regression")  # records the fake container writes
    verdict: str = "pass"
    specs: list[SuiteContainer] = dataclasses.field(default_factory=list)
    builds: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    pulls: list[str] = dataclasses.field(default_factory=list)
    registry_up: bool = False
    docker_argv: list[str] = dataclasses.field(default_factory=list)
    docker_cli: str | None = None
    kept: list[bool] = dataclasses.field(default_factory=list)
    engine: Any = None

    def run(self, client: Any, spec: SuiteContainer, *, keep: bool, **kw: Any) -> RunResult:
        self.specs.append(spec)
        self.kept.append(keep)
        results = next((Path(m.source) for m in spec.mounts if m.target == "/results"), None)
        if results is not None and spec.labels["torchrig.container"] in ("tasks", "bench"):
            for name in self.write:
                write_record(_record(name, spec.environment.get("TORCHRIG_IMAGE_ID"), self.verdict), results)
        return RunResult(name=spec.name, image=spec.image, command=spec.command, exit_code=self.exit_code,
                         duration_s=1.0, timed_out=self.timed_out, timeout_s=5.0 if self.timed_out else None)

    def pull(self, ref: Any, **kw: Any) -> str:
        self.pulls.append(ref.immutable)
        if not self.registry_up:
            raise RegistryError(f"pull {ref.immutable} failed: cannot reach registry ghcr.io")
        FakeClient.present.add(ref.immutable)
        return IMAGE_ID

    def ensure(self, env: Any, target: str, options: Any, **kw: Any) -> Any:
        self.builds.append((env.id, target))
        ref = env.tags(target)
        return type("Built", (), {"image_id": IMAGE_ID, "ref": ref})()


def _record(name: str, image_id: str | None, verdict: Any = "pass") -> Record:
    machine = Machine(hostname="h", os="Linux", cpu="c", cpu_count=2, accelerator="cpu")
    return Record(kind="task", name=name, env_id="cpu", machine=machine.with_fingerprint(),
                  software=Software(python="3.11"), verdict=verdict, wall_time_s=2.5,
                  container=Container(image="img", image_id=image_id))


@pytest.fixture
def h(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Harness:
    harness = Harness(tmp=tmp_path)
    monkeypatch.setattr(FakeClient, "present", set())
    harness.engine = run_step.Engine(
        connect=FakeClient, host_facts=lambda info: harness.facts, ensure_image=harness.ensure,
        pull_image=harness.pull, run=harness.run, call=lambda argv: harness.docker_argv.extend(argv) or 0,
        which=lambda name: harness.docker_cli)
    monkeypatch.setattr(run_step, "DEFAULT_ENGINE", harness.engine)  # the one place the engine is swapped
    monkeypatch.delenv("TORCHRIG_RESULTS", raising=False)
    monkeypatch.delenv("TORCHRIG_DATA", raising=False)
    return harness


def _main(h: Harness, *args: str) -> int:
    return main(["--matrix", str(ROOT / "matrix.yaml"), *args])


def _suite_args(h: Harness, env: str, *extra: str) -> list[str]:
    return [env, "--results", str(h.tmp / "results"), "--data", str(h.tmp / "data"), *extra]


def test_run_tasks_mounts_results_and_data_runs_as_the_user_and_names_the_image(
        h: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    assert _main(h, "run-tasks", *_suite_args(h, "cpu", "--quick", "--", "--seed", "3")) == 0
    (spec,) = h.specs
    assert spec.command == ("python", "-m", "tasks", "--results", "/results", "--quick", "--synthetic-cifar",
                            "--seed", "3"), "missing CIFAR-10: the tasks write the synthetic stand-in first"
    kw = docker_kwargs(spec)
    assert kw["user"] == "1234:5678"
    assert {(m["Source"], m["Target"]) for m in kw["mounts"]} == {
        (str(h.tmp / "results"), "/results"), (str(h.tmp / "data"), "/data")}
    env = kw["environment"]
    assert env["TORCHRIG_IMAGE"] == load_matrix(ROOT / "matrix.yaml").get("cpu").tags().immutable
    assert env["TORCHRIG_IMAGE_ID"] == IMAGE_ID
    assert env["TORCHRIG_IMAGE_DIGEST"].startswith("ghcr.io/torchrig/torchrig@sha256:")
    assert env["TORCHRIG_ENV_ID"] == "cpu" and env["TORCHRIG_RESULTS"] == "/results"
    assert env["TORCHRIG_HOSTNAME"] == socket.gethostname(), "records name the host, not the container id"
    assert kw["network_mode"] == "none" and kw["shm_size"] == "8g"
    assert "device_requests" not in kw
    assert h.builds == [("cpu", "runtime")]
    out = capsys.readouterr().out
    assert "2 new record(s)" in out and "2 pass" in out and "regression" in out and "no image id" not in out


def test_existing_data_is_not_regenerated(h: Harness) -> None:
    (h.tmp / "data" / "cifar-10-batches-py").mkdir(parents=True)
    assert _main(h, "run-tasks", *_suite_args(h, "cpu")) == 0
    assert h.specs[-1].command == ("python", "-m", "tasks", "--results", "/results")


def test_run_bench_runs_the_benchmarks(h: Harness) -> None:
    assert _main(h, "run-bench", *_suite_args(h, "cpu", "--quick")) == 0
    (spec,) = h.specs
    assert spec.command == ("python", "-m", "bench", "--results", "/results", "--quick")


def test_cuda_gets_the_gpus_and_rocm_its_devices_and_render_group(h: Harness) -> None:
    h.facts = NVIDIA_HOST
    assert _main(h, "run-bench", *_suite_args(h, "cuda118")) == 0
    assert docker_kwargs(h.specs[-1])["device_requests"][0]["Capabilities"] == [["gpu"]]
    h.facts = AMD_HOST
    assert _main(h, "run-bench", *_suite_args(h, "rocm", "--ipc-host", "--shm-size", "32g")) == 0
    kw = docker_kwargs(h.specs[-1])
    assert kw["devices"] == ["/dev/kfd:/dev/kfd:rwm", "/dev/dri:/dev/dri:rwm"]
    assert kw["group_add"] == ["video", "109"] and kw["security_opt"] == ["seccomp=unconfined"]
    assert kw["ipc_mode"] == "host" and kw["shm_size"] == "32g"


def test_a_host_that_cannot_run_the_image_is_refused_before_anything_is_built(
        h: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    h.facts = dataclasses.replace(NVIDIA_HOST, nvidia_driver="440.33.01")  # below 11.x's minor-version floor 450.80.02
    assert _main(h, "run-tasks", *_suite_args(h, "cuda118")) == 7
    assert "520.61.05" in capsys.readouterr().err
    assert h.builds == [] and h.specs == []


def test_no_gpu_runs_a_cuda_image_on_the_cpu(h: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    h.facts = CPU_HOST
    assert _main(h, "run-bench", *_suite_args(h, "cuda118", "--no-gpu")) == 0
    assert "device_requests" not in docker_kwargs(h.specs[-1])
    assert "no GPU is visible" in capsys.readouterr().err


def test_a_failed_gate_fails_the_command_and_names_the_task(h: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    h.exit_code = 1
    h.write = ("smoke",)
    h.verdict = "fail"
    (h.tmp / "data" / "cifar-10-batches-py").mkdir(parents=True)
    assert _main(h, "run-tasks", *_suite_args(h, "cpu")) == 6
    err = capsys.readouterr().err
    assert "1 of 1 record(s) did not pass (smoke)" in err


def test_a_crash_before_any_record_shows_the_output_not_a_gate_message(
        h: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    h.exit_code, h.write = 1, ()
    assert _main(h, "run-bench", *_suite_args(h, "cpu")) == 6
    err = capsys.readouterr().err
    assert "exited with status 1" in err and "did not pass" not in err


def test_a_timed_out_run_says_the_records_written_are_kept(h: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    h.exit_code, h.timed_out = None, True
    assert _main(h, "run-bench", *_suite_args(h, "cpu", "--timeout", "5")) == 6
    err = capsys.readouterr().err
    assert "timeout" in err and "2 record(s) written before it was stopped are kept" in err


def test_results_default_to_results_env_under_the_checkout_or_torchrig_results(
        h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCHRIG_RESULTS", str(h.tmp / "elsewhere"))
    monkeypatch.setenv("TORCHRIG_DATA", str(h.tmp / "d"))
    assert _main(h, "run-bench", "cpu") == 0
    mounts = {m.target: m.source for m in h.specs[-1].mounts}
    assert mounts == {"/results": str(h.tmp / "elsewhere" / "cpu"), "/data": str(h.tmp / "d")}


def test_options_after_env_and_container_args_after_the_separator(h: Harness,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert _main(h, "run-bench", *_suite_args(h, "cpu", "--", "-k", "gemm", "--", "x")) == 0
    assert h.specs[-1].command[-4:] == ("-k", "gemm", "--", "x")
    assert _main(h, "run-bench", *_suite_args(h, "cpu", "--seed", "1")) == 2
    assert "go after `--`" in capsys.readouterr().err


def test_the_suites_own_options_need_no_second_separator(h: Harness,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    # `nox -s bench-cuda130 -- --acceptance` runs `torchrig run-bench cuda130 --acceptance`
    assert _main(h, "run-bench", *_suite_args(h, "cpu", "--acceptance", "--device", "cpu")) == 0
    assert h.specs[-1].command[-3:] == ("--acceptance", "--device", "cpu")
    assert _main(h, "run-bench", *_suite_args(h, "cpu", "--tiny", "--", "-k", "gemm")) == 0
    assert h.specs[-1].command[-3:] == ("--tiny", "-k", "gemm"), "the suite's options, then what follows `--`"
    assert _main(h, "run-tasks", *_suite_args(h, "cpu", "--only", "smoke", "--seed", "3")) == 0
    assert h.specs[-1].command[-4:] == ("--only", "smoke", "--seed", "3")
    capsys.readouterr()
    for words in (["--acceptanse"], ["-k", "gemm"], ["--device"], ["--help"], ["--acceptance", "--bogus"]):
        assert _main(h, "run-bench", *_suite_args(h, "cpu", *words)) == 2, words
        assert "go after `--`" in capsys.readouterr().err
    assert _main(h, "run-tasks", *_suite_args(h, "cpu", "--device", "tpu")) == 2, "tasks' --device has choices"
    assert _main(h, "run-tasks", *_suite_args(h, "cpu", "--acceptance")) == 2, "an option of the other suite"


def test_image_override_builds_nothing(h: Harness) -> None:
    assert _main(h, "run-bench", *_suite_args(h, "cpu", "--image", "my/image:1")) == 0
    assert h.builds == [] and h.specs[-1].image == "my/image:1"


def test_dev_with_a_command_returns_its_exit_code(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    h.exit_code = 7
    monkeypatch.setattr("sys.stdin", io.StringIO())
    assert _main(h, "dev", "cpu", "--workspace", str(h.tmp), "--", "id", "-u") == 7
    (spec,) = h.specs
    kw = docker_kwargs(spec)
    assert spec.command == ("id", "-u") and not spec.interactive
    assert kw["user"] == "1234:5678" and kw["working_dir"] == "/workspace"
    assert kw["mounts"][0]["Source"] == str(h.tmp) and kw["mounts"][0]["Target"] == "/workspace"
    assert "network_mode" not in kw, "dev uses Docker's default network"
    devel = load_matrix(ROOT / "matrix.yaml").get("cpu").tags("devel").immutable
    assert h.pulls == [devel], "dev pulls first"
    assert h.builds == [("cpu", "devel")], "and builds when the pull fails; in the devel image where there is one"


def test_dev_uses_the_image_already_on_the_engine(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    devel = load_matrix(ROOT / "matrix.yaml").get("cpu").tags("devel").immutable
    FakeClient.present.add(devel)
    assert _main(h, "dev", "cpu", "--workspace", str(h.tmp), "--", "true") == 0
    assert h.pulls == [] and h.builds == [] and h.specs[-1].image == devel


def test_pull_instead_of_build(h: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    h.registry_up = True
    assert _main(h, "run-bench", *_suite_args(h, "cpu", "--pull")) == 0
    assert h.pulls == [h.specs[-1].image] and h.builds == []
    h.registry_up = False
    assert _main(h, "run-bench", *_suite_args(h, "cpu", "--pull")) == 5
    assert "cannot reach registry" in capsys.readouterr().err


def test_interactive_dev_needs_a_terminal(h: Harness, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO())
    assert _main(h, "dev", "cpu") == 2
    assert "needs a terminal" in capsys.readouterr().err


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_interactive_dev_runs_docker_with_the_same_options(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", _Tty())
    h.docker_cli = "/usr/bin/docker"
    h.facts = NVIDIA_HOST
    (h.tmp / "src" / "torchrig").mkdir(parents=True)
    assert _main(h, "dev", "cuda118", "--workspace", str(h.tmp), "--ipc-host") == 0
    argv = h.docker_argv
    assert argv[:2] == ["/usr/bin/docker", "run"]
    for flag in ("--rm", "--interactive", "--tty", "--gpus=all", "--ipc=host", "--shm-size=8g", "--user=1234:5678",
                 f"--mount=type=bind,source={h.tmp},target=/workspace", "--workdir=/workspace"):
        assert flag in argv
    assert "--env=PYTHONPATH=/workspace/src:/workspace:/opt/torchrig" in argv, "a checkout's code comes first"
    assert argv[-2:] == [load_matrix(ROOT / "matrix.yaml").get("cuda118").tags("devel").immutable, "bash"]


def test_records_summary_flags_records_without_the_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_record(_record("smoke", None), tmp_path)
    (tmp_path / "task" / "broken-1.json").write_text(json.dumps({"schema": "torchrig.record", "schema_version": 1}))
    image = run_step.ImageInfo(ref="r", id=IMAGE_ID, digest=None)
    records = run_step.summarize_records(tmp_path, set(), image)
    out = capsys.readouterr().out
    assert len(records) == 1 and "does not name the image" in out and "invalid record" in out


def test_run_suite_is_testable_without_the_cli(h: Harness) -> None:
    """The run step takes frozen options and an engine: no argparse, no patched module globals."""
    matrix = load_matrix(ROOT / "matrix.yaml")
    request = run_step.SuiteRequest(suite="tasks", results=h.tmp / "r", data=h.tmp / "d", quick=True)
    records = run_step.run_suite(matrix, matrix.get("cpu"), run_step.RunOptions(), request, engine=h.engine)
    assert sorted(r.name for r in records) == ["regression", "smoke"]
    (spec,) = h.specs
    # compat data the image cannot read itself (it may have no PyYAML) travels in the contract's variable
    assert spec.environment["TORCHRIG_COMPILE_MAX_PYTHON"] == "3.10"
    assert spec.environment["TORCHRIG_ENV_ID"] == "cpu"


def test_keep_containers_reaches_the_lifecycle(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """TORCHRIG_KEEP_CONTAINERS is read once (Settings) and handed to every run, suites and dev alike."""
    assert _main(h, "run-tasks", *_suite_args(h, "cpu")) == 0
    monkeypatch.setenv("TORCHRIG_KEEP_CONTAINERS", "1")
    assert _main(h, "run-bench", *_suite_args(h, "cpu")) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO())
    assert _main(h, "dev", "cpu", "--workspace", str(h.tmp), "--", "true") == 0
    assert h.kept == [False, True, True]


# ------------------------------------------------------------------ --env NAME=VALUE reaches every container

ENV_VALUE = "a b,'c'=\"d\" $e"


def test_env_reaches_the_suite_container_with_its_names_listed(h: Harness) -> None:
    assert _main(h, "run-bench", *_suite_args(h, "cpu", "--env", "NCCL_DEBUG=INFO", "--env", f"ODD={ENV_VALUE}")) == 0
    env = docker_kwargs(h.specs[-1])["environment"]
    assert env["NCCL_DEBUG"] == "INFO" and env["ODD"] == ENV_VALUE
    assert env["TORCHRIG_USER_ENV"] == "NCCL_DEBUG,ODD"


@pytest.mark.parametrize("item", ["TORCHRIG_HOSTNAME=x", "9LIVES=1", "NOVALUE"])
def test_a_bad_env_exits_2_naming_it_before_the_engine_is_asked(h: Harness,
                                                                 capsys: pytest.CaptureFixture[str],
                                                                 item: str) -> None:
    assert _main(h, "run-tasks", *_suite_args(h, "cpu", "--env", item)) == 2
    assert item.split("=", 1)[0] in capsys.readouterr().err and h.specs == []


def _dry(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["--matrix", str(ROOT / "matrix.yaml"), "submit", *args, "--dry-run", "--env", f"ODD={ENV_VALUE}",
                 "--env", "NCCL_IB_DISABLE=1"]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("runtime", ["docker", "podman", "pyxis", "apptainer"])
def test_env_reaches_every_slurm_runtime(capsys: pytest.CaptureFixture[str], runtime: str) -> None:
    script = _dry(capsys, "cuda121", "--runtime", runtime, "--results", "/shared/r")
    words = [w for line in script.splitlines() if line.startswith(("in_node", "export"))
             for w in shlex.split(line.replace('"${', "").replace('}"', ""))]
    prefix = "APPTAINERENV_" if runtime == "apptainer" else ""
    assert f"--env=ODD={ENV_VALUE}" in words if runtime in ("docker", "podman") else f"{prefix}ODD={ENV_VALUE}" in words
    assert any("TORCHRIG_USER_ENV=NCCL_IB_DISABLE,ODD" in w for w in words)


def test_env_reaches_the_kubernetes_pod(capsys: pytest.CaptureFixture[str]) -> None:
    job = yaml.safe_load(_dry(capsys, "cuda121", "--to", "kubernetes", "--pvc", "p"))
    (c,) = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["ODD"] == ENV_VALUE and env["NCCL_IB_DISABLE"] == "1"
    assert env["TORCHRIG_USER_ENV"] == "NCCL_IB_DISABLE,ODD"
