"""Experiments: their configuration, deterministic assignment, and the exposure log.

Shared by serving (which assigns every request to a variant and logs what it showed) and
training (``make ab-report``, which joins exposures with the outcomes storefronts post to
``POST /events``). Standard library, pydantic and PyYAML only.

Configuration (``SEGREC_EXPERIMENTS_FILE``, YAML)::

    version: "2026-11-23.1"          # recorded in every exposure
    experiments:
      - name: blend-vs-popularity
        salt: blend-vs-popularity-1   # change it to reshuffle customers between variants
        start: 2026-01-01T00:00:00Z   # optional; compared with the service's clock
        stop: null                    # optional; null = open-ended
        traffic: 1.0                  # share of eligible customers in the experiment
        placements: [home, cart]      # default: every placement
        segments: null                # segment names or ids; null = every segment
        variants:
          - {name: blend, weight: 1, model: blend, rule_set: default}
          - {name: popularity, weight: 1, model: popularity}

Assignment: ``u = sha256("<salt>:<customer_id>")`` read as a number in [0, 1). A customer
with ``u < traffic`` is in the experiment and gets the variant whose cumulative weight
share first exceeds ``u / traffic``. Nothing but the salt and the pseudonymous id goes in,
so every pod and every restart assigns the same customer to the same variant. Customers
without personalisation consent are never in an experiment (serving decides that). At
most one experiment applies to a request: running experiments may not overlap on a
placement and segment (checked at load).

Exposure log (one JSON object per line, ``<directory>/exposures-YYYYMMDD-<writer>.jsonl``,
the day the exposure was served in UTC)::

    {"exposure_id": "...", "ts": "2026-11-23T10:00:00+00:00", "customer_id": "c_...",
     "experiment": "blend-vs-popularity", "variant": "blend", "placement": "home",
     "segment_id": 3, "segment_name": "Bargain hunters", "items": ["P000001", ...],
     "bundle_version": "bundle-...", "rules": ["bargain-discount"],
     "config_version": "2026-11-23.1"}

``ts`` is the service clock (the clock events are validated against, so outcomes and
exposures compare). Lines are flushed per response but not fsync-ed: an exposure is
lost only if the machine itself fails within moments of serving it, and an experiment
tolerates that where an order event would not.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from segrec.event_log import LogLine, default_writer_id, read_event_log, sanitise_writer_id

PLACEMENTS = ("home", "product", "cart", "email")
BLEND = "blend"  # the variant model that means "the bundle's per-segment blend"
EXPOSURE_PREFIX = "exposures-"


class ExperimentConfigError(ValueError):
    """An experiments file that cannot be used; the message names the file and the place."""


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    weight: float = Field(1.0, gt=0, description="Relative share of the experiment's traffic.")
    model: str = Field(BLEND, description="'blend' or one model of the bundle, alone.")
    rule_set: str | None = Field(
        None, description="Tactics rule set for this variant (default: the file's default)."
    )


class Experiment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    salt: str = Field(min_length=1, max_length=128)
    start: dt.datetime | None = None
    stop: dt.datetime | None = None
    traffic: float = Field(1.0, gt=0, le=1)
    placements: tuple[str, ...] = PLACEMENTS
    segments: tuple[str | int, ...] | None = None
    variants: tuple[Variant, ...] = Field(min_length=2)
    _cumulative_cache: tuple[tuple[str, float], ...] | None = PrivateAttr(None)

    @field_validator("placements")
    @classmethod
    def _known_placements(cls, placements: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [p for p in placements if p not in PLACEMENTS]
        if unknown or not placements:
            raise ValueError(f"unknown placements {unknown}; expected some of {list(PLACEMENTS)}")
        return placements

    @field_validator("variants")
    @classmethod
    def _distinct_variants(cls, variants: tuple[Variant, ...]) -> tuple[Variant, ...]:
        names = [v.name for v in variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names repeat: {names}")
        return variants

    @field_validator("start", "stop")
    @classmethod
    def _aware(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("needs a time zone (e.g. 2026-11-23T00:00:00Z)")
        return value

    def shares(self) -> dict[str, float]:
        """Each variant's expected share of the experiment's customers (sums to 1)."""
        total = sum(v.weight for v in self.variants)
        return {v.name: v.weight / total for v in self.variants}

    def running(self, now: dt.datetime) -> bool:
        return (self.start is None or self.start <= now) and (self.stop is None or now < self.stop)

    def targets(self, placement: str, segment_id: int | None, segment_name: str | None) -> bool:
        if placement not in self.placements:
            return False
        if self.segments is None:
            return True
        return any(s in (segment_id, segment_name) for s in self.segments)

    def assign(self, customer_id: str) -> str | None:
        """The variant of ``customer_id``, or None when outside the experiment's traffic."""
        u = unit_hash(self.salt, customer_id)
        if u >= self.traffic:
            return None
        position = u / self.traffic
        for name, upper in self._cumulative():
            if position < upper:
                return name
        return self.variants[-1].name  # floating-point rounding at the very top

    def _cumulative(self) -> tuple[tuple[str, float], ...]:
        # Computed once per (immutable) experiment: assignment runs on every request.
        cached = self._cumulative_cache
        if cached is None:
            total, running, pairs = sum(v.weight for v in self.variants), 0.0, []
            for variant in self.variants:
                running += variant.weight / total
                pairs.append((variant.name, running))
            cached = self._cumulative_cache = tuple(pairs)
        return cached


class ExperimentsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str = Field(min_length=1, max_length=64)
    experiments: tuple[Experiment, ...] = ()

    def variant_of(self, experiment: str, variant: str) -> Variant:
        for e in self.experiments:
            if e.name == experiment:
                for v in e.variants:
                    if v.name == variant:
                        return v
        raise KeyError(f"no variant {variant!r} in experiment {experiment!r}")

    def by_name(self) -> dict[str, Experiment]:
        return {e.name: e for e in self.experiments}


def unit_hash(salt: str, customer_id: str) -> float:
    """A number in [0, 1) from ``salt`` and ``customer_id`` alone (SHA-256, 53 bits)."""
    digest = hashlib.sha256(f"{salt}:{customer_id}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) / float(1 << 53)


def parse_experiments(data: Any, source: str = "<experiments>") -> ExperimentsConfig:
    """Validate a parsed YAML document; errors name ``source`` and the path inside it."""
    if data is None:
        data = {}
    try:
        config = ExperimentsConfig.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}"
            for e in error.errors(include_url=False)
        )
        raise ExperimentConfigError(f"{source}: {problems}") from None
    names = [e.name for e in config.experiments]
    if len(set(names)) != len(names):
        raise ExperimentConfigError(f"{source}: experiment names repeat: {names}")
    for experiment in config.experiments:
        if experiment.start and experiment.stop and experiment.stop <= experiment.start:
            raise ExperimentConfigError(
                f"{source}: experiments.{experiment.name}: stop {experiment.stop.isoformat()} "
                f"is not after start {experiment.start.isoformat()}"
            )
    _check_overlaps(config.experiments, source)
    return config


def load_experiments(path: Path) -> ExperimentsConfig:
    """Read and validate an experiments file (a missing file means no experiments)."""
    if not path.exists():
        return ExperimentsConfig(version="none")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ExperimentConfigError(f"{path}: not valid YAML: {error}") from None
    return parse_experiments(data, str(path))


def _check_overlaps(experiments: Sequence[Experiment], source: str) -> None:
    """Two experiments may not both claim one request: same placement, segments that can
    meet, and time windows that meet."""

    def window(e: Experiment) -> tuple[float, float]:
        return (
            e.start.timestamp() if e.start else float("-inf"),
            e.stop.timestamp() if e.stop else float("inf"),
        )

    for i, a in enumerate(experiments):
        for b in experiments[i + 1 :]:
            (a0, a1), (b0, b1) = window(a), window(b)
            if a1 <= b0 or b1 <= a0:
                continue
            shared = set(a.placements) & set(b.placements)
            segments_meet = (
                a.segments is None or b.segments is None or set(a.segments) & set(b.segments)
            )
            if shared and segments_meet:
                raise ExperimentConfigError(
                    f"{source}: experiments {a.name!r} and {b.name!r} overlap on placements "
                    f"{sorted(shared)} at the same time; give them different placements, "
                    "segments or dates"
                )


# ---- exposure log ---------------------------------------------------------------------
@dataclass(frozen=True)
class Exposure:
    customer_id: str
    experiment: str
    variant: str
    placement: str
    items: tuple[str, ...]
    ts: dt.datetime
    bundle_version: str
    config_version: str
    segment_id: int | None = None
    segment_name: str | None = None
    rules: tuple[str, ...] = ()
    churn_risk: float | None = None  # at exposure, from the customer_value view
    clv_band: str | None = None

    def as_record(self) -> dict[str, Any]:
        return {
            "exposure_id": uuid.uuid4().hex,
            "ts": self.ts.astimezone(dt.UTC).isoformat(),
            "customer_id": self.customer_id,
            "experiment": self.experiment,
            "variant": self.variant,
            "placement": self.placement,
            "segment_id": self.segment_id,
            "segment_name": self.segment_name,
            "items": list(self.items),
            "bundle_version": self.bundle_version,
            "rules": list(self.rules),
            "config_version": self.config_version,
            "churn_risk": self.churn_risk,
            "clv_band": self.clv_band,
        }


class ExposureLog:
    """Appends exposures to this writer's JSON-lines file of the day (flushed, not
    fsync-ed; see the module docstring). Safe to call from several threads."""

    def __init__(self, directory: Path, writer_id: str | None = None) -> None:
        self.directory = Path(directory)
        self.writer_id = sanitise_writer_id(writer_id or default_writer_id())
        self._lock = threading.Lock()
        self._handle: Any = None
        self._path: Path | None = None
        self.directory.mkdir(parents=True, exist_ok=True)

    def path_for(self, ts: dt.datetime) -> Path:
        day = ts.astimezone(dt.UTC).strftime("%Y%m%d")
        return self.directory / f"{EXPOSURE_PREFIX}{day}-{self.writer_id}.jsonl"

    def append(self, exposures: Sequence[Exposure]) -> int:
        if not exposures:
            return 0
        lines = "".join(
            json.dumps(e.as_record(), separators=(",", ":"), allow_nan=False) + "\n"
            for e in exposures
        )
        path = self.path_for(exposures[0].ts)
        with self._lock:
            if self._path != path:
                self._close()
                self._handle = path.open("a", encoding="utf-8")
                self._path = path
            self._handle.write(lines)
            self._handle.flush()
        return len(exposures)

    def _close(self) -> None:
        if self._handle is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
        self._handle, self._path = None, None

    def close(self) -> None:
        with self._lock:
            self._close()


def read_exposures(directory: Path) -> Iterator[LogLine]:
    """Every exposure line under ``directory``; bad lines come with an ``error``."""
    yield from read_event_log(directory, prefix=EXPOSURE_PREFIX)
