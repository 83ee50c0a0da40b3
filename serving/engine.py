"""The request path, without HTTP: features in, a ranked carousel with reasons out.

Per request: read the customer's features online (``customer_serving_v2``), decide how
personal the answer can be (fallback reasons), find the segment (stored, or assigned
live with the bundle's numpy segment model), score every item with every model from the
bundle's arrays, blend with the segment's weights (cold-start weights for customers with
little history), apply the business filters and return the top k with each model's
contribution. Numpy only: no training library is imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from segrec.blend import blend, normalise
from segrec.bundle import Bundle
from segrec.filters import FilterRules
from segrec.lifecycle import LifecycleRules
from segrec.online_features import FeatureVector
from segrec.scoring import EVENT_TYPES, CustomerState, score_candidates

COLD_START_EVENTS = 5  # as in training: fewer known events than this = cold start
PLACEMENTS = ("home", "product", "cart", "email")
# Model kind -> the customer feature rows it reads, from Feast feature names.
CUSTOMER_ROWS = {
    "als": {"user_factors": "als_factors"},
    "svd": {"user_factors": "svd_factors", "user_bias": "svd_bias"},
}


class FeatureSource(Protocol):
    def read(self, entity_id: str) -> FeatureVector: ...


@dataclass
class Recommendation:
    items: list[dict[str, Any]]
    segment: dict[str, Any] | None
    lifecycle_stage: str | None
    bundle_version: str
    fallback: str | None  # why the answer is not fully personalised, else None
    missing_features: list[str] = field(default_factory=list)


class RecommendationEngine:
    """Scores and ranks for one bundle and one online feature source."""

    def __init__(self, bundle: Bundle, features: FeatureSource) -> None:
        self.bundle = bundle
        self.features = features
        items = bundle.group("items")
        filters = bundle.group("filters")
        self.product_ids = items["product_ids"]
        self.index_of = {str(p): i for i, p in enumerate(self.product_ids)}
        self.category = items["category"]
        self.category_names = filters["categories"]
        self.rules = FilterRules(
            in_stock=items["in_stock"],
            category=self.category,
            repeat_category=filters["repeat_category"],
            max_per_category=int(filters["max_per_category"]),
        )
        self.models = list(bundle.model_names)
        self.model_arrays = {name: bundle.group(f"models/{name}") for name in self.models}
        self.kinds = {name: str(self.model_arrays[name]["kind"]) for name in self.models}
        blend_group = bundle.group("blend")
        self.cold_weights = blend_group.get("cold_weights")
        self.lifecycle = LifecycleRules()

    # ---- helpers ----------------------------------------------------------------------
    def _indices(self, product_ids: list[str] | np.ndarray) -> np.ndarray:
        found = [self.index_of.get(str(p), -1) for p in product_ids]
        return np.array([i for i in found if i >= 0], dtype=np.int64)

    def _session_state(self, values: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        viewed = self._indices(list(values.get("viewed_items") or []))
        carted = self._indices(list(values.get("carted_items") or []))
        items = np.concatenate([viewed, carted])
        types = np.concatenate(
            [
                np.full(len(viewed), EVENT_TYPES.index("view"), dtype=np.int8),
                np.full(len(carted), EVENT_TYPES.index("add_to_cart"), dtype=np.int8),
            ]
        )
        return items, types

    def _segment(self, vector: FeatureVector) -> dict[str, Any] | None:
        values = vector.values
        model = self.bundle.segment_model
        stored = values.get("segment_id")
        version = values.get("segment_version")
        if stored is not None and stored == stored and version == model.version:
            segment_id = int(stored)
            return {
                "id": segment_id,
                "name": values.get("segment_name") or model.name_of(segment_id),
                "version": model.version,
                "probability": values.get("segment_probability"),
                "assigned": "stored",
            }
        if not any(values.get(name) is not None for name in model.feature_names):
            return None
        segment_id, name, probability = model.assign_features(values)
        return {
            "id": segment_id,
            "name": name,
            "version": model.version,
            "probability": round(probability, 4),
            "assigned": "live",
        }

    def _lifecycle(self, values: dict[str, Any]) -> str | None:
        stored = values.get("lifecycle_stage")
        if stored and stored != "unknown":
            return str(stored)
        tenure = values.get("tenure_days")
        if tenure is None or tenure != tenure:
            return None
        idle = values.get("days_since_last_event")
        idle = None if idle is None or idle != idle else float(idle)
        return self.lifecycle.assign_one(float(tenure), idle, float(values.get("frequency") or 0))

    def _weights(self, segment_id: int | None, cold: bool) -> np.ndarray:
        if cold and self.cold_weights is not None:
            return np.asarray(self.cold_weights, dtype=np.float64)
        return np.asarray(self.bundle.blend_weights(segment_id), dtype=np.float64)

    # ---- endpoints --------------------------------------------------------------------
    def recommend(
        self,
        customer_id: str,
        k: int = 10,
        *,
        placement: str = "home",
        product_id: str | None = None,
        category: str | None = None,
        exclude: list[str] | None = None,
    ) -> Recommendation:
        vector = self.features.read(customer_id)
        values = vector.values
        fallback = _fallback(vector)
        personal = fallback in (None, "missing_features")
        segment = self._segment(vector) if personal else None
        segment_id = None if segment is None else int(segment["id"])
        items, types = self._session_state(values) if personal else (np.zeros(0, np.int64),) * 2
        frequency = float(values.get("frequency") or 0)
        cold = (
            personal
            and (frequency + len(items) < COLD_START_EVENTS)
            and not values.get("als_factors")
        )
        weights = self._weights(segment_id, cold or not personal)
        if not personal:
            # Nothing personal may be used: global popularity alone.
            weights = np.array([1.0 if m == "popularity" else 0.0 for m in self.models])
        scores = []
        for name in self.models:
            kind = self.kinds[name]
            rows = {
                key: np.asarray(values[feature])
                for key, feature in CUSTOMER_ROWS.get(kind, {}).items()
                if personal and values.get(feature) not in (None, [])
            }
            if kind == "svd" and "user_factors" in rows and "user_bias" not in rows:
                rows.pop("user_factors")
            state = CustomerState(
                items=items,
                types=types,
                age_days=np.zeros(len(items)),
                segment=segment_id if segment_id is not None else -1,
                features=rows,
            )
            scores.append(score_candidates(kind, self.model_arrays[name], state))
        normalised = normalise(np.vstack(scores))
        total, parts = blend(normalised, weights)
        allowed = self.rules.allowed()  # stock; purchase history is not online (yet)
        blocked = list(exclude or []) + ([product_id] if product_id else [])
        if placement == "cart":
            blocked += list(values.get("carted_items") or [])
        allowed[self._indices(blocked)] = False
        if category is not None:
            matches = np.flatnonzero(self.category_names == category)
            allowed &= self.category == (matches[0] if len(matches) else -1)
        ranked = np.argsort(-np.where(allowed, total, -np.inf), kind="stable")
        ranked = ranked[allowed[ranked]][: max(4 * k, k)]
        chosen = self.rules.diversify(ranked, k)
        return Recommendation(
            items=[
                {
                    "product_id": str(self.product_ids[i]),
                    "score": round(float(total[i]), 6),
                    "contributions": {
                        m: round(float(parts[j, i]), 6)
                        for j, m in enumerate(self.models)
                        if parts[j, i] > 0
                    },
                }
                for i in chosen
            ],
            segment=segment,
            lifecycle_stage=self._lifecycle(values) if personal else None,
            bundle_version=self.bundle.version,
            fallback=fallback,
            missing_features=vector.missing,
        )

    def segment(self, customer_id: str) -> dict[str, Any]:
        """The customer's segment, lifecycle stage and the features the segment rests on."""
        vector = self.features.read(customer_id)
        fallback = _fallback(vector)
        personal = fallback in (None, "missing_features")
        segment = self._segment(vector) if personal else None
        model = self.bundle.segment_model
        profile = (
            {name: _plain(vector.values.get(name)) for name in model.feature_names}
            if personal
            else {}
        )
        return {
            "customer_id": customer_id,
            "segment": segment,
            "lifecycle_stage": self._lifecycle(vector.values) if personal else None,
            "profile": profile,
            "fallback": fallback,
        }

    def similar(self, product_id: str, k: int = 10) -> list[dict[str, Any]]:
        """Items like ``product_id``: content vectors and ALS item factors, averaged."""
        index = self.index_of.get(str(product_id))
        if index is None:
            raise KeyError(f"unknown product_id {product_id!r}")
        combined = np.zeros(len(self.product_ids))
        sources = []
        for name in self.models:
            arrays = self.model_arrays[name]
            vectors = arrays.get("item_vectors")
            if vectors is None:
                vectors = arrays.get("item_factors") if self.kinds[name] == "als" else None
            if vectors is None:
                continue
            unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
            combined += unit @ unit[index]
            sources.append(name)
        if not sources:
            return []
        combined /= len(sources)
        allowed = self.rules.allowed()
        allowed[index] = False
        items, scores = _top(combined, allowed, k)
        return [
            {"product_id": str(self.product_ids[i]), "score": round(float(s), 6)}
            for i, s in zip(items, scores, strict=True)
        ]


def _top(scores: np.ndarray, allowed: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    masked = np.where(allowed, scores, -np.inf)
    order = np.argsort(-masked, kind="stable")[:k]
    order = order[np.isfinite(masked[order])]
    return order, masked[order]


def _plain(value: Any) -> float | None:
    """A JSON-ready number: NaN (unknown) becomes None."""
    if value is None or isinstance(value, str):
        return None
    number = float(value)
    return None if number != number else round(number, 4)


def _fallback(vector: FeatureVector) -> str | None:
    """Why this answer cannot be fully personal, or None when it can."""
    if vector.error:
        return "store_unavailable"
    if "customer_profile:consent_personalisation" in vector.missing:
        return "unknown_customer"
    if vector.values.get("consent_personalisation") is not True:
        return "no_consent"
    # Session features are absent for anyone without a live session: not a gap.
    gaps = [m for m in vector.missing if not m.startswith("customer_session:")]
    return "missing_features" if gaps else None
