"""`torchrig compat-check` against a simple index served on 127.0.0.1 (PEP 503 HTML and PEP 691 JSON forms)."""

from __future__ import annotations

import http.server
import json
import shutil
import ssl
import subprocess
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from torchrig.__main__ import main
from torchrig.matrix.compat import load_compat
from torchrig.matrix.simple_index import JSON_TYPE, parse_wheel

TORCH = ("2.12.0", "2.12.1")  # the releases the fake index carries; the CLI is asked about 2.12 only


def _pytorch_files() -> dict[str, list[str]]:
    """What download.pytorch.org/whl lists for torch 2.12 (every flavour x Python), plus files it must ignore."""
    r = load_compat().releases["2.12"]
    files: dict[str, list[str]] = {"torch": [], "torchvision": []}
    for torch in TORCH:
        tv = r.torchvision[torch]
        for flav in r.flavours:
            for py in r.pythons:
                cp = "cp" + py.replace(".", "")
                files["torch"].append(f"torch-{torch}+{flav}-{cp}-{cp}-manylinux_2_28_x86_64.whl")
                files["torchvision"].append(f"torchvision-{tv}+{flav}-{cp}-{cp}-manylinux_2_28_x86_64.whl")
        files["torch"] += [f"torch-{torch}-cp312-none-macosx_11_0_arm64.whl", f"torch-{torch}.tar.gz",
                           f"torch-{torch}+cu128-cp312-cp312-win_amd64.whl",  # not Linux: no disagreement
                           f"torch-{torch}-cp312-cp312-manylinux_2_28_x86_64.whl"]  # plain: PyPI's, ignored here
    files["torch"].append("torch-1.13.1+cu117-cp310-cp310-linux_x86_64.whl")  # older than compat.yaml knows
    files["torch"].append("torch-2.13.0.dev20260101+cu130-cp312-cp312-manylinux_2_28_x86_64.whl")  # not final
    return files


class _Index(http.server.ThreadingHTTPServer):
    files: dict[str, list[str]]
    json_form: bool
    yanked: set[str]
    metadata: dict[str, str]
    served: list[str]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Index

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        parts = self.path.strip("/").split("/")
        if parts[-1].endswith(".metadata") and parts[-1][: -len(".metadata")] in self.server.metadata:
            return self._send(self.server.metadata[parts[-1][: -len(".metadata")]].encode(), "text/plain")
        if len(parts) != 2 or parts[0] != "simple" or parts[1] not in self.server.files:
            self.send_error(404)
            return
        names = self.server.files[parts[1]]
        meta = self.server.metadata
        if self.server.json_form and JSON_TYPE in self.headers.get("Accept", ""):
            self.server.served.append("json")
            files = [{"filename": n, "url": f"../../files/{urllib.parse.quote(n)}", "hashes": {},
                      "yanked": n in self.server.yanked, "core-metadata": n in meta} for n in names]
            body = json.dumps({"meta": {"api-version": "1.1"}, "name": parts[1], "files": files})
            return self._send(body.encode(), JSON_TYPE)
        self.server.served.append("html")
        links = "".join(
            f'<a href="/files/{urllib.parse.quote(n)}#sha256=00"'
            f'{" data-yanked" if n in self.server.yanked else ""}'
            f'{" data-core-metadata=true" if n in meta else ""}>{n}</a><br/>\n' for n in names)
        self._send(f"<!DOCTYPE html><html><body>{links}</body></html>".encode(), "text/html")

    def _send(self, body: bytes, ctype: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def index() -> Iterator[_Index]:
    server = _Index(("127.0.0.1", 0), _Handler)
    server.files, server.json_form, server.yanked = _pytorch_files(), False, set()
    server.metadata, server.served = {}, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _url(server: _Index, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{server.server_address[1]}/simple/"


def _check(server: _Index, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    rc = main(["compat-check", "--index", _url(server), *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc, out + err


@pytest.mark.parametrize("json_form", [False, True], ids=["pep503-html", "pep691-json"])
def test_an_index_that_matches_compat_yaml_agrees(index: _Index, capsys: pytest.CaptureFixture[str],
                                                  json_form: bool) -> None:
    index.json_form = json_form
    rc, out = _check(index, capsys, "2.12")
    assert rc == 0, out
    assert "(PyTorch index): 2 torch releases, 2 torchvision releases compared" in out
    assert "in agreement" in out
    assert index.served == ["json" if json_form else "html"] * 2


def test_a_missing_and_an_extra_build_are_both_reported(index: _Index, capsys: pytest.CaptureFixture[str]) -> None:
    index.files["torch"] = [f for f in index.files["torch"] if not f.startswith("torch-2.12.1+cu132-")]
    index.files["torch"].append("torch-2.12.1+cu128-cp312-cp312-manylinux_2_28_x86_64.whl")
    rc, out = _check(index, capsys, "2.12.1")
    assert rc == 1
    assert "- torch 2.12.1: builds cu132" in out
    assert "+ torch 2.12.1: builds cu128" in out
    assert "2 disagreements" in out and "torch 2.12.0" not in out  # only the release asked about


def test_python_tags_a_new_release_and_a_vanished_one(index: _Index, capsys: pytest.CaptureFixture[str]) -> None:
    torch = index.files["torch"]
    torch[:] = [f for f in torch if not (f.startswith("torch-2.12.0+") and "-cp310-" in f)]
    torch.append("torch-2.12.0+cpu-cp315-cp315-manylinux_2_28_x86_64.whl")
    torch.append("torch-2.12.2+cpu-cp312-cp312-manylinux_2_28_x86_64.whl")
    index.files["torchvision"] = [f for f in index.files["torchvision"] if "0.27.1" not in f]
    rc, out = _check(index, capsys, "2.12")
    assert rc == 1
    assert "- torch 2.12.0 (cpu, cu126, cu130, cu132, rocm7.1, rocm7.2): Python cp310 (compat.yaml: 3.10-3.14)" in out
    assert "+ torch 2.12.0 (cpu): Python cp315" in out
    assert "+ torch 2.12.2: on the index, not in compat.yaml" in out
    assert "- torchvision 0.27.1: not on the index" in out


def test_a_yanked_build_is_not_an_offer(index: _Index, capsys: pytest.CaptureFixture[str]) -> None:
    index.yanked = {f for f in index.files["torch"] if f.startswith("torch-2.12.1+rocm7.2-")}
    rc, out = _check(index, capsys, "2.12")
    assert rc == 1
    assert "- torch 2.12.1: builds rocm7.2" in out


def _pypi_files() -> dict[str, list[str]]:
    files: dict[str, list[str]] = {"torch": [], "torchvision": []}
    for torch, tv in (("2.12.0", "0.27.0"), ("2.12.1", "0.27.1")):
        for cp in ("cp310", "cp311", "cp312", "cp313", "cp314"):
            files["torch"].append(f"torch-{torch}-{cp}-{cp}-manylinux_2_28_x86_64.whl")
            files["torchvision"].append(f"torchvision-{tv}-{cp}-{cp}-manylinux_2_28_x86_64.whl")
    return files


def test_pypi_default_builds_and_their_cuda(index: _Index, capsys: pytest.CaptureFixture[str]) -> None:
    index.files, index.json_form = _pypi_files(), True
    index.metadata = {f: "Metadata-Version: 2.1\nName: torch\nRequires-Dist: filelock\n"
                         "Requires-Dist: cuda-toolkit[cublas,cudart]==13.0.3; platform_system == 'Linux'\n"
                      for f in index.files["torch"]}
    rc, out = _check(index, capsys, "2.12")
    assert rc == 0, out
    assert "(PyPI)" in out and "in agreement" in out and "not checked" not in out

    late = "torch-2.12.1-cp310-cp310-manylinux_2_28_x86_64.whl"
    index.metadata = {late: "Name: torch\nRequires-Dist: nvidia-cuda-runtime-cu12 (==12.8.90)\n"}
    rc, out = _check(index, capsys, "2.12.1")
    assert rc == 1
    assert "+ torch 2.12.1: PyPI's default wheel is built for CUDA 12.8, compat.yaml says pypi_cuda 13.0" in out

    index.metadata = {}
    rc, out = _check(index, capsys, "2.12")
    assert rc == 0 and "pypi_cuda not checked: the index serves no core metadata" in out


def test_an_unreachable_index_is_a_clear_error(index: _Index, capsys: pytest.CaptureFixture[str]) -> None:
    port = index.server_address[1]
    index.shutdown()
    index.server_close()
    assert main(["compat-check", "--index", f"http://127.0.0.1:{port}/simple"]) == 5
    err = capsys.readouterr().err
    assert f"cannot reach http://127.0.0.1:{port}/simple/torch/" in err and "Traceback" not in err


def test_not_a_simple_index_and_bad_arguments(index: _Index, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compat-check", "--index", _url(index) + "nothing/here"]) == 5
    assert "HTTP 404" in capsys.readouterr().err
    assert main(["compat-check", "--index", _url(index), "2.x"]) == 2
    assert "'2.x' is not a torch release" in capsys.readouterr().err


def test_wheel_names_are_parsed_with_their_local_version() -> None:
    w = parse_wheel("torch-2.12.1+rocm7.2-cp311-cp311-manylinux_2_28_x86_64.whl")
    assert w is not None and (w.version, w.local, w.python_tags, w.linux_x86_64) == ("2.12.1", "rocm7.2",
                                                                                      ("cp311",), True)
    assert parse_wheel("torch-2.12.1.tar.gz") is None


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a test CA")
def test_https_uses_the_ca_bundle_pip_uses(index: _Index, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    index.socket = ctx.wrap_socket(index.socket, server_side=True)
    for name in ("TORCHRIG_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIP_CERT", str(cert))
    assert main(["compat-check", "--index", _url(index, "https"), "2.12"]) == 0
    assert "in agreement" in capsys.readouterr().out

    monkeypatch.setenv("PIP_CERT", str(tmp_path / "missing.pem"))
    assert main(["compat-check", "--index", _url(index, "https"), "2.12"]) == 2
    assert "missing.pem" in capsys.readouterr().err
