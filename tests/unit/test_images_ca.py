"""The CA bundle and the wheelhouse: where they come from, how a build gets them, and that nothing keeps them."""

from __future__ import annotations

import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from torchrig.engine.client import is_local_daemon
from torchrig.errors import UsageError
from torchrig.images import BuildOptions
from torchrig.images.serve import FileServer, plan
from torchrig.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
HELPER = ROOT / "images" / "build-env.sh"
PEM = "-----BEGIN CERTIFICATE-----\nMIIBfakeFAKEfake\n-----END CERTIFICATE-----\n"


def resolve_ca_bundle(option: str | Path | None, environ: dict[str, str]) -> Path | None:
    """The CA bundle a build gets from the ``--ca-bundle`` flag and the environment, as the CLI computes it."""
    flags = {"ca-bundle": str(option)} if option is not None else {}
    return BuildOptions.from_settings(Settings.from_environ(environ, flags=flags)).ca_bundle


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    p = tmp_path / "ca.pem"
    p.write_text(PEM)
    return p


def test_the_ca_bundle_defaults_to_what_pip_on_this_host_uses(ca: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.pem"
    other.write_text(PEM)
    assert resolve_ca_bundle(None, {"PIP_CERT": str(ca), "SSL_CERT_FILE": str(other)}) == ca
    assert resolve_ca_bundle(None, {"REQUESTS_CA_BUNDLE": str(other)}) == other
    assert resolve_ca_bundle(None, {}) is None


def test_flag_beats_variable_beats_host_default(ca: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.pem"
    other.write_text(PEM)
    environ = {"TORCHRIG_CA_BUNDLE": str(other), "PIP_CERT": str(ca)}
    assert resolve_ca_bundle(None, environ) == other
    assert resolve_ca_bundle(str(ca), environ) == ca
    assert resolve_ca_bundle("none", environ) is None
    assert resolve_ca_bundle(None, {**environ, "TORCHRIG_CA_BUNDLE": "none"}) is None


def test_a_missing_bundle_names_where_it_came_from(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="from PIP_CERT"):
        resolve_ca_bundle(None, {"PIP_CERT": str(tmp_path / "gone.pem")})
    with pytest.raises(UsageError, match="from --ca-bundle"):
        resolve_ca_bundle(tmp_path / "gone.pem", {})


@pytest.mark.parametrize(("address", "local"), [
    ("unix:///var/run/docker.sock", True), ("tcp://127.0.0.1:2375", True), ("tcp://localhost:2376", True),
    ("tcp://10.1.2.3:2375", False), ("ssh://builder@ci-host", False), ("npipe:////./pipe/docker_engine", True),
])
def test_which_engines_share_this_hosts_loopback(address: str, local: bool) -> None:
    assert is_local_daemon(address) is local


def test_a_remote_engine_is_refused_only_when_something_must_be_served(ca: Path) -> None:
    with pytest.raises(UsageError, match=r"DOCKER_HOST=tcp://10\.1\.2\.3:2375 is a remote engine.*--ca-bundle none"):
        plan(ca_bundle=ca, wheelhouse=None, daemon="tcp://10.1.2.3:2375")
    assert not plan(ca_bundle=None, wheelhouse=None, daemon="tcp://10.1.2.3:2375").needed


def test_a_wheelhouse_must_be_a_directory(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="pip download"):
        plan(ca_bundle=None, wheelhouse=tmp_path / "missing", daemon="unix:///x")


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""


def test_the_file_server_serves_only_under_its_token_and_only_for_the_build(ca: Path, tmp_path: Path) -> None:
    house = tmp_path / "wheels"
    house.mkdir()
    (house / "six-1.16.0-py2.py3-none-any.whl").write_bytes(b"wheel")
    with FileServer(plan(ca_bundle=ca, wheelhouse=house, daemon="unix:///x")) as srv:
        assert srv.url.startswith("http://127.0.0.1:")
        assert _get(srv.url + "manifest") == (200, b"ca wheels\n")
        assert _get(srv.url + "ca.pem") == (200, PEM.encode())
        status, listing = _get(srv.url + "wheels/")
        assert status == 200 and b'href="six-1.16.0-py2.py3-none-any.whl"' in listing
        assert _get(srv.url + "wheels/six-1.16.0-py2.py3-none-any.whl") == (200, b"wheel")
        base = srv.url.rsplit("/", 2)[0]
        assert _get(base + "/ca.pem")[0] == 404, "no token, no file"
        assert _get(base + "/wrongtoken/ca.pem")[0] == 404
        assert _get(srv.url + "wheels/../ca.pem")[0] in (200, 404)  # normalised into the token tree, never outside
        assert "/<token>/ca.pem" in srv.requests
        url = srv.url
    with pytest.raises(urllib.error.URLError):
        urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url + "manifest", timeout=2)


def test_without_a_ca_nothing_is_served_as_ca(tmp_path: Path) -> None:
    house = tmp_path / "w"
    house.mkdir()
    with FileServer(plan(ca_bundle=None, wheelhouse=house, daemon="unix:///x")) as srv:
        assert _get(srv.url + "manifest") == (200, b"wheels\n")
        assert _get(srv.url + "ca.pem")[0] == 404


def _helper(script: str, url: str | None, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TORCHRIG_CA_FILE": str(tmp_path / "ca-in-build.pem"),
           "TORCHRIG_APT_CONF": str(tmp_path / "apt.conf.d" / "99ca")}
    (tmp_path / "apt.conf.d").mkdir(exist_ok=True)
    if url:
        env["FTP_PROXY"] = url
    return subprocess.run(["bash", "-euc", f". {HELPER}; {script}"], env=env, capture_output=True, text=True,
                          timeout=30)


def test_the_build_helper_hands_the_ca_to_pip_and_apt_then_removes_it(ca: Path, tmp_path: Path) -> None:
    """What each downloading RUN step does, on the host: fetch, point pip/requests/apt at it, delete it."""
    with FileServer(plan(ca_bundle=ca, wheelhouse=None, daemon="unix:///x")) as srv:
        r = _helper('echo "PIP_CERT=$PIP_CERT"; cat "$PIP_CERT"; cat "$TORCHRIG_APT_CONF"; '
                    'echo "FTP=${FTP_PROXY:-unset}"; torchrig_build_done; ls "$(dirname "$TORCHRIG_APT_CONF")"; '
                    'test ! -e "$TORCHRIG_CA_FILE" && echo gone', srv.url, tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"PIP_CERT={tmp_path / 'ca-in-build.pem'}" in r.stdout
    assert PEM in r.stdout
    assert f'Acquire::https::CAInfo "{tmp_path / "ca-in-build.pem"}";' in r.stdout
    assert "FTP=unset" in r.stdout, "the server address is not left for later commands to see"
    assert r.stdout.rstrip().endswith("gone")
    assert not any((tmp_path / "apt.conf.d").iterdir())


def test_the_build_helper_without_a_server_changes_nothing(tmp_path: Path) -> None:
    r = _helper('echo "PIP_CERT=${PIP_CERT:-unset}"; torchrig_build_done', None, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "PIP_CERT=unset" in r.stdout


def test_an_unreachable_server_fails_the_step_with_the_reason(tmp_path: Path) -> None:
    r = _helper("echo not reached", "http://127.0.0.1:9/token/", tmp_path)
    assert r.returncode != 0
    assert "cannot reach torchrig's build file server" in r.stderr
    assert "not reached" not in r.stdout


# ------------------------------------------------------------------------------ the kept CA in the cache key

class _NoImages:
    """Enough of docker.DockerClient for planning: no image exists locally."""

    class images:
        @staticmethod
        def get(name: str) -> object:
            import docker.errors

            raise docker.errors.ImageNotFound(name)


def _kept_ca_arg(ca_path: Path | None, keep: bool, root: Path) -> str:
    from torchrig.images.plan import plan_build
    from torchrig.matrix import load_matrix

    env = load_matrix(ROOT / "matrix.yaml").get("cpu")
    opts = BuildOptions(root=root, ca_bundle=ca_path, keep_ca_bundle=keep, use_lock=False)
    return plan_build(env, "runtime", opts, _NoImages()).buildargs["TORCHRIG_KEPT_CA_SHA256"]  # type: ignore[arg-type]


def test_a_kept_ca_s_digest_is_a_build_arg_so_a_changed_ca_misses_the_layer_cache(tmp_path: Path) -> None:
    import hashlib

    root = tmp_path / "root"
    for d in ("images", "src/torchrig", "tasks", "bench"):
        shutil.copytree(ROOT / d, root / d, ignore=shutil.ignore_patterns("__pycache__"))
    one, two = tmp_path / "one.pem", tmp_path / "two.pem"
    one.write_text(PEM)
    two.write_text(PEM.replace("fake", "FAKE"))
    assert _kept_ca_arg(one, True, root) == hashlib.sha256(one.read_bytes()).hexdigest()
    assert _kept_ca_arg(two, True, root) != _kept_ca_arg(one, True, root)
    # a CA that is only served (not kept) leaves no trace in the image, so it must not change the cache key
    assert _kept_ca_arg(one, False, root) == _kept_ca_arg(two, False, root) == _kept_ca_arg(None, False, root) == ""


def test_the_dockerfile_declares_the_digest_before_the_step_that_keeps_the_ca() -> None:
    """The legacy builder keys a RUN on the build args declared before it in its stage: the ARG must come before
    the keep-CA step, and after the stage's FROM (an ARG before FROM is not in the stage)."""
    lines = (ROOT / "images" / "Dockerfile").read_text().splitlines()
    frm = next(i for i, line in enumerate(lines) if line.startswith("FROM ") and " AS base" in line)
    arg = next(i for i, line in enumerate(lines) if line.startswith("ARG TORCHRIG_KEPT_CA_SHA256"))
    keep = next(i for i, line in enumerate(lines) if "/usr/local/share/ca-certificates/torchrig-build-ca.crt" in line)
    assert frm < arg < keep
    assert not any(line.startswith("FROM ") for line in lines[arg:keep])
