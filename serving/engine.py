"""The request path, without HTTP: features in, a ranked carousel with reasons out.

Per request: read the customer's features online (``customer_serving_v3``), decide how
personal the answer can be (fallback reasons), find the segment (stored, or assigned
live with the bundle's numpy segment model when the live session moved the customer),
rebuild what is known of the customer's behaviour (the recent history ``make train``
wrote online plus the live session that ``POST /events`` keeps), score every item with
every model from the bundle's arrays, blend with the segment's weights (cold-start
weights for customers with little history), re-rank the blend's best candidates with the
bundle's boosted trees when training kept them, add the placement's context (the product on
a product page, the basket on the cart page), apply the business filters and return the
top k with each part's contribution. Numpy only: no training library is imported.

Batches (``recommend_many``) read every customer's features in one online-store call and
normalise and blend all of them in one array operation.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from segrec.blend import COLD_START, COLD_START_EVENTS, NO_SEGMENT, blend, normalise
from segrec.bundle import RERANK, Bundle
from segrec.experiments import BLEND
from segrec.filters import FilterRules
from segrec.lifecycle import LifecycleRules
from segrec.online_features import FeatureVector
from segrec.rerank import rerank
from segrec.scoring import EVENT_TYPES, CustomerState, score_candidates, unit_rows
from segrec.trees import walk_arrays
from serving.personalisation import Assignment, Personalisation
from serving.tactics import NO_TACTICS, RULE_FEATURES, AppliedTactics, Catalogue

OPTIONAL_VIEWS = ("customer_session:", "customer_value:")
PLACEMENTS = ("home", "product", "cart", "email")
SessionPolicy = Literal["exclude", "boost", "keep"]
DAY_SECONDS = 86_400.0
VIEW = EVENT_TYPES.index("view")
CART = EVENT_TYPES.index("add_to_cart")
PURCHASE = EVENT_TYPES.index("purchase")
# Model kind -> the customer feature rows it reads, from Feast feature names.
CUSTOMER_ROWS = {
    "als": {"user_factors": "als_factors"},
    "svd": {"user_factors": "svd_factors", "user_bias": "svd_bias"},
}


class FeatureSource(Protocol):
    def read_many(self, entity_ids: Sequence[str]) -> list[FeatureVector]: ...


@dataclass(frozen=True)
class ServingPolicy:
    """How the live session and the page shape a carousel (from the settings)."""

    viewed: SessionPolicy = "exclude"  # items viewed in this session
    carted: SessionPolicy = "exclude"  # items in the basket
    session_boost: float = 0.1  # added to a boosted item's blended score (which is in [0, 1])
    context_weight: float = 1.0  # weight of similarity to the page's product or basket


@dataclass(frozen=True)
class RecommendRequest:
    customer_id: str
    k: int = 10
    placement: str = "home"
    product_id: str | None = None
    category: str | None = None
    exclude: tuple[str, ...] = ()


@dataclass
class Recommendation:
    items: list[dict[str, Any]]
    segment: dict[str, Any] | None
    lifecycle_stage: str | None
    bundle_version: str
    fallback: str | None  # why the answer is not fully personalised, else None
    missing_features: list[str] = field(default_factory=list)
    live_session: bool = False  # the live session shaped this answer
    tactics: AppliedTactics = NO_TACTICS
    experiment: Assignment | None = None
    # churn_risk, clv_band, clv_expected when the customer_value view has them, else None
    customer_value: dict[str, Any] | None = None

    def as_json(self, customer_id: str) -> dict[str, Any]:
        """The HTTP answer for ``customer_id`` (every front end returns the same)."""
        return {
            "customer_id": customer_id,
            "items": self.items,
            "segment": self.segment,
            "lifecycle_stage": self.lifecycle_stage,
            "bundle_version": self.bundle_version,
            "fallback": self.fallback,
            "live_session": self.live_session,
            "tactics": self.tactics.as_json(),
            "experiment": None if self.experiment is None else self.experiment.as_json(),
            "customer_value": self.customer_value,
        }


@dataclass
class _Customer:
    """What one request knows about its customer, before scoring."""

    vector: FeatureVector
    fallback: str | None
    personal: bool
    segment: dict[str, Any] | None = None
    lifecycle: str | None = None
    items: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    types: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))
    age_days: np.ndarray = field(default_factory=lambda: np.zeros(0))
    session_items: dict[str, np.ndarray] = field(default_factory=dict)
    bought: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    live: bool = False  # events since training: the session changed the history

    @property
    def segment_id(self) -> int | None:
        return None if self.segment is None else int(self.segment["id"])


class RecommendationEngine:
    """Scores and ranks for one bundle and one online feature source."""

    def __init__(
        self,
        bundle: Bundle,
        features: FeatureSource,
        *,
        clock: Callable[[], dt.datetime] | None = None,
        policy: ServingPolicy | None = None,
        personalisation: Personalisation | None = None,
    ) -> None:
        self.bundle = bundle
        self.features = features
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.policy = policy or ServingPolicy()
        items = bundle.group("items")
        filters = bundle.group("filters")
        self.product_ids = items["product_ids"]
        self.product_names = [str(p) for p in self.product_ids]  # answers need Python str
        self.index_of = {p: i for i, p in enumerate(self.product_names)}
        self.category = items["category"]
        self.category_names = filters["categories"]
        self.rules = FilterRules(
            in_stock=items["in_stock"],
            category=self.category,
            repeat_category=filters["repeat_category"],
            max_per_category=int(filters["max_per_category"]),
        )
        self.models = list(bundle.model_names)
        # float32 in the bundle (half the size); float64 once here, so scoring multiplies the
        # matrices in place instead of converting a copy on every request.
        self.model_arrays = {
            name: {
                key: value.astype(np.float64) if value.dtype == np.float32 else value
                for key, value in bundle.group(f"models/{name}").items()
            }
            for name in self.models
        }
        self.kinds = {name: str(self.model_arrays[name]["kind"]) for name in self.models}
        blend_group = bundle.group("blend")
        self.cold_weights = blend_group.get("cold_weights")
        # The re-ranker, when training found one better than the blend on validation,
        # with its trees laid out for the walk once rather than on every request.
        rerank_group = bundle.arrays.get(RERANK)
        self.rerank_arrays = (
            None if rerank_group is None else {**rerank_group, **walk_arrays(rerank_group)}
        )
        launch = [
            self.model_arrays[m]["launch_age_days"]
            for m in self.models
            if self.kinds[m] == "new_arrivals"
        ]
        self.launch_age_days = (
            np.asarray(launch[0], np.float64) if launch else np.zeros(len(self.product_ids))
        )
        self.popularity_only = np.array([1.0 if m == "popularity" else 0.0 for m in self.models])
        self.lifecycle = LifecycleRules()
        self.catalogue = Catalogue(
            category_names=[str(c) for c in self.category_names],
            item_category=self.category,
            item_price_band=items.get("price_band", np.full(len(self.category), 3)),
            model_names=list(self.models),
            segment_names=list(bundle.segment_model.segment_names),
        )
        # Swapped whole when the tactics or experiments files change (one attribute store).
        self.personalisation = personalisation or Personalisation()
        # Unit item vectors for "similar" and the page context, computed once: content
        # vectors say "the same kind of thing", ALS factors "bought by the same people".
        self.item_spaces: dict[str, np.ndarray] = {}
        for name in self.models:
            arrays = self.model_arrays[name]
            vectors = arrays.get("item_vectors")
            if vectors is None and self.kinds[name] == "als":
                vectors = arrays.get("item_factors")
            if vectors is not None:
                self.item_spaces[name] = unit_rows(np.asarray(vectors, dtype=np.float64))

    @property
    def segments_version(self) -> str:
        return str(self.bundle.segment_model.version)

    def categories_by_product(self) -> dict[str, str]:
        """Category name of every product id (the live session records categories)."""
        return {
            str(p): str(self.category_names[c])
            for p, c in zip(self.product_ids, self.category, strict=True)
        }

    # ---- what is known about the customer --------------------------------------------
    def _indices(self, product_ids: Sequence[Any] | np.ndarray | None) -> np.ndarray:
        found = [self.index_of.get(str(p), -1) for p in (product_ids or [])]
        return np.array([i for i in found if i >= 0], dtype=np.int64)

    def _customer(self, vector: FeatureVector, now: float) -> _Customer:
        fallback = _fallback(vector)
        customer = _Customer(vector, fallback, personal=fallback in (None, "missing_features"))
        if not customer.personal:
            return customer
        values = vector.values
        history_items = list(values.get("history_items") or [])
        history_types = list(values.get("history_types") or [])
        history_unix = list(values.get("history_unix") or [])
        # The three lists are written together; a torn row keeps what lines up.
        known = min(len(history_items), len(history_types), len(history_unix))
        index_of = self.index_of
        known_items = [index_of.get(str(p), -1) for p in history_items[:known]]
        session_at = float(values.get("last_event_unix") or 0)
        session = {
            "viewed": self._indices(values.get("viewed_items")),
            "carted": self._indices(values.get("carted_items")),
            "purchased": self._indices(values.get("purchased_items")),
        }
        session_events = [
            (int(i), code)
            for key, code in (("viewed", VIEW), ("carted", CART), ("purchased", PURCHASE))
            for i in session[key]
        ]
        # Session lists are newest first without timestamps: they all count as of the
        # session's last event, which is minutes old at most.
        items = np.array(known_items + [i for i, _ in session_events], np.int64)
        types = np.array(history_types[:known] + [t for _, t in session_events], np.int8)
        stamps = np.array(history_unix[:known] + [session_at] * len(session_events), np.float64)
        customer.items, customer.types = items, types
        customer.age_days = np.maximum(now - stamps, 0.0) / DAY_SECONDS
        customer.session_items = session
        customer.live = bool(session_events)
        history_bought = self._indices(values.get("history_purchases"))
        customer.bought = np.concatenate([history_bought, session["purchased"]])
        idle = None
        if customer.live:
            idle = max(now - session_at, 0.0) / DAY_SECONDS
        customer.segment = self._segment(values, idle)
        customer.lifecycle = self._lifecycle(values, idle)
        return customer

    def _segment(self, values: dict[str, Any], idle_days: float | None) -> dict[str, Any] | None:
        model = self.bundle.segment_model
        stored = values.get("segment_id")
        version = values.get("segment_version")
        stored_id = (
            int(stored)
            if stored is not None and stored == stored and version == model.version
            else None
        )
        if stored_id is not None and idle_days is None:
            segment_id = stored_id
            return {
                "id": segment_id,
                "name": values.get("segment_name") or model.name_of(segment_id),
                "version": model.version,
                "probability": values.get("segment_probability"),
                "assigned": "stored",
            }
        if not any(values.get(name) is not None for name in model.feature_names):
            return None
        live_values = values if idle_days is None else _recency_now(values, idle_days)
        segment_id, name, probability = model.assign_features(live_values)
        answer = {
            "id": segment_id,
            "name": name,
            "version": model.version,
            "probability": round(probability, 4),
            "assigned": "live",
        }
        if stored_id is not None and stored_id != segment_id:
            answer["stored_id"] = stored_id
        return answer

    def _lifecycle(self, values: dict[str, Any], idle_days: float | None) -> str | None:
        stored = values.get("lifecycle_stage")
        if stored and stored != "unknown" and idle_days is None:
            return str(stored)
        tenure = values.get("tenure_days")
        if tenure is None or tenure != tenure:
            return None
        if idle_days is None:
            idle = values.get("days_since_last_event")
            idle_days = None if idle is None or idle != idle else float(idle)
        return self.lifecycle.assign_one(
            float(tenure), idle_days, float(values.get("frequency") or 0)
        )

    def _weights(self, customer: _Customer, model: str | None = None) -> np.ndarray:
        if not customer.personal:
            # Nothing personal may be used: global popularity alone.
            return self.popularity_only
        if model is not None and model in self.models:
            # An experiment variant or a rule chose one model alone.
            return np.array([1.0 if m == model else 0.0 for m in self.models])
        if self._group(customer) == COLD_START and self.cold_weights is not None:
            return np.asarray(self.cold_weights, dtype=np.float64)
        return np.asarray(self.bundle.blend_weights(customer.segment_id), dtype=np.float64)

    def blend_answers(self, customer: _Customer, model: str | None) -> bool:
        """Whether the blend ranks for this customer, so the re-ranker may reorder it: not
        when one model answers alone (an experiment's or a rule's ``model``, or popularity
        for a customer nothing personal may be used for)."""
        return customer.personal and (model is None or model not in self.models)

    def _group(self, customer: _Customer) -> int:
        """The customer's blend group, as training's: cold start, else the segment."""
        has_factors = bool(customer.vector.values.get("als_factors"))
        if len(customer.items) < COLD_START_EVENTS and not has_factors:
            return COLD_START
        return NO_SEGMENT if customer.segment_id is None else customer.segment_id

    def _rerank_lifts(
        self,
        customers: Sequence[_Customer],
        blended: Sequence[bool],
        normalised: np.ndarray,
        totals: np.ndarray,
        now: float,
    ) -> np.ndarray | None:
        """How much the re-ranker changes each item's score (requests, items; negative
        when it moved an item down), for the requests the blend ranks (``blended``);
        None without a re-ranker."""
        arrays = self.rerank_arrays
        rows = [n for n, uses in enumerate(blended) if uses]
        if arrays is None or not rows:
            return None
        # Launch ages were measured at the data's end; the events' ages are as of now.
        shift = (now - float(arrays["reference_unix"])) / DAY_SECONDS
        reranked = rerank(
            arrays,
            normalised[rows],
            totals[rows],
            [
                CustomerState(items=c.items, types=c.types, age_days=c.age_days)
                for c in (customers[n] for n in rows)
            ],
            [self._group(customers[n]) for n in rows],
            self.launch_age_days + shift,
            arrays["unseen"],
        )
        lifts = np.zeros_like(totals)
        lifts[rows] = reranked - totals[rows]
        return lifts

    def _scores(self, customer: _Customer) -> np.ndarray:
        """Every model's scores over every item, (models, items)."""
        values = customer.vector.values
        events = CustomerState(
            items=customer.items,
            types=customer.types,
            age_days=customer.age_days,
            segment=customer.segment_id if customer.segment_id is not None else -1,
        )
        rows = []
        for name in self.models:
            kind = self.kinds[name]
            features = {
                key: np.asarray(values[feature])
                for key, feature in CUSTOMER_ROWS.get(kind, {}).items()
                if customer.personal and values.get(feature) not in (None, [])
            }
            if kind == "svd" and "user_factors" in features and "user_bias" not in features:
                features.pop("user_factors")
            if kind == "als" and customer.live:
                # Events since training: fold the customer in again from history plus
                # session, instead of the factors that predate the session.
                features.pop("user_factors", None)
            state = events.with_features(features)
            rows.append(score_candidates(kind, self.model_arrays[name], state))
        return np.vstack(rows)

    def _context(self, request: RecommendRequest, customer: _Customer) -> np.ndarray | None:
        """Similarity to what the page shows: the product (product page) or the basket
        (cart page); None when the page has no context."""
        anchors = np.zeros(0, np.int64)
        if request.placement == "product" and request.product_id:
            anchors = self._indices([request.product_id])
        elif request.placement == "cart":
            anchors = customer.session_items.get("carted", anchors)
        if not len(anchors) or not self.item_spaces:
            return None
        similarity = np.zeros(len(self.product_ids))
        for unit in self.item_spaces.values():
            similarity += (unit @ unit[anchors].T).mean(axis=1)
        similarity /= len(self.item_spaces)
        return np.clip(similarity, 0.0, None)

    # ---- endpoints --------------------------------------------------------------------
    def recommend(
        self,
        customer_id: str,
        k: int = 10,
        *,
        placement: str = "home",
        product_id: str | None = None,
        category: str | None = None,
        exclude: Sequence[str] | None = None,
    ) -> Recommendation:
        request = RecommendRequest(
            customer_id, k, placement, product_id, category, tuple(exclude or ())
        )
        return self.recommend_many([request])[0]

    def recommend_many(
        self,
        requests: Sequence[RecommendRequest],
        vectors: Mapping[str, FeatureVector] | None = None,
    ) -> list[Recommendation]:
        """One answer per request; one online-store read for all of them, unless the
        caller read the features already (``vectors`` by customer id, as the async service
        does to wait for the store without holding a thread)."""
        if not requests:
            return []
        ids = list(dict.fromkeys(r.customer_id for r in requests))
        if vectors is None:
            vectors = dict(zip(ids, self.features.read_many(ids), strict=True))
        moment = self.clock()
        now = moment.timestamp()
        customers = {c: self._customer(vectors[c], now) for c in ids}
        chosen = [customers[r.customer_id] for r in requests]
        personalisation = self.personalisation  # one version for the whole batch
        assignments = [
            personalisation.assign(r.customer_id, r.placement, c.segment, moment)
            if c.personal
            else None
            for r, c in zip(requests, chosen, strict=True)
        ]
        applied = [
            personalisation.tactics.evaluate(
                self._facts(r, c, now),
                personal=c.personal,
                rule_set=a.rule_set if a is not None else None,
            )
            for r, c, a in zip(requests, chosen, assignments, strict=True)
        ]
        scores = np.stack([self._scores(c) for c in chosen])  # (requests, models, items)
        choices = [_model_choice(a, t) for a, t in zip(assignments, applied, strict=True)]
        weights = np.stack(
            [self._weights(c, choice) for c, choice in zip(chosen, choices, strict=True)]
        )  # (requests, models)
        normalised = normalise(scores)
        totals, parts = blend(normalised, weights)
        blended = [self.blend_answers(c, choice) for c, choice in zip(chosen, choices, strict=True)]
        lifts = self._rerank_lifts(chosen, blended, normalised, totals, now)
        return [
            self._rank(
                request,
                customer,
                totals[n],
                parts[n],
                applied[n],
                assignments[n],
                None if lifts is None else lifts[n],
            )
            for n, (request, customer) in enumerate(zip(requests, chosen, strict=True))
        ]

    def _facts(self, request: RecommendRequest, customer: _Customer, now: float) -> dict[str, Any]:
        """What tactics rules can test for this request (:data:`serving.tactics.RULE_FEATURES`)."""
        facts: dict[str, Any] = {
            "placement": request.placement,
            "known_customer": customer.personal,
        }
        if not customer.personal:
            return facts
        values = customer.vector.values
        for name in RULE_FEATURES:
            value = values.get(name)
            if value is not None and not (isinstance(value, float) and value != value):
                facts[name] = value
        if customer.segment is not None:
            facts["segment_id"] = customer.segment["id"]
            facts["segment_name"] = customer.segment["name"]
        facts["lifecycle_stage"] = customer.lifecycle
        session_at = values.get("last_event_unix")
        facts["live_session"] = bool(session_at)
        facts["cart_items"] = len(customer.session_items.get("carted", ()))
        if session_at:
            facts["minutes_since_last_event"] = max(now - float(session_at), 0.0) / 60.0
        return facts

    async def recommend_many_async(
        self, requests: Sequence[RecommendRequest]
    ) -> list[Recommendation]:
        """:meth:`recommend_many` for an event loop: awaits the read when the feature
        source can read asynchronously (the service's time-budgeted pool), then scores on
        the loop; no thread hop for the CPU work, which holds the GIL either way."""
        ids = list(dict.fromkeys(r.customer_id for r in requests))
        read_async = getattr(self.features, "read_many_async", None)
        if read_async is None:
            return self.recommend_many(requests)
        vectors = await read_async(ids)
        return self.recommend_many(requests, dict(zip(ids, vectors, strict=True)))

    def _rank(
        self,
        request: RecommendRequest,
        customer: _Customer,
        total: np.ndarray,
        parts: np.ndarray,
        applied: AppliedTactics = NO_TACTICS,
        assignment: Assignment | None = None,
        lift: np.ndarray | None = None,
    ) -> Recommendation:
        extras: dict[str, np.ndarray] = {}
        if lift is not None:
            # The re-ranker's order, on the blend's scale (segrec.rerank).
            extras["reranker"] = lift
        # A product page's context needs no consent: it is the page, not the customer.
        context = self._context(request, customer)
        if context is not None:
            extras["context"] = self.policy.context_weight * context
        allowed = self.rules.allowed(customer.bought)
        blocked = list(request.exclude) + ([request.product_id] if request.product_id else [])
        allowed[self._indices(blocked)] = False
        boost = np.zeros(len(total))
        for key, policy in (("viewed", self.policy.viewed), ("carted", self.policy.carted)):
            session = customer.session_items.get(key)
            if session is None or not len(session):
                continue
            if policy == "exclude" or (key == "carted" and request.placement == "cart"):
                allowed[session] = False
            elif policy == "boost":
                boost[session] = self.policy.session_boost
        if boost.any():
            extras["session"] = boost
        if applied.boost is not None:
            extras["tactic"] = applied.boost
        if applied.filter is not None:
            allowed &= applied.filter
        if request.category is not None:
            matches = np.flatnonzero(self.category_names == request.category)
            allowed &= self.category == (matches[0] if len(matches) else -1)
        final = total + sum(extras.values(), np.zeros(len(total)))
        ranked = _best(final, allowed, 4 * request.k)
        chosen = self.rules.diversify(ranked, request.k)
        return Recommendation(
            items=self._items(chosen, final, parts, extras),
            segment=customer.segment,
            lifecycle_stage=customer.lifecycle,
            bundle_version=self.bundle.version,
            fallback=customer.fallback,
            missing_features=customer.vector.missing,
            live_session=customer.live,
            tactics=applied,
            experiment=assignment,
            customer_value=_customer_value(customer),
        )

    def _items(
        self,
        chosen: np.ndarray,
        final: np.ndarray,
        parts: np.ndarray,
        extras: Mapping[str, np.ndarray],
    ) -> list[dict[str, Any]]:
        """The answer's items with each part's contribution. The chosen columns become
        Python floats in one call each: indexing numpy scalars one by one cost more than
        the scoring of some models."""
        names = [*self.models, *extras]
        columns = np.vstack([parts[:, chosen], *(v[chosen] for v in extras.values())])
        return [
            {
                "product_id": self.product_names[i],
                "score": score,
                # Non-zero to 6 decimals: the re-ranker's is negative when it moved an
                # item down.
                "contributions": {m: c for m, c in zip(names, column, strict=True) if c != 0},
            }
            for i, score, column in zip(
                chosen.tolist(),
                np.round(final[chosen], 6).tolist(),
                np.round(columns, 6).T.tolist(),
                strict=True,
            )
        ]

    def segment(self, customer_id: str) -> dict[str, Any]:
        """The customer's segment, lifecycle stage and the features the segment rests on."""
        vector = self.features.read_many([customer_id])[0]
        customer = self._customer(vector, self.clock().timestamp())
        model = self.bundle.segment_model
        values = dict(vector.values)
        if customer.live:
            # What the live segment was assigned from: the session is activity now.
            now = self.clock().timestamp()
            idle = max(now - float(values.get("last_event_unix") or now), 0.0) / DAY_SECONDS
            values = _recency_now(values, idle)
        profile = (
            {name: _plain(values.get(name)) for name in model.feature_names}
            if customer.personal
            else {}
        )
        return {
            "customer_id": customer_id,
            "segment": customer.segment,
            "lifecycle_stage": customer.lifecycle,
            "profile": profile,
            "customer_value": _customer_value(customer),
            "fallback": customer.fallback,
        }

    def similar(self, product_id: str, k: int = 10) -> list[dict[str, Any]]:
        """Items like ``product_id``: content vectors and ALS item factors, averaged."""
        index = self.index_of.get(str(product_id))
        if index is None:
            raise KeyError(f"unknown product_id {product_id!r}")
        if not self.item_spaces:
            return []
        combined = sum(unit @ unit[index] for unit in self.item_spaces.values())
        combined = np.asarray(combined) / len(self.item_spaces)
        allowed = self.rules.allowed()
        allowed[index] = False
        items, scores = _top(combined, allowed, k)
        return [
            {"product_id": str(self.product_ids[i]), "score": round(float(s), 6)}
            for i, s in zip(items, scores, strict=True)
        ]

    def smoke_test(self) -> None:
        """Raise if this bundle cannot answer: a cold and a popularity-only request over
        defaults, no store involved (used before a bundle starts serving)."""
        empty = FeatureVector(entity_id="smoke", values={"consent_personalisation": True})
        customer = self._customer(empty, self.clock().timestamp())
        scores = self._scores(customer)
        if scores.shape != (len(self.models), len(self.product_ids)):
            raise ValueError(f"bundle scores have shape {scores.shape}")
        total, parts = blend(normalise(scores[None]), self._weights(customer)[None])
        answer = self._rank(RecommendRequest("smoke", k=5), customer, total[0], parts[0])
        if not answer.items or not np.isfinite([i["score"] for i in answer.items]).all():
            raise ValueError("bundle produced no finite recommendation for a cold customer")


def _recency_now(values: dict[str, Any], idle_days: float) -> dict[str, Any]:
    """``values`` with recency as of the live session: the session is activity now, and
    recency is what moves a customer between segments between two training runs. Missed
    visits (idle days times the customer's visit rate) scale with the idle days."""
    live = {**values, "days_since_last_event": idle_days}
    stored_idle = _number(values.get("days_since_last_event"))
    missed = _number(values.get("missed_visits"))
    if missed is not None and stored_idle is not None and stored_idle > 0:
        live["missed_visits"] = missed * idle_days / stored_idle
    return live


def _number(value: Any) -> float | None:
    """A known number, or None (missing, NaN, text)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return None
    return float(value)


def _model_choice(assignment: Assignment | None, applied: AppliedTactics) -> str | None:
    """The model to use alone, if any: an experiment variant's choice wins over a rule's
    (the experiment is what is being measured)."""
    if assignment is not None and assignment.model != BLEND:
        return assignment.model
    return applied.model if applied.model not in (None, BLEND) else None


def _best(scores: np.ndarray, allowed: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` best allowed items, best first, ties to the lower index: a partial sort,
    since only a carousel's worth of thousands of items is ever shown."""
    candidates = np.flatnonzero(allowed)
    values = scores[candidates]
    if n < len(candidates):
        # Keep everything tied with the n-th best so the tie-break sees them all.
        kth = np.partition(values, len(values) - n)[len(values) - n]
        keep = values >= kth
        candidates, values = candidates[keep], values[keep]
    return candidates[np.lexsort((candidates, -values))][:n]


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


def _customer_value(customer: _Customer) -> dict[str, Any] | None:
    """Churn risk and CLV from the ``customer_value`` view, for the answer and the
    exposure log (reports break experiments down by them); None when not scored."""
    if not customer.personal:
        return None
    # Missing features carry the view's defaults (clv_band "unknown"): not a score.
    missing = set(customer.vector.missing)
    found = {
        name: customer.vector.values.get(name)
        for name in ("churn_risk", "clv_band", "clv_expected")
        if f"customer_value:{name}" not in missing
    }
    if not found:
        return None
    band = found.get("clv_band")
    return {
        "churn_risk": _plain(found.get("churn_risk")),
        "clv_band": band if isinstance(band, str) else None,
        "clv_expected": _plain(found.get("clv_expected")),
    }


def _fallback(vector: FeatureVector) -> str | None:
    """Why this answer cannot be fully personal, or None when it can."""
    if vector.error:
        return "store_unavailable"
    if "customer_profile:consent_personalisation" in vector.missing:
        return "unknown_customer"
    if vector.values.get("consent_personalisation") is not True:
        return "no_consent"
    # Session features are absent for anyone without a live session, and churn/CLV for
    # anyone the value models did not score (only tactics rules read them): not gaps in
    # what personalises the carousel.
    gaps = [m for m in vector.missing if not m.startswith(OPTIONAL_VIEWS)]
    return "missing_features" if gaps else None
