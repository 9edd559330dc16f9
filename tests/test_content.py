"""Whether a new cache would restore less than the one it replaces (dockercache.stores.content)."""

from __future__ import annotations

import json

from dockercache.stores.content import adds_nothing, cache_content


def cache(records: int, *layers: str) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.buildkit.cacheconfig.v0", "digest": "sha256:c", "size": records},
            "layers": [{"digest": f"sha256:{layer}", "size": 1} for layer in layers],
        }
    ).encode()


def test_a_cache_with_fewer_layers_or_records_adds_nothing() -> None:
    old = cache(900, "a", "b", "c")
    assert (
        adds_nothing(cache(400, "a", "b"), old)
        == "this build's cache adds nothing to it (2 layers, all in the 3 there)"
    )
    assert adds_nothing(cache(900, "a", "b", "c"), old) is not None  # the same: nothing to gain from writing it
    assert adds_nothing(cache(800, "a", "b", "c"), old) is not None  # fewer records (BuildKit 0.13's lazy export)


def test_a_cache_with_something_new_is_written() -> None:
    old = cache(900, "a", "b", "c")
    assert adds_nothing(cache(300, "a", "d"), old) is None  # a new layer: a change it holds
    assert adds_nothing(cache(950, "a", "b", "c"), old) is None  # more records over the same layers
    assert adds_nothing(b"not json", old) is None and adds_nothing(cache(1, "a"), b"{}") is None
    assert cache_content(cache(5, "x")) is not None and cache_content(b'{"manifests": []}') is None


def test_a_local_exports_index_form_is_compared_too() -> None:
    """A local export (``image-manifest=false``): an index whose descriptors are the layers and the cache config."""

    def index(records: int, *layers: str) -> bytes:
        config = {"mediaType": "application/vnd.buildkit.cacheconfig.v0", "digest": "sha256:c", "size": records}
        described = [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": f"sha256:{x}"} for x in layers
        ]
        return json.dumps({"schemaVersion": 2, "manifests": [*described, config]}).encode()

    assert adds_nothing(index(400, "a"), index(900, "a", "b")) is not None
    assert adds_nothing(index(400, "a", "z"), index(900, "a", "b")) is None
