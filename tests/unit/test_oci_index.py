"""The OCI image index torchrig PUTs for a multi-platform tag: its document, without a registry."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from torchrig.engine.oci_index import INDEX_MEDIA_TYPE, ChildManifest, index_document, oci_platform, split_name
from torchrig.errors import RegistryError

DOCKER_V2 = "application/vnd.docker.distribution.manifest.v2+json"
_digests = st.binary(min_size=1, max_size=8).map(lambda b: "sha256:" + hashlib.sha256(b).hexdigest())
_children = st.lists(st.tuples(st.sampled_from(["linux/amd64", "linux/arm64", "linux/arm/v7", "linux/ppc64le"]),
                               _digests, st.integers(min_value=1, max_value=10**7)),
                     min_size=1, max_size=4, unique_by=lambda t: t[0])


def test_a_two_platform_index_lists_each_manifest_with_its_platform() -> None:
    amd = ChildManifest(platform="linux/amd64", media_type=DOCKER_V2, digest="sha256:" + "a" * 64, size=1234)
    arm = ChildManifest(platform="linux/arm64", media_type=DOCKER_V2, digest="sha256:" + "b" * 64, size=987)
    doc = json.loads(index_document([amd, arm], annotations={"org.opencontainers.image.ref.name": "2.0.1"}))
    assert doc["schemaVersion"] == 2 and doc["mediaType"] == INDEX_MEDIA_TYPE
    assert doc["manifests"] == [
        {"mediaType": DOCKER_V2, "digest": amd.digest, "size": 1234, "platform": {"architecture": "amd64",
                                                                                  "os": "linux"}},
        {"mediaType": DOCKER_V2, "digest": arm.digest, "size": 987, "platform": {"architecture": "arm64", "os": "linux",
                                                                                 "variant": "v8"}},
    ]


@given(_children)
def test_every_generated_index_round_trips_and_keeps_order_and_digests(children: list[tuple[str, str, int]]) -> None:
    items = [ChildManifest(platform=p, media_type=DOCKER_V2, digest=d, size=n) for p, d, n in children]
    body = index_document(items)
    doc = json.loads(body)
    assert [m["digest"] for m in doc["manifests"]] == [d for _, d, _ in children]
    assert [f"{m['platform']['os']}/{m['platform']['architecture']}" for m in doc["manifests"]] == \
        ["/".join(p.split("/")[:2]) for p, _, _ in children]
    assert index_document(items) == body  # the same bytes, so the same digest, every time


@pytest.mark.parametrize("bad", [
    [],
    [ChildManifest(platform="linux/arm64", media_type=DOCKER_V2, digest="sha256:" + "a" * 64, size=1)] * 2,
    [ChildManifest(platform="linux/arm64", media_type=DOCKER_V2, digest="", size=1)],
    [ChildManifest(platform="linux/arm64", media_type=DOCKER_V2, digest="sha256:" + "a" * 64, size=0)],
    [ChildManifest(platform="arm64", media_type=DOCKER_V2, digest="sha256:" + "a" * 64, size=1)],
])
def test_an_index_that_could_not_work_is_a_registry_error(bad: list[ChildManifest]) -> None:
    with pytest.raises(RegistryError) as e:
        index_document(bad)
    assert e.value.return_code == 5


def test_platform_objects_and_names() -> None:
    assert oci_platform("linux/arm/v7") == {"os": "linux", "architecture": "arm", "variant": "v7"}
    assert split_name("127.0.0.1:5000/torchrig-test:2.0.1-cpu-py3.11") == ("127.0.0.1:5000", "torchrig-test",
                                                                          "2.0.1-cpu-py3.11")
    assert split_name("ghcr.io/torchrig/torchrig:cpu") == ("ghcr.io", "torchrig/torchrig", "cpu")
    for name in ("torchrig:cpu", "ghcr.io/torchrig/torchrig"):
        with pytest.raises(RegistryError):
            split_name(name)
