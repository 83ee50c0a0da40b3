"""Content-based recommendations from product text and attributes (scikit-learn).

Product vector = the weighted concatenation of four blocks, each L2-normalised per
product first so that its weight, not its width, sets its influence:

- text: TF-IDF (words and bigrams, sublinear tf) of title, description and tags;
- category: one-hot;
- brand: one-hot;
- price band: one-hot of the price's quantile band in the catalogue (missing price =
  its own band),

optionally reduced with TruncatedSVD (LSA), then L2-normalised, so a dot product is a
cosine. A customer's profile is the unit-length, event-weighted and recency-weighted mean
of the vectors of the products they interacted with. Products nobody has touched yet
still have a vector: this is the cold-start path for new products, and it powers
"similar items".
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import OneHotEncoder, normalize
from sklearn.utils import check_random_state, check_scalar

from segrec.scoring import (
    CustomerState,
    content_profile,
    similar_by_vectors,
    top_k,
)
from training.models.base import Recommender
from training.models.interactions import EventWeights, Interactions

NEIGHBOUR_BLOCK = 1024


class Content(Recommender):
    """Cosine between a customer's profile and product content vectors.

    Needs ``Interactions`` built with ``products`` (columns ``title``, ``description``,
    ``category``, ``brand``, ``price``; ``tags`` optional).

    Parameters
    ----------
    max_features : int, default=5000
        Vocabulary size of the TF-IDF block.
    embedding_size : int or None, default=128
        TruncatedSVD dimensions; None keeps the sparse vectors (as dense arrays).
        Capped at the number of features minus one.
    text_weight, category_weight, brand_weight, price_weight : float
        Block weights, defaults 1.0, 1.0, 0.5, 0.5.
    price_bands : int, default=4
        Number of quantile price bands.
    event_weights : EventWeights, default=EventWeights()
        Weight of each event type in the profile.
    half_life_days : float or None, default=90.0
        Recency half-life of an event in the profile; None = no decay.
    n_neighbours : int, default=20
        Similar items exported per item (``neighbours``).
    random_state : int, RandomState or None, default=None
        Seeds TruncatedSVD.

    Attributes
    ----------
    item_vectors_ : ndarray of shape (n_items, d), float32, unit rows
    profiles_ : ndarray of shape (n_customers, d), float32
        Customer profiles at the training reference time.
    neighbours_ : ndarray of shape (n_items, n_neighbours), int
        Most similar items per item, best first (-1 pads a tiny catalogue).
    neighbour_scores_ : ndarray of shape (n_items, n_neighbours)
        Their cosines (NaN where padded).
    vectorizer_, encoder_, svd_ : fitted scikit-learn transformers (``svd_`` may be None)
    price_edges_ : ndarray
        Inner edges of the price bands.

    Examples
    --------
    >>> import pandas as pd
    >>> products = pd.DataFrame({
    ...     "product_id": ["P1", "P2", "P3"],
    ...     "title": ["red tea", "green tea", "steel hammer"],
    ...     "description": ["loose leaf tea", "loose leaf tea", "claw hammer"],
    ...     "category": ["grocery", "grocery", "tools"], "brand": ["A", "B", "C"],
    ...     "price": [4.0, 5.0, 20.0]})
    >>> events = pd.DataFrame({
    ...     "customer_id": ["a"], "product_id": ["P1"],
    ...     "ts": pd.to_datetime(["2026-01-01"], utc=True), "type": ["purchase"],
    ...     "value": [None]})
    >>> model = Content(embedding_size=None, random_state=0)
    >>> model = model.fit(Interactions.from_events(events, products=products))
    >>> model.similar_items(0, k=1)[0]
    array([1])
    >>> model.recommend(0, k=1, exclude=[0])[0]
    array([1])
    """

    kind = "content"

    def __init__(
        self,
        *,
        max_features: int = 5000,
        embedding_size: int | None = 128,
        text_weight: float = 1.0,
        category_weight: float = 1.0,
        brand_weight: float = 0.5,
        price_weight: float = 0.5,
        price_bands: int = 4,
        event_weights: EventWeights = EventWeights(),  # noqa: B008 (frozen, so shared safely)
        half_life_days: float | None = 90.0,
        n_neighbours: int = 20,
        random_state: int | np.random.RandomState | None = None,
    ) -> None:
        self.max_features = max_features
        self.embedding_size = embedding_size
        self.text_weight = text_weight
        self.category_weight = category_weight
        self.brand_weight = brand_weight
        self.price_weight = price_weight
        self.price_bands = price_bands
        self.event_weights = event_weights
        self.half_life_days = half_life_days
        self.n_neighbours = n_neighbours
        self.random_state = random_state

    def _check_params(self) -> None:
        check_scalar(self.max_features, "max_features", Integral, min_val=1)
        if self.embedding_size is not None:
            check_scalar(self.embedding_size, "embedding_size", Integral, min_val=1)
        for name in ("text_weight", "category_weight", "brand_weight", "price_weight"):
            check_scalar(getattr(self, name), name, Real, min_val=0)
        check_scalar(self.price_bands, "price_bands", Integral, min_val=1)
        check_scalar(self.n_neighbours, "n_neighbours", Integral, min_val=0)
        if self.half_life_days is not None:
            check_scalar(
                self.half_life_days, "half_life_days", Real, min_val=0, include_boundaries="neither"
            )
        if not isinstance(self.event_weights, EventWeights):
            raise TypeError("event_weights must be an EventWeights")

    def _fit(self, interactions: Interactions) -> None:
        if interactions.products is None:
            raise ValueError("Content needs Interactions.from_events(..., products=products)")
        self.item_vectors_ = self._item_vectors(interactions.products)
        # The same sums as scoring.content_profile, for all customers in one product.
        weights = interactions.confidence(self.event_weights, self.half_life_days)
        profiles = weights.astype(np.float64) @ self.item_vectors_.astype(np.float64)
        self.profiles_ = normalize(profiles).astype(np.float32)
        self.neighbours_, self.neighbour_scores_ = self._neighbours()

    def _item_vectors(self, products: pd.DataFrame) -> np.ndarray:
        text = (
            products["title"].fillna("").astype(str)
            + " "
            + products["description"].fillna("").astype(str)
            + " "
            + _tags_text(products.get("tags"))
        )
        self.vectorizer_ = TfidfVectorizer(
            max_features=self.max_features,
            ngram_range=(1, 2),
            sublinear_tf=True,
            stop_words="english",
        )
        try:
            text_block = self.vectorizer_.fit_transform(text)
        except ValueError:  # every text empty or only stop words
            text_block = sp.csr_matrix((len(products), 0))
        self.price_edges_ = _price_edges(products["price"], self.price_bands)
        attributes = pd.DataFrame(
            {
                "category": products["category"].fillna("unknown").astype(str),
                "brand": products["brand"].fillna("unknown").astype(str),
                "price_band": _price_band(products["price"], self.price_edges_),
            }
        )
        self.encoder_ = OneHotEncoder(handle_unknown="ignore")
        one_hot = self.encoder_.fit_transform(attributes).tocsc()
        sizes = [len(c) for c in self.encoder_.categories_]
        starts = np.cumsum([0, *sizes])
        blocks = [normalize(text_block) * self.text_weight]
        for weight, lo, hi in zip(
            (self.category_weight, self.brand_weight, self.price_weight),
            starts[:-1],
            starts[1:],
            strict=True,
        ):
            blocks.append(one_hot[:, lo:hi] * weight)
        matrix = sp.hstack(blocks).tocsr()
        self.svd_ = None
        n_features = matrix.shape[1]
        if self.embedding_size is not None and n_features > 1:
            components = min(self.embedding_size, n_features - 1, len(products))
            self.svd_ = TruncatedSVD(
                n_components=components,
                random_state=check_random_state(self.random_state),
            )
            dense = self.svd_.fit_transform(matrix)
        else:
            dense = matrix.toarray()
        return normalize(dense).astype(np.float32)

    def _neighbours(self) -> tuple[np.ndarray, np.ndarray]:
        n_items = self.item_vectors_.shape[0]
        width = min(self.n_neighbours, max(n_items - 1, 0))
        neighbours = np.full((n_items, self.n_neighbours), -1, dtype=np.int64)
        scores = np.full((n_items, self.n_neighbours), np.nan)
        # Blocks of rows bound the memory of the item x item similarities.
        for start in range(0, n_items, NEIGHBOUR_BLOCK):
            block = self.item_vectors_[start : start + NEIGHBOUR_BLOCK] @ self.item_vectors_.T
            for offset, row in enumerate(block):
                item = start + offset
                found, sims = top_k(row, width, exclude=np.array([item]))
                neighbours[item, : len(found)] = found
                scores[item, : len(found)] = sims
        return neighbours, scores

    def _profile_arrays(self) -> dict[str, np.ndarray]:
        """What scoring needs to build and score a profile."""
        half_life = np.nan if self.half_life_days is None else float(self.half_life_days)
        return {
            "item_vectors": self.item_vectors_,
            "event_weights": self.event_weights.as_array(),
            "half_life_days": np.asarray(half_life),
        }

    def export_arrays(self) -> dict[str, np.ndarray]:
        """``item_vectors`` (n_items, d), ``event_weights``, ``half_life_days`` (NaN =
        none), ``neighbours`` and ``neighbour_scores`` (n_items, n_neighbours)."""
        return {
            **self._profile_arrays(),
            "neighbours": self.neighbours_,
            "neighbour_scores": self.neighbour_scores_,
        }

    def export_customer_arrays(self) -> dict[str, np.ndarray]:
        """``profile`` (n_customers, d)."""
        return {"profile": self.profiles_}

    def similar_items(self, item: int, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Cosine similarity of content vectors: works for products nobody bought yet."""
        return similar_by_vectors(self.item_vectors_, self._check_item(item), k, normalised=True)

    def profile(self, state: CustomerState) -> np.ndarray:
        """The content profile of a customer state (unit length, zeros without events)."""
        return content_profile(self.export_arrays(), state)


def _tags_text(tags: pd.Series | None) -> pd.Series | str:
    if tags is None:
        return ""

    def join(value: object) -> str:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return ""
        if isinstance(value, str):
            return value
        return " ".join(str(v) for v in value)  # type: ignore[attr-defined]

    return tags.map(join)


def _price_edges(price: pd.Series, bands: int) -> np.ndarray:
    known = pd.to_numeric(price, errors="coerce").dropna().to_numpy(dtype=np.float64)
    if len(known) == 0 or bands < 2:
        return np.empty(0)
    return np.unique(np.quantile(known, np.linspace(0, 1, bands + 1)[1:-1]))


def _price_band(price: pd.Series, edges: np.ndarray) -> np.ndarray:
    values = pd.to_numeric(price, errors="coerce").to_numpy(dtype=np.float64)
    band = np.searchsorted(edges, values, side="right").astype(str)
    return np.where(np.isnan(values), "unknown", band)
