"""Any UID gets a name in the image, with plain `docker run --user` (no torchrig, no USER/HOME from its spec): the
small image (seconds), run as UID 4242, which has no line in the image's /etc/passwd.

The way jupyter/docker-stacks does it: the entrypoint appends the missing line to /etc/passwd, which group 0 may
write (`--user UID` runs with GID 0), and `su` is refused to everyone so that a line written there grants nothing.
"""

from __future__ import annotations

import docker
import pytest

from torchrig.images import BuiltImage

pytestmark = pytest.mark.docker

UID = 4242
PROBE = r"""
set -e
echo "whoami=$(whoami) id=$(id -un) uid=$(id -u)"
python -c 'import getpass, os, tempfile
cache = os.environ.get("TORCHINDUCTOR_CACHE_DIR", f"{tempfile.gettempdir()}/torchinductor_{getpass.getuser()}")
triton = os.environ.get("TRITON_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".triton", "cache"))
for d in (cache, triton):
    os.makedirs(d, exist_ok=True)
    open(os.path.join(d, "probe"), "w").write("ok")
print(f"getuser={getpass.getuser()} home={os.path.expanduser(chr(126))} cache={cache} triton={triton}")'
"""


def _run(client: docker.DockerClient, image: str, script: str, **kw: object) -> tuple[int, str, str]:
    container = client.containers.run(image, ["bash", "-c", script], detach=True, network_disabled=True, **kw)
    try:
        code = int(container.wait(timeout=120)["StatusCode"])
        return code, container.logs(stderr=False).decode(), container.logs(stdout=False).decode()
    finally:
        container.remove(force=True)


def test_uid_4242_with_plain_docker_run_has_a_name_a_home_and_compiler_caches(
        docker_client: docker.DockerClient, small_built: BuiltImage) -> None:
    code, out, err = _run(docker_client, small_built.image_id, PROBE, user=str(UID))
    assert code == 0, (out, err)
    assert f"whoami=torchrig id=torchrig uid={UID}" in out, (out, err)
    assert "getuser=torchrig home=/tmp cache=/tmp/torchinductor_torchrig triton=/tmp/.triton/cache" in out, out


def test_the_added_line_grants_nothing_su_is_refused(docker_client: docker.DockerClient,
                                                     small_built: BuiltImage) -> None:
    """A UID that may write /etc/passwd adds a password-less UID 0 line: `su` to it must still fail."""
    script = "printf 'evil::0:0::/:/bin/sh\\n' >> /etc/passwd && su evil -c 'id -u' && echo BECAME-ROOT"
    code, out, err = _run(docker_client, small_built.image_id, script, user=str(UID))
    assert "BECAME-ROOT" not in out and code != 0, (out, err)


def test_other_groups_keep_working_and_stdout_stays_the_commands(docker_client: docker.DockerClient,
                                                                 small_built: BuiltImage) -> None:
    """`--user 4242:4242` cannot write /etc/passwd: the command still runs with its own exit code and stdout (the
    hint goes to stderr); the image's own user starts with nothing added and nothing said."""
    code, out, err = _run(docker_client, small_built.image_id, "echo out; exit 3", user=f"{UID}:{UID}")
    assert (code, out) == (3, "out\n"), (code, out, err)
    assert f"--user {UID}:0" in err
    code, out, err = _run(docker_client, small_built.image_id, "whoami; grep -c '^torchrig:' /etc/passwd")
    assert (code, out, err) == (0, "torchrig\n1\n", ""), (code, out, err)
