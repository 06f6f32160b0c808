"""Docker's progress streams, recorded: a build or push that fails inside the stream must raise, with the log."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from torchrig.engine.stream import BuildStream, TransferStream
from torchrig.errors import BuildError, RegistryError

# Recorded from `client.api.build(..., decode=True)` on Docker 20.10 (legacy builder), shortened.
OK_BUILD: list[dict[str, Any]] = [
    {"stream": "Step 1/4 : FROM torchrig-base:bookworm"}, {"stream": "\n"},
    {"stream": " ---> 0a25401fb265\n"},
    {"stream": "Step 2/4 : RUN python3 -m venv /opt/venv"}, {"stream": "\n"},
    {"stream": " ---> Using cache\n"}, {"stream": " ---> c44c85566919\n"},
    {"stream": "Step 3/4 : COPY tasks /opt/torchrig/tasks\n"},
    {"stream": " ---> 9a0e1c7d2b11\n"},
    {"stream": "Step 4/4 : LABEL io.torchrig.env=cpu\n"},
    {"stream": " ---> Running in 4023b4addd9b\n"}, {"stream": "Removing intermediate container 4023b4addd9b\n"},
    {"stream": " ---> 1a64a74fcbb2\n"},
    {"aux": {"ID": "sha256:" + "1a64a74fcbb2" + "0" * 52}},
    {"stream": "Successfully built 1a64a74fcbb2\n"},
]
FAILED_BUILD: list[dict[str, Any]] = [
    {"stream": "Step 1/3 : FROM torchrig-base:bookworm\n"}, {"stream": " ---> 0a25401fb265\n"},
    {"stream": "Step 2/3 : RUN echo about to fail && exit 3\n"},
    {"stream": " ---> Running in 5e0f6c1b2a3d\n"}, {"stream": "about to fail\n"},
    {"errorDetail": {"code": 3, "message": "The command '/bin/sh -c echo about to fail && exit 3' returned a "
                                           "non-zero code: 3"},
     "error": "The command '/bin/sh -c echo about to fail && exit 3' returned a non-zero code: 3"},
]


def _clock() -> Any:
    counter = itertools.count()
    return lambda: float(next(counter))


def test_a_successful_build_yields_its_id_and_per_step_progress() -> None:
    lines: list[str] = []
    stream = BuildStream(label="cpu/runtime", log=lines.append, clock=_clock())
    image_id = stream.consume(OK_BUILD)
    assert image_id == "sha256:1a64a74fcbb2" + "0" * 52
    assert [(s.number, s.total, s.cached) for s in stream.steps] == [(1, 4, False), (2, 4, True), (3, 4, False),
                                                                      (4, 4, False)]
    progress = [ln for ln in lines if "] step " in ln]
    assert len(progress) == 4
    assert progress[1].startswith("[cpu/runtime ") and "step 2/4: RUN python3 -m venv /opt/venv" in progress[1]


def test_an_error_in_the_stream_is_a_build_error_with_the_last_lines() -> None:
    stream = BuildStream(label="broken/runtime", log=lambda _: None, clock=_clock())
    with pytest.raises(BuildError) as e:
        stream.consume(FAILED_BUILD)
    msg = str(e.value)
    assert "building broken/runtime failed at step 2/3" in msg
    assert "returned a non-zero code: 3" in msg
    assert "  | about to fail" in msg
    assert "No image was tagged" in msg


def test_a_stream_that_ends_without_an_image_is_a_failure() -> None:
    with pytest.raises(BuildError, match="without an image id"):
        BuildStream(label="x", log=lambda _: None).consume(OK_BUILD[:4])


def test_only_the_last_lines_are_kept() -> None:
    items = [{"stream": f"line {i}\n"} for i in range(100)] + [{"error": "boom"}]
    with pytest.raises(BuildError) as e:
        BuildStream(label="x", log=lambda _: None, tail_lines=5).consume(items)
    assert "line 99" in str(e.value) and "line 94" not in str(e.value)


def test_an_id_from_the_legacy_success_line_is_enough() -> None:
    stream = BuildStream(label="x", log=lambda _: None)
    assert stream.consume([*OK_BUILD[:2], {"stream": "Successfully built 1a64a74fcbb2\n"}]) == "1a64a74fcbb2"


# Recorded from `client.api.push(..., stream=True, decode=True)` to a registry that is not running.
DEAD_PUSH: list[dict[str, Any]] = [
    {"status": "The push refers to repository [127.0.0.1:5999/torchrig]"},
    {"status": "Preparing", "progressDetail": {}, "id": "5f70bf18a086"},
    {"errorDetail": {"message": 'Get "https://127.0.0.1:5999/v2/": dial tcp 127.0.0.1:5999: connect: connection '
                                "refused"},
     "error": 'Get "https://127.0.0.1:5999/v2/": dial tcp 127.0.0.1:5999: connect: connection refused'},
]
OK_PUSH: list[dict[str, Any]] = [
    {"status": "The push refers to repository [127.0.0.1:5000/torchrig]"},
    {"status": "Preparing", "progressDetail": {}, "id": "5f70bf18a086"},
    {"status": "Preparing", "progressDetail": {}, "id": "b0a7c1f2d3e4"},
    {"status": "Pushing", "progressDetail": {"current": 512, "total": 2048}, "id": "5f70bf18a086"},
    {"status": "Pushed", "progressDetail": {}, "id": "5f70bf18a086"},
    {"status": "Layer already exists", "progressDetail": {}, "id": "b0a7c1f2d3e4"},
    {"status": "small: digest: sha256:" + "e" * 64 + " size: 741"},
    {"progressDetail": {}, "aux": {"Tag": "small", "Digest": "sha256:" + "e" * 64, "Size": 741}},
]


def test_a_push_to_a_dead_registry_raises_with_what_to_do() -> None:
    stream = TransferStream(action="push", ref="127.0.0.1:5999/torchrig:cpu", registry="127.0.0.1:5999",
                            log=lambda _: None)
    with pytest.raises(RegistryError) as e:
        stream.consume(DEAD_PUSH)
    msg = str(e.value)
    assert "cannot reach registry 127.0.0.1:5999: is it running? Set TORCHRIG_REGISTRY" in msg
    assert "connection refused" in msg


def test_a_push_reports_per_layer_bytes_and_the_digest() -> None:
    lines: list[str] = []
    stream = TransferStream(action="push", ref="127.0.0.1:5000/torchrig:small", registry="127.0.0.1:5000",
                            log=lines.append, clock=_clock(), every_s=0)
    stream.consume(OK_PUSH)
    assert stream.digest == "sha256:" + "e" * 64
    assert stream.done == {"5f70bf18a086", "b0a7c1f2d3e4"}
    assert any("layer 5f70bf18a086: Pushed (0.0 MB)" in ln for ln in lines)
    assert any("0.0/0.0 MB" in ln or "MB transferred" in ln for ln in lines)
    assert "2/2 layers" in lines[-1]


@pytest.mark.parametrize(("message", "hint"), [
    ("unauthorized: authentication required", "docker login"),
    ("http: server gave HTTP response to HTTPS client", "insecure-registries"),
    ("manifest for 127.0.0.1:5000/torchrig:cpu not found: manifest unknown", "push it first"),
])
def test_registry_errors_say_what_to_do(message: str, hint: str) -> None:
    with pytest.raises(RegistryError, match=hint):
        TransferStream(action="pull", ref="r/x:y", registry="r", log=lambda _: None).feed({"error": message})
