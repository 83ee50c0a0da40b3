"""The bundle: everything serving loads from training, as numpy arrays and a JSON manifest.

Training builds a :class:`Bundle` (item-side model arrays, id maps, blend weights per
segment, filter data, popularity lists, the segment model) and writes it with
:func:`write_bundle` or :func:`save_to_bentoml`; serving reads it back with
:func:`read_bundle` or :func:`load_from_bentoml`. This module imports numpy and the
standard library only (BentoML is imported inside the two BentoML functions), so the
bundle is readable with numpy alone and nothing is ever unpickled.

Layout (``BUNDLE_FORMAT_VERSION = 1``)::

    <bundle>/
      manifest.json                 format, versions, seeds, metrics, created_at,
                                    every group's arrays (dtype, shape), every file's
                                    sha256 and size
      arrays/<group>.npz            one np.savez file per group; "models/als" is
                                    arrays/models/als.npz
      segments/segment_model.npz    the SegmentModel's own files (SegmentModel.save)
      segments/segment_model.json

Groups and the array names both sides use (other groups and arrays may be added):

- ``items``: ``product_ids`` (unicode, unique; the item index is the position), and one
  row per item in every other array, e.g. ``category`` (int code), ``in_stock`` (bool),
  ``price_band`` (int).
- ``models/<kind>``: a recommender's ``export_arrays()`` (popularity, als, svd, content,
  buy_again).
- ``blend``: ``weights`` (float, ``(n_segments + 1, n_models)``; row ``i`` is segment
  ``segment_ids[i]``, the last row is the global fallback), ``segment_ids`` (int),
  ``models`` (unicode; column ``j`` weights ``models/<models[j]>``).
- ``filters``: per category code ``categories`` (names) and ``repeat_category`` (bool:
  buying again is normal there); ``max_per_category`` (0-d int, 0 = no diversity cap).
- ``popularity``: top lists as item indices, e.g. ``global_top``, ``segment_top``
  (one row per ``segment_ids``).
- ``rerank`` (only when training kept a re-ranker): the boosted trees and their feature
  settings, as :mod:`segrec.rerank` and :mod:`segrec.trees` read them
  (:data:`segrec.rerank.ARRAYS`).

:meth:`Bundle.validate` checks ``items``, ``blend`` and ``rerank`` against these rules
when present.
Arrays must have a plain dtype (bool, numbers, fixed-width unicode or bytes, datetime);
object arrays are refused, so convert ids with :func:`unicode_ids`. Arrays read back are
read-only: serving shares them between requests.

Writing goes to a hidden sibling directory that is renamed into place when complete, so a
reader never sees a half-written bundle. Reading checks the manifest, then that every
file exists with the recorded size and sha256, and only then parses the verified bytes
with ``allow_pickle=False``; any problem raises :class:`BundleError` naming the file.
Files the manifest does not list (BentoML's ``model.yaml``) are ignored.

Example
-------
>>> import tempfile
>>> from segrec.segment_model import SegmentModel
>>> segments = SegmentModel(
...     version="seg-001", feature_names=("spend",), log_features=np.array([True]),
...     fill_values=np.array([0.0]), center=np.array([2.0]), scale=np.array([1.0]),
...     centroids=np.array([[-1.0], [1.0]]), segment_ids=np.array([1, 2]),
...     segment_names=("Light", "Heavy"))
>>> bundle = Bundle(
...     version="bundle-001",
...     arrays={"items": {"product_ids": unicode_ids(["p1", "p2"])},
...             "models/popularity": {"item_scores": np.array([0.7, 0.3])},
...             "blend": {"weights": np.array([[1.0], [1.0], [1.0]]),
...                       "segment_ids": np.array([1, 2]),
...                       "models": unicode_ids(["popularity"])}},
...     segment_model=segments,
...     versions={"data": "d1", "features": "f1", "models": "m1"})
>>> with tempfile.TemporaryDirectory() as tmp:
...     loaded = read_bundle(write_bundle(bundle, Path(tmp) / "bundle"))
>>> loaded.group("items")["product_ids"].tolist()
['p1', 'p2']
>>> loaded.versions["segments"]
'seg-001'
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from segrec import __version__
from segrec.rerank import ARRAYS as RERANK_ARRAYS
from segrec.segment_model import ARRAYS_FILE as SEGMENT_ARRAYS_FILE
from segrec.segment_model import META_FILE as SEGMENT_META_FILE
from segrec.segment_model import SegmentModel, SegmentModelError

BUNDLE_FORMAT = "segrec-bundle"
BUNDLE_FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
ARRAYS_DIR = "arrays"
SEGMENTS_DIR = "segments"
DEFAULT_MODEL_NAME = "segrec_bundle"
REQUIRED_VERSIONS = ("data", "features", "models")  # "segments" comes from the segment model

ITEMS, BLEND, FILTERS, POPULARITY = "items", "blend", "filters", "popularity"
RERANK = "rerank"
MODEL_GROUP_PREFIX = "models/"

_GROUP_NAME = re.compile(r"^[a-z0-9_]+(/[a-z0-9_]+)*$")
_ARRAY_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# bool, signed/unsigned int, float, complex, bytes, unicode, datetime64, timedelta64: all
# stored by np.save without pickle. Object ("O") and structured ("V") dtypes are refused.
_PLAIN_KINDS = frozenset("biufcSUMm")
_SEGMENT_FILES = (f"{SEGMENTS_DIR}/{SEGMENT_ARRAYS_FILE}", f"{SEGMENTS_DIR}/{SEGMENT_META_FILE}")


class BundleError(ValueError):
    """A bundle is missing, corrupted, inconsistent or of an unsupported format."""


def unicode_ids(values: Iterable[Any]) -> np.ndarray:
    """Ids of any type (e.g. a pandas object column) as a fixed-width unicode array."""
    strings = [str(value) for value in values]
    return np.array(strings, dtype=str) if strings else np.empty(0, dtype="<U1")


def group_file(group: str) -> str:
    """A group's npz path in the bundle: ``models/als`` -> ``arrays/models/als.npz``."""
    return f"{ARRAYS_DIR}/{group}.npz"


@dataclass(frozen=True, eq=False)
class Bundle:
    """Item-side arrays, blend weights, filters and the segment model, with provenance.

    ``arrays`` maps group name -> array name -> array (see the module docstring for the
    groups). ``versions`` holds the data, features and models versions (``segments`` is
    filled in from the segment model; extra keys such as ``code`` are kept). ``metrics``
    is any JSON-serialisable mapping. ``created_at`` is set when written if empty.
    ``manifest`` is the manifest the bundle was read from (empty until written and read).
    """

    version: str
    arrays: Mapping[str, Mapping[str, np.ndarray]]
    segment_model: SegmentModel
    versions: Mapping[str, str] = field(default_factory=dict)
    seeds: Mapping[str, int] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    created_at: str = ""
    manifest: Mapping[str, Any] = field(default_factory=dict)

    # ---- access ----------------------------------------------------------------------
    def group(self, name: str) -> Mapping[str, np.ndarray]:
        """The arrays of one group; a missing group raises BundleError."""
        try:
            return self.arrays[name]
        except KeyError:
            raise BundleError(
                f"bundle {self.version} has no group {name!r} (groups: {sorted(self.arrays)})"
            ) from None

    @property
    def checksums(self) -> dict[str, str]:
        """sha256 per bundle-relative file path, from the manifest (empty before writing)."""
        return {path: entry["sha256"] for path, entry in self.manifest.get("files", {}).items()}

    @property
    def model_names(self) -> tuple[str, ...]:
        """The blended models, in the column order of the blend weights."""
        return tuple(str(name) for name in self.group(BLEND)["models"])

    def blend_weights(self, segment_id: int | None) -> np.ndarray:
        """A segment's blend weights over :attr:`model_names`; the global row otherwise."""
        blend = self.group(BLEND)
        if segment_id is not None:
            rows = np.flatnonzero(blend["segment_ids"] == segment_id)
            if len(rows):
                return blend["weights"][int(rows[0])]
        return blend["weights"][-1]

    def all_versions(self) -> dict[str, str]:
        """``versions`` with ``segments`` (from the segment model) and ``bundle`` added."""
        return {
            **{str(k): str(v) for k, v in self.versions.items()},
            "segments": self.segment_model.version,
            "bundle": self.version,
        }

    # ---- checks ----------------------------------------------------------------------
    def validate(self) -> None:
        """Raise BundleError when names, dtypes, versions or the known groups are wrong."""
        if not isinstance(self.version, str) or not self.version.strip():
            raise BundleError("bundle version must be a non-empty string")
        if not isinstance(self.segment_model, SegmentModel):
            raise BundleError(
                f"segment_model must be a SegmentModel, got {type(self.segment_model).__name__}"
            )
        missing = [key for key in REQUIRED_VERSIONS if not self.versions.get(key)]
        if missing:
            raise BundleError(f"versions is missing {missing} (required: {REQUIRED_VERSIONS})")
        given = self.versions.get("segments")
        if given is not None and given != self.segment_model.version:
            raise BundleError(
                f"versions['segments'] is {given!r} but the segment model is "
                f"{self.segment_model.version!r}"
            )
        if "bundle" in self.versions and self.versions["bundle"] != self.version:
            raise BundleError(
                f"versions['bundle'] is {self.versions['bundle']!r} but the bundle version is "
                f"{self.version!r}"
            )
        for key, seed in self.seeds.items():
            if not isinstance(seed, int | np.integer) or isinstance(seed, bool):
                raise BundleError(f"seed {key!r} must be an integer, got {seed!r}")
        for group, arrays in self.arrays.items():
            if not isinstance(group, str) or not _GROUP_NAME.match(group):
                raise BundleError(
                    f"group name {group!r} must be lowercase words joined by '/' "
                    "(e.g. 'items', 'models/als')"
                )
            for name, array in arrays.items():
                _check_array(group, name, array)
        self._check_items()
        self._check_blend()
        self._check_rerank()

    def _check_items(self) -> None:
        items = self.arrays.get(ITEMS)
        if items is None:
            return
        ids = items.get("product_ids")
        if ids is None or ids.ndim != 1 or ids.dtype.kind != "U":
            raise BundleError("items needs 'product_ids', a 1-d unicode array")
        if len(np.unique(ids)) != len(ids):
            raise BundleError("items['product_ids'] has duplicates")
        for name, array in items.items():
            if array.ndim == 0 or len(array) != len(ids):
                raise BundleError(
                    f"items[{name!r}] has shape {array.shape}: every items array needs one "
                    f"row per product ({len(ids)})"
                )

    def _check_rerank(self) -> None:
        rerank = self.arrays.get(RERANK)
        absent = [] if rerank is None else [key for key in RERANK_ARRAYS if key not in rerank]
        if absent:
            # Refused when loaded rather than failing every request that would re-rank.
            raise BundleError(
                f"rerank is missing {absent}: written by an older segrec, retrain to serve it"
            )

    def _check_blend(self) -> None:
        blend = self.arrays.get(BLEND)
        if blend is None:
            return
        absent = [key for key in ("weights", "segment_ids", "models") if key not in blend]
        if absent:
            raise BundleError(f"blend is missing {absent}")
        weights, segment_ids, models = blend["weights"], blend["segment_ids"], blend["models"]
        if segment_ids.ndim != 1 or segment_ids.dtype.kind not in "iu":
            raise BundleError("blend['segment_ids'] must be a 1-d integer array")
        if models.ndim != 1 or models.dtype.kind != "U":
            raise BundleError("blend['models'] must be a 1-d unicode array")
        expected = (len(segment_ids) + 1, len(models))
        if weights.dtype.kind != "f" or weights.shape != expected:
            raise BundleError(
                f"blend['weights'] has shape {weights.shape} and dtype {weights.dtype}; "
                f"expected floats of shape {expected} (one row per segment + the global row)"
            )
        unknown = sorted(set(segment_ids.tolist()) - set(self.segment_model.segment_ids.tolist()))
        if unknown:
            raise BundleError(f"blend has weights for segments {unknown} the segment model lacks")
        absent = [str(m) for m in models if f"{MODEL_GROUP_PREFIX}{m}" not in self.arrays]
        if absent:
            raise BundleError(f"blend weights models without arrays: {absent} (need models/<name>)")


def _check_array(group: str, name: str, array: Any) -> None:
    where = f"arrays[{group!r}][{name!r}]"
    if not isinstance(name, str) or not _ARRAY_NAME.match(name):
        raise BundleError(f"{where}: array names must be Python identifiers")
    if not isinstance(array, np.ndarray):
        raise BundleError(f"{where} is a {type(array).__name__}, not a numpy array")
    if array.dtype.kind not in _PLAIN_KINDS:
        hint = " (convert ids with unicode_ids(...))" if array.dtype.kind == "O" else ""
        raise BundleError(
            f"{where} has dtype {array.dtype}: only plain dtypes (bool, numbers, fixed-width "
            f"unicode or bytes, datetime) can be stored without pickle{hint}"
        )


# ---- writing ---------------------------------------------------------------------------
def write_bundle(bundle: Bundle, directory: Path, *, overwrite: bool = False) -> Path:
    """Write ``bundle`` to ``directory`` atomically and return the directory.

    The files are written to a hidden sibling directory that is renamed to ``directory``
    once complete; on any failure it is removed and ``directory`` is left as it was. An
    existing ``directory`` is an error unless ``overwrite`` (it is then swapped out: a
    reader sees the old bundle, briefly none, then the new one, never a mixture).
    """
    bundle.validate()
    target = Path(directory)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists (pass overwrite=True to replace it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    )
    try:
        _write_files(bundle, staging)
        os.chmod(staging, 0o755)  # mkdtemp makes it private; serving may run as another user
        if target.exists():
            retired = Path(
                tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent)
            )
            os.replace(target, retired / "bundle")
            try:
                os.replace(staging, target)
            except BaseException:
                os.replace(retired / "bundle", target)  # put the old bundle back
                raise
            finally:
                shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _fsync_directory(target.parent)
    return target


def _write_files(bundle: Bundle, root: Path) -> dict[str, Any]:
    """Write every file and the manifest into the existing directory ``root``."""
    groups: dict[str, Any] = {}
    for group in sorted(bundle.arrays):
        arrays = bundle.arrays[group]
        relative = group_file(group)
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as handle:
            np.savez(handle, **{name: arrays[name] for name in sorted(arrays)})  # type: ignore[arg-type]
        groups[group] = {
            "file": relative,
            "arrays": {
                name: {"dtype": arrays[name].dtype.str, "shape": list(arrays[name].shape)}
                for name in sorted(arrays)
            },
        }
    bundle.segment_model.save(root / SEGMENTS_DIR)
    files = {}
    for relative in [*(groups[g]["file"] for g in groups), *_SEGMENT_FILES]:
        path = root / relative
        _fsync_file(path)
        files[relative] = {"sha256": _sha256(path.read_bytes()), "bytes": path.stat().st_size}
    manifest = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_FORMAT_VERSION,
        "bundle_version": bundle.version,
        "created_at": bundle.created_at
        or dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "versions": bundle.all_versions(),
        "seeds": {str(k): int(v) for k, v in bundle.seeds.items()},
        "metrics": bundle.metrics,
        "written_by": {"segrec": __version__, "numpy": np.__version__},
        "groups": groups,
        "segments": {"version": bundle.segment_model.version, "files": list(_SEGMENT_FILES)},
        "files": files,
    }
    try:
        text = json.dumps(manifest, indent=2, sort_keys=True, default=_json_default)
    except (TypeError, ValueError) as error:
        raise BundleError(f"metrics or versions are not JSON-serialisable: {error}") from error
    manifest_path = root / MANIFEST_FILE
    manifest_path.write_text(text + "\n")
    _fsync_file(manifest_path)
    return json.loads(text)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} {value!r} is not JSON-serialisable")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fsync_file(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def _fsync_directory(path: Path) -> None:
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:  # not every platform opens directories
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


# ---- reading ---------------------------------------------------------------------------
def read_bundle(directory: Path) -> Bundle:
    """Verify and load a bundle; any problem raises BundleError naming the file.

    Every file the manifest lists is checked (present, recorded size, sha256) before any
    is parsed, and the arrays are parsed from the verified bytes with
    ``allow_pickle=False``.
    """
    root = Path(directory)
    if not root.is_dir():
        raise BundleError(f"no bundle at {root}: not a directory")
    manifest = _read_manifest(root)
    contents = _verified_contents(root, manifest["files"])
    arrays = {
        group: _load_group(root, group, spec, contents[spec["file"]])
        for group, spec in manifest["groups"].items()
    }
    try:
        segment_model = SegmentModel.load(root / SEGMENTS_DIR)
    except (SegmentModelError, KeyError, TypeError, ValueError, OSError) as error:
        raise BundleError(f"{root / SEGMENTS_DIR}: segment model does not load: {error}") from error
    versions = {k: v for k, v in manifest["versions"].items() if k != "bundle"}
    bundle = Bundle(
        version=manifest["bundle_version"],
        arrays=arrays,
        segment_model=segment_model,
        versions=versions,
        seeds=manifest["seeds"],
        metrics=manifest["metrics"],
        created_at=manifest["created_at"],
        manifest=manifest,
    )
    try:
        bundle.validate()
    except BundleError as error:
        raise BundleError(f"bundle at {root} is inconsistent: {error}") from error
    return bundle


def _read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST_FILE
    if not path.is_file():
        raise BundleError(f"{path} is missing: {root} is not a complete bundle")
    try:
        manifest = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BundleError(f"{path} is not valid JSON: {error}") from error

    def invalid(reason: str) -> BundleError:
        return BundleError(f"{path} is invalid: {reason}")

    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise invalid(f"'format' is not {BUNDLE_FORMAT!r}")
    version = manifest.get("format_version")
    if version != BUNDLE_FORMAT_VERSION:
        raise BundleError(
            f"{path}: unsupported bundle format version {version!r} "
            f"(this segrec reads version {BUNDLE_FORMAT_VERSION})"
        )
    expected_types: dict[str, type | tuple[type, ...]] = {
        "bundle_version": str,
        "created_at": str,
        "versions": dict,
        "seeds": dict,
        "metrics": dict,
        "groups": dict,
        "segments": dict,
        "files": dict,
    }
    for key, kind in expected_types.items():
        if not isinstance(manifest.get(key), kind):
            raise invalid(f"{key!r} is missing or not a {getattr(kind, '__name__', kind)}")
    if not all(isinstance(v, str) for v in manifest["versions"].values()):
        raise invalid("'versions' values must be strings")
    if not all(isinstance(v, int) for v in manifest["seeds"].values()):
        raise invalid("'seeds' values must be integers")
    for relative, entry in manifest["files"].items():
        if not _safe_relative(relative):
            raise invalid(f"file path {relative!r} is not a plain path inside the bundle")
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("sha256"), str)
            or not isinstance(entry.get("bytes"), int)
        ):
            raise invalid(f"files[{relative!r}] needs 'sha256' (string) and 'bytes' (integer)")
    for group, spec in manifest["groups"].items():
        if not isinstance(group, str) or not _GROUP_NAME.match(group):
            raise invalid(f"group name {group!r} is not allowed")
        if not isinstance(spec, dict) or spec.get("file") != group_file(group):
            raise invalid(f"groups[{group!r}] must name its file {group_file(group)!r}")
        if not isinstance(spec.get("arrays"), dict):
            raise invalid(f"groups[{group!r}] needs an 'arrays' mapping")
        for name, array in spec["arrays"].items():
            if (
                not isinstance(array, dict)
                or not isinstance(array.get("dtype"), str)
                or not isinstance(array.get("shape"), list)
            ):
                raise invalid(f"groups[{group!r}][{name!r}] needs 'dtype' and 'shape'")
    listed = set(manifest["files"])
    required = [spec["file"] for spec in manifest["groups"].values()] + list(_SEGMENT_FILES)
    unlisted = [relative for relative in required if relative not in listed]
    if unlisted:
        raise invalid(f"no checksum for {unlisted}")
    return manifest


def _safe_relative(relative: Any) -> bool:
    if not isinstance(relative, str) or not relative or "\\" in relative:
        return False
    path = PurePosixPath(relative)
    return not path.is_absolute() and ".." not in path.parts and str(path) == relative


def _verified_contents(root: Path, files: Mapping[str, Any]) -> dict[str, bytes]:
    """Each listed file's bytes after checking presence, size and sha256 of all of them."""
    contents: dict[str, bytes] = {}
    problems: list[str] = []
    for relative, entry in sorted(files.items()):
        path = root / relative
        if not path.is_file():
            problems.append(f"{path} is missing")
            continue
        data = path.read_bytes()
        if len(data) != entry["bytes"]:
            problems.append(
                f"{path} is {len(data)} bytes, the manifest says {entry['bytes']} "
                f"({'truncated' if len(data) < entry['bytes'] else 'changed'})"
            )
        elif _sha256(data) != entry["sha256"]:
            problems.append(f"{path} does not match its sha256 in the manifest (checksum mismatch)")
        else:
            contents[relative] = data
    if problems:
        raise BundleError(f"bundle at {root} failed verification: " + "; ".join(problems))
    return contents


def _load_group(root: Path, group: str, spec: Mapping[str, Any], data: bytes) -> dict[str, Any]:
    path = root / spec["file"]
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as error:
        raise BundleError(f"{path} is not a readable npz file (corrupt?): {error}") from error
    if sorted(arrays) != sorted(spec["arrays"]):
        raise BundleError(
            f"{path} holds arrays {sorted(arrays)}, the manifest lists {sorted(spec['arrays'])}"
        )
    for name, array in arrays.items():
        recorded = spec["arrays"][name]
        if array.dtype.str != recorded["dtype"] or list(array.shape) != recorded["shape"]:
            raise BundleError(
                f"{path}: array {name!r} is {array.dtype.str} {list(array.shape)}, the manifest "
                f"says {recorded['dtype']} {recorded['shape']}"
            )
        array.setflags(write=False)
    return arrays


# ---- BentoML model store ---------------------------------------------------------------
def save_to_bentoml(
    bundle: Bundle,
    name: str = DEFAULT_MODEL_NAME,
    *,
    labels: Mapping[str, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> str:
    """Save ``bundle`` as a BentoML model (same files as :func:`write_bundle`); its tag.

    Labels default to the bundle's versions (``data_version``, ``features_version``,
    ``segments_version``, ``models_version``, ``bundle_version``, ``bundle_format``);
    metadata to ``created_at``, ``versions``, ``seeds``, the top-level scalar ``metrics``
    and ``manifest_sha256``. Given ``labels`` and ``metadata`` are added over these.
    """
    import bentoml

    bundle.validate()
    with tempfile.TemporaryDirectory(prefix="segrec-bundle-") as scratch:
        staging = Path(scratch)
        manifest = _write_files(bundle, staging)
        default_labels = {f"{key}_version": value for key, value in manifest["versions"].items()}
        default_labels["bundle_format"] = str(BUNDLE_FORMAT_VERSION)
        default_metadata = {
            "created_at": manifest["created_at"],
            "versions": manifest["versions"],
            "seeds": manifest["seeds"],
            "metrics": {
                key: value
                for key, value in manifest["metrics"].items()
                if isinstance(value, bool | int | float | str)
            },
            "manifest_sha256": _sha256((staging / MANIFEST_FILE).read_bytes()),
        }
        with bentoml.models.create(
            name,
            labels={**default_labels, **(labels or {})},
            metadata=_jsonable({**default_metadata, **(metadata or {})}),
        ) as model:
            shutil.copytree(staging, model.path, dirs_exist_ok=True)
    return str(model.tag)


def _jsonable(value: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(value, default=_json_default))


def load_from_bentoml(tag: str = f"{DEFAULT_MODEL_NAME}:latest") -> Bundle:
    """Find a bundle in the BentoML model store and read it with :func:`read_bundle`.

    Besides the per-file checks, the manifest must match the sha256 recorded in the
    model's metadata when it was saved.
    """
    import bentoml
    from bentoml.exceptions import BentoMLException

    try:
        model = bentoml.models.get(tag)
    except BentoMLException as error:
        raise BundleError(f"no bundle {tag!r} in the BentoML model store: {error}") from error
    root = Path(model.path)
    recorded = model.info.metadata.get("manifest_sha256")
    manifest = root / MANIFEST_FILE
    if recorded is not None and manifest.is_file() and _sha256(manifest.read_bytes()) != recorded:
        raise BundleError(f"{manifest} does not match the manifest_sha256 of model {model.tag}")
    return read_bundle(root)


def bentoml_bundle_versions(name: str = DEFAULT_MODEL_NAME) -> dict[str, str]:
    """Bundle version -> BentoML model tag, for every bundle in the BentoML model store
    (BentoML names its own versions; the bundle's is in the ``bundle_version`` label).
    Empty when BentoML is not installed."""
    try:
        import bentoml
        from bentoml.exceptions import NotFound
    except ImportError:
        return {}
    try:
        models = bentoml.models.list(name)
    except NotFound:  # BentoML's answer for "none under that name"
        return {}
    return {
        model.info.labels["bundle_version"]: str(model.tag)
        for model in models
        if "bundle_version" in model.info.labels
    }
