"""The bundle contract: round trip, verification before loading, atomic writes, BentoML."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from segrec.bundle import (
    BUNDLE_FORMAT_VERSION,
    MANIFEST_FILE,
    Bundle,
    BundleError,
    group_file,
    read_bundle,
    unicode_ids,
    write_bundle,
)
from segrec.segment_model import SegmentModel

PROJECT_ROOT = Path(__file__).resolve().parent.parent
N_ITEMS = 6


def make_segment_model() -> SegmentModel:
    return SegmentModel(
        version="seg-001",
        feature_names=("spend", "visits"),
        log_features=np.array([True, False]),
        fill_values=np.array([0.0, 1.0]),
        center=np.array([2.0, 3.0]),
        scale=np.array([1.0, 2.0]),
        centroids=np.array([[-1.0, 0.0], [1.0, 0.5], [0.0, -1.0]]),
        segment_ids=np.array([1, 2, 3]),
        segment_names=("Light", "Heavy", "Lapsed"),
        softness=0.5,
        metadata={"k": 3},
    )


def make_bundle(**overrides: Any) -> Bundle:
    rng = np.random.default_rng(42)
    arrays = {
        "items": {
            "product_ids": unicode_ids(f"p-{i:03d}" for i in range(N_ITEMS)),
            "category": np.array([0, 1, 0, 2, 1, 2], dtype=np.int64),
            "in_stock": np.array([True, True, False, True, True, False]),
            "price_band": np.array([1, 2, 3, 1, 2, 3], dtype=np.int8),
            "added_on": np.array(["2026-01-0" + str(i + 1) for i in range(N_ITEMS)], "M8[D]"),
        },
        "models/popularity": {
            "item_scores": rng.random(N_ITEMS),
            "segment_scores": rng.random((3, N_ITEMS)),
        },
        "models/als": {
            "item_factors": rng.random((N_ITEMS, 4), dtype=np.float32),
            "yty": np.eye(4, dtype=np.float32),
            "regularization": np.array(0.01),
        },
        "models/buy_again": {},
        "blend": {
            "weights": np.array(
                [[0.2, 0.8, 0.0], [0.5, 0.3, 0.2], [0.6, 0.2, 0.2], [0.4, 0.4, 0.2]],
                dtype=np.float32,
            ),
            "segment_ids": np.array([1, 2, 3], dtype=np.int64),
            "models": unicode_ids(["popularity", "als", "buy_again"]),
        },
        "filters": {
            "categories": unicode_ids(["food", "toys", "tools"]),
            "repeat_category": np.array([True, False, False]),
            "max_per_category": np.array(2, dtype=np.int64),
        },
        "popularity": {
            "global_top": np.array([3, 0, 1], dtype=np.int64),
            "segment_top": np.array([[0, 1, 3], [3, 4, 0], [1, 0, 3]], dtype=np.uint32),
            "segment_ids": np.array([1, 2, 3], dtype=np.int64),
        },
    }
    fields: dict[str, Any] = {
        "version": "bundle-001",
        "arrays": arrays,
        "segment_model": make_segment_model(),
        "versions": {"data": "data-abc", "features": "feat-2", "models": "models-7"},
        "seeds": {"split": 42, "als": 7},
        "metrics": {"ndcg@10": 0.31, "per_segment": {"1": {"ndcg@10": 0.25}}, "k": 10},
    }
    return Bundle(**(fields | overrides))


def assert_same_bundle(loaded: Bundle, original: Bundle) -> None:
    assert loaded.version == original.version
    assert set(loaded.arrays) == set(original.arrays)
    for group, arrays in original.arrays.items():
        assert set(loaded.arrays[group]) == set(arrays), group
        for name, array in arrays.items():
            got = loaded.arrays[group][name]
            assert got.dtype == array.dtype, (group, name)
            assert got.shape == array.shape, (group, name)
            np.testing.assert_array_equal(got, array)
    assert dict(loaded.versions) == {**original.versions, "segments": "seg-001"}
    assert dict(loaded.seeds) == dict(original.seeds)
    assert dict(loaded.metrics) == dict(original.metrics)
    segments, expected = loaded.segment_model, original.segment_model
    assert segments.version == expected.version
    assert segments.segment_names == expected.segment_names
    np.testing.assert_array_equal(segments.centroids, expected.centroids)
    rows = np.array([[1.0, 2.0], [300.0, 9.0], [np.nan, 0.0]])
    for got_part, want_part in zip(segments.assign(rows), expected.assign(rows), strict=True):
        np.testing.assert_array_equal(got_part, want_part)


@pytest.fixture
def written(tmp_path: Path) -> Path:
    return write_bundle(make_bundle(), tmp_path / "bundle")


def edit_manifest(root: Path, change: Any) -> None:
    path = root / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


# ---- round trip and layout -------------------------------------------------------------
def test_round_trip_keeps_every_array_dtype_and_the_segment_model(written: Path) -> None:
    original = make_bundle()
    loaded = read_bundle(written)
    assert_same_bundle(loaded, original)
    assert loaded.created_at.endswith("Z")
    assert loaded.model_names == ("popularity", "als", "buy_again")
    assert loaded.group("items")["product_ids"].dtype.kind == "U"
    with pytest.raises(ValueError, match="read-only"):
        loaded.group("models/als")["item_factors"][0, 0] = 1.0


def test_layout_is_plain_npz_and_json_with_a_checksum_per_file(written: Path) -> None:
    manifest = json.loads((written / MANIFEST_FILE).read_text())
    expected_files = {
        "arrays/items.npz",
        "arrays/models/popularity.npz",
        "arrays/models/als.npz",
        "arrays/models/buy_again.npz",
        "arrays/blend.npz",
        "arrays/filters.npz",
        "arrays/popularity.npz",
        "segments/segment_model.npz",
        "segments/segment_model.json",
    }
    assert set(manifest["files"]) == expected_files
    assert manifest["format_version"] == BUNDLE_FORMAT_VERSION
    assert manifest["versions"] == {
        "data": "data-abc",
        "features": "feat-2",
        "models": "models-7",
        "segments": "seg-001",
        "bundle": "bundle-001",
    }
    assert manifest["groups"]["models/als"]["arrays"]["item_factors"] == {
        "dtype": "<f4",
        "shape": [N_ITEMS, 4],
    }
    # Readable with numpy alone, without pickle.
    with np.load(written / group_file("items"), allow_pickle=False) as items:
        assert items["product_ids"].tolist()[:2] == ["p-000", "p-001"]
    assert read_bundle(written).checksums == {
        path: entry["sha256"] for path, entry in manifest["files"].items()
    }
    assert sorted(p.name for p in written.parent.iterdir()) == ["bundle"]  # no staging left


def test_blend_weights_by_segment_with_global_fallback(written: Path) -> None:
    bundle = read_bundle(written)
    np.testing.assert_allclose(bundle.blend_weights(2), [0.5, 0.3, 0.2])
    np.testing.assert_allclose(bundle.blend_weights(99), [0.4, 0.4, 0.2])
    np.testing.assert_allclose(bundle.blend_weights(None), [0.4, 0.4, 0.2])
    with pytest.raises(BundleError, match="no group 'nope'"):
        bundle.group("nope")


# ---- verification before loading ------------------------------------------------------
def test_tampered_file_is_named(written: Path) -> None:
    path = written / "arrays/models/als.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different content
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"arrays/models/als\.npz.*checksum mismatch"):
        read_bundle(written)


def test_truncated_npz_is_named(written: Path) -> None:
    path = written / "arrays/items.npz"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(BundleError, match=r"arrays/items\.npz is \d+ bytes.*truncated"):
        read_bundle(written)


def test_corrupt_npz_with_matching_checksum_is_named(written: Path) -> None:
    """Even a manifest rewritten to match a broken file fails cleanly while parsing."""
    import hashlib

    path = written / "arrays/items.npz"
    path.write_bytes(path.read_bytes()[:100])

    def match(manifest: dict[str, Any]) -> None:
        entry = manifest["files"]["arrays/items.npz"]
        entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        entry["bytes"] = 100

    edit_manifest(written, match)
    with pytest.raises(BundleError, match=r"arrays/items\.npz is not a readable npz"):
        read_bundle(written)


@pytest.mark.parametrize(
    "relative", ["arrays/blend.npz", "segments/segment_model.json", MANIFEST_FILE]
)
def test_missing_file_is_named(written: Path, relative: str) -> None:
    (written / relative).unlink()
    with pytest.raises(BundleError, match=rf"{relative.replace('.', '[.]')} is missing"):
        read_bundle(written)


def test_every_problem_is_reported_at_once(written: Path) -> None:
    (written / "arrays/blend.npz").unlink()
    (written / "arrays/filters.npz").write_bytes(b"garbage")
    with pytest.raises(BundleError) as error:
        read_bundle(written)
    assert "blend.npz is missing" in str(error.value)
    assert "filters.npz is 7 bytes" in str(error.value)


def test_unsupported_format_version(written: Path) -> None:
    edit_manifest(written, lambda manifest: manifest.update(format_version=99))
    with pytest.raises(BundleError, match=r"manifest\.json: unsupported bundle format version 99"):
        read_bundle(written)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.pop("files"), "'files' is missing"),
        (lambda m: m.update(format="other"), "'format' is not"),
        (lambda m: m["files"].pop("arrays/items.npz"), r"no checksum for \['arrays/items\.npz'\]"),
        (
            lambda m: m["files"].update({"../outside.npz": {"sha256": "0", "bytes": 1}}),
            r"file path '\.\./outside\.npz' is not a plain path inside the bundle",
        ),
        (lambda m: m["seeds"].update(split="42"), "'seeds' values must be integers"),
    ],
    ids=["no-files", "wrong-format", "unlisted-file", "path-escape", "bad-seed"],
)
def test_invalid_manifest(written: Path, change: Any, message: str) -> None:
    edit_manifest(written, change)
    with pytest.raises(BundleError, match=rf"manifest\.json is invalid: {message}"):
        read_bundle(written)


def test_manifest_that_is_not_json(written: Path) -> None:
    (written / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(BundleError, match=r"manifest\.json is not valid JSON"):
        read_bundle(written)


def test_not_a_bundle_directory(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not a directory"):
        read_bundle(tmp_path / "absent")
    with pytest.raises(BundleError, match=r"manifest\.json is missing"):
        read_bundle(tmp_path)


def test_npz_holding_a_pickle_is_refused(written: Path) -> None:
    """A bundle file swapped for one with an object array (and a matching manifest entry)
    is refused while parsing: nothing is unpickled."""
    import hashlib

    path = written / "arrays/filters.npz"
    np.savez(path, categories=np.array(["food", 1], dtype=object))

    def match(manifest: dict[str, Any]) -> None:
        data = path.read_bytes()
        manifest["files"]["arrays/filters.npz"] = {
            "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
        }

    edit_manifest(written, match)
    with pytest.raises(BundleError, match=r"arrays/filters\.npz is not a readable npz"):
        read_bundle(written)


# ---- writing ---------------------------------------------------------------------------
def test_object_array_is_rejected_at_write(tmp_path: Path) -> None:
    bundle = make_bundle()
    arrays = {**bundle.arrays, "items": {**bundle.arrays["items"]}}
    arrays["items"]["product_ids"] = np.array(["p-000", 1, 2, 3, 4, 5], dtype=object)
    with pytest.raises(BundleError, match=r"arrays\['items'\]\['product_ids'\] has dtype object"):
        write_bundle(make_bundle(arrays=arrays), tmp_path / "bundle")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("group", "name", "value", "message"),
    [
        ("items", "in_stock", np.array([True]), r"items\['in_stock'\] has shape \(1,\)"),
        ("blend", "weights", np.ones((3, 3)), r"blend\['weights'\] has shape \(3, 3\)"),
        (
            "blend",
            "models",
            unicode_ids(["popularity", "als", "svd"]),
            r"without arrays: \['svd'\]",
        ),
        ("blend", "segment_ids", np.array([1, 2, 9]), r"segments \[9\] the segment model lacks"),
        ("Bad Group", "x", np.ones(1), "group name 'Bad Group'"),
        ("filters", "not-an-identifier", np.ones(1), "Python identifiers"),
        ("filters", "plain_list", [1, 2], "not a numpy array"),
        # A re-ranker without the arrays this segrec reads (one written before the
        # per-group gate, say) is refused, not left to fail every request it would rank.
        (
            "rerank",
            "depth",
            np.asarray(50),
            r"rerank is missing \['groups', 'reranked_groups', 'history_events'.*retrain",
        ),
    ],
)
def test_inconsistent_bundle_is_rejected_at_write(
    tmp_path: Path, group: str, name: str, value: Any, message: str
) -> None:
    bundle = make_bundle()
    arrays = {k: dict(v) for k, v in bundle.arrays.items()}
    arrays.setdefault(group, {})[name] = value
    with pytest.raises(BundleError, match=message):
        write_bundle(make_bundle(arrays=arrays), tmp_path / "bundle")


def test_versions_must_be_complete_and_consistent(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"versions is missing \['features'\]"):
        write_bundle(make_bundle(versions={"data": "d", "models": "m"}), tmp_path / "a")
    versions = {"data": "d", "features": "f", "models": "m", "segments": "seg-999"}
    with pytest.raises(BundleError, match="the segment model is 'seg-001'"):
        write_bundle(make_bundle(versions=versions), tmp_path / "b")
    with pytest.raises(BundleError, match="not JSON-serialisable"):
        write_bundle(make_bundle(metrics={"when": object()}), tmp_path / "c")
    assert list(tmp_path.iterdir()) == []


def fail_to_save(self: SegmentModel, directory: Path) -> Path:
    """A SegmentModel.save that dies after the array groups were written."""
    raise OSError("disk full")


def test_failed_write_leaves_no_partial_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SegmentModel, "save", fail_to_save)
    with pytest.raises(OSError, match="disk full"):
        write_bundle(make_bundle(), tmp_path / "bundle")
    assert list(tmp_path.iterdir()) == []


def test_existing_bundle_is_kept_unless_overwrite(
    written: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(FileExistsError):
        write_bundle(make_bundle(version="bundle-002"), written)
    assert read_bundle(written).version == "bundle-001"

    original_save = SegmentModel.save
    monkeypatch.setattr(SegmentModel, "save", fail_to_save)
    with pytest.raises(OSError, match="disk full"):
        write_bundle(make_bundle(version="bundle-002"), written, overwrite=True)
    assert read_bundle(written).version == "bundle-001"  # a failed overwrite keeps the old

    monkeypatch.setattr(SegmentModel, "save", original_save)
    write_bundle(make_bundle(version="bundle-002"), written, overwrite=True)
    assert read_bundle(written).version == "bundle-002"
    assert sorted(p.name for p in written.parent.iterdir()) == ["bundle"]


# ---- dependencies ----------------------------------------------------------------------
def test_import_pulls_in_no_training_or_serving_framework() -> None:
    code = (
        "import sys, segrec.bundle; "
        "print(sorted(m for m in ('bentoml', 'pandas', 'sklearn', 'surprise', 'implicit', "
        "'feast', 'scipy') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PROJECT_ROOT
    )
    assert result.stdout.strip() == "[]"


# ---- BentoML model store ---------------------------------------------------------------
BENTOML_SCRIPT = """
import json, sys
from pathlib import Path

import bentoml
from segrec.bundle import BundleError, load_from_bentoml, read_bundle, save_to_bentoml

source = read_bundle(Path(sys.argv[1]))
tag = save_to_bentoml(source, labels={"stage": "test"}, metadata={"note": "round trip"})
model = bentoml.models.get(tag)
latest = load_from_bentoml()
out = {
    "tag": tag,
    "path": model.path,
    "labels": model.info.labels,
    "metadata": model.info.metadata,
    "latest_version": latest.version,
    "latest_tag": str(bentoml.models.get("segrec_bundle:latest").tag),
}
try:
    load_from_bentoml("segrec_bundle:doesnotexist")
except BundleError as error:
    out["missing"] = str(error)

# A second copy whose files are tampered with in the store must not load.
tampered = save_to_bentoml(source, name="segrec_tampered")
path = Path(bentoml.models.get(tampered).path) / "arrays/blend.npz"
path.write_bytes(path.read_bytes()[:-1] + b"x")
try:
    load_from_bentoml(tampered)
except BundleError as error:
    out["tampered"] = str(error)
print("RESULT " + json.dumps(out))
"""


@pytest.mark.integration
def test_bentoml_save_and_load_round_trip(written: Path, tmp_path: Path) -> None:
    home = tmp_path / "bentoml_home"
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True"}
    result = subprocess.run(
        [sys.executable, "-c", BENTOML_SCRIPT, str(written)],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT "))
    out = json.loads(line.removeprefix("RESULT "))

    assert out["tag"].startswith("segrec_bundle:")
    assert out["latest_tag"] == out["tag"]
    assert Path(out["path"]).is_relative_to(home)
    assert out["labels"] == {
        "data_version": "data-abc",
        "features_version": "feat-2",
        "models_version": "models-7",
        "segments_version": "seg-001",
        "bundle_version": "bundle-001",
        "bundle_format": str(BUNDLE_FORMAT_VERSION),
        "stage": "test",
    }
    metadata = out["metadata"]
    assert metadata["metrics"] == {"ndcg@10": 0.31, "k": 10}  # the scalar, key metrics
    assert metadata["seeds"] == {"split": 42, "als": 7}
    assert metadata["versions"]["bundle"] == "bundle-001"
    assert metadata["note"] == "round trip"
    assert len(metadata["manifest_sha256"]) == 64
    assert out["latest_version"] == "bundle-001"
    assert "segrec_bundle:doesnotexist" in out["missing"]
    assert "arrays/blend.npz" in out["tampered"] and "checksum mismatch" in out["tampered"]

    # The stored model directory is a complete bundle (plus BentoML's model.yaml).
    stored = Path(out["path"])
    assert (stored / "model.yaml").is_file()
    assert_same_bundle(read_bundle(stored), make_bundle())
