"""Biased matrix factorisation (Funk SVD) trained with scikit-surprise, scored with numpy.

Explicit or implicit feedback
-----------------------------
With ``feedback="auto"`` the model trains on the explicit ratings when ``rating`` events
cover at least ``min_rating_share`` of the interacted (customer, product) pairs (e.g.
MovieLens), and otherwise on this implicit-to-rating mapping (the synthetic storefront,
online-retail invoices), one pseudo-rating per pair:

===================================  =======
strongest event of the pair           rating
===================================  =======
purchased on two or more events       5
purchased once                        4.5
added to cart, not purchased          4
viewed only                           3
sampled pair never interacted with    1
===================================  =======

then minus up to one star for age, ``(1 - 0.5 ** (age_of_last_event / half_life_days))``
(so an old view drops towards 2, never to the level of a non-interaction). A pair the
customer rated keeps its rating instead. Ratings of only positives teach a factor model
nothing about what customers skip, so ``negatives_per_positive`` unobserved pairs per
interacted pair are sampled (seeded) and rated 1.

Surprise is only the trainer: ranking never calls ``build_anti_testset()`` (it
enumerates every unrated pair, which does not fit in memory on real catalogues) nor
``predict`` (one Python call per pair); the factors ``pu, qi, bu, bi`` and the global
mean are copied into arrays aligned with our own indices and scored with numpy.
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import pandas as pd
import surprise
from sklearn.utils import check_random_state, check_scalar

from segrec.scoring import EVENT_TYPES, PURCHASE, similar_by_vectors
from training.models.base import Recommender
from training.models.interactions import Interactions

RATING = EVENT_TYPES.index("rating")
CART = EVENT_TYPES.index("add_to_cart")
VIEW = EVENT_TYPES.index("view")
NEGATIVE_RATING = 1.0


class SVD(Recommender):
    """Biased matrix factorisation ``mu + b_u + b_i + p_u . q_i`` (Surprise's ``SVD``).

    Parameters
    ----------
    embedding_size : int, default=32
        Number of latent factors (Surprise's ``n_factors``).
    epochs : int, default=20
        SGD passes over the ratings (``n_epochs``).
    learning_rate : float, default=0.005
        SGD step for all parameters (``lr_all``).
    reg : float, default=0.02
        L2 regularisation for all parameters (``reg_all``).
    feedback : {"auto", "explicit", "implicit"}, default="auto"
        Which ratings to learn from; see the module docstring.
    min_rating_share : float, default=0.5
        With ``"auto"``: share of interacted pairs that must carry a rating for the
        explicit mode.
    negatives_per_positive : float, default=3.0
        Implicit mode: unobserved pairs sampled per interacted pair, rated 1.
    half_life_days : float, default=120.0
        Implicit mode: age at which an interaction has lost half a star.
    random_state : int, RandomState or None, default=None
        Seeds negative sampling and Surprise's factor initialisation.
    keep_surprise : bool, default=False
        Keep Surprise's training set and trained model as ``trainset_`` and ``algo_`` (to
        check scores against Surprise). Off by default: the training set holds every
        rating as Python objects in two dicts, gigabytes at ten million events, and
        scoring needs only the factor arrays.

    Attributes
    ----------
    feedback_ : str
        ``"explicit"`` or ``"implicit"``: what the model trained on.
    user_factors_ : ndarray of shape (n_customers, embedding_size)
        ``pu``; zero for customers absent from the training ratings.
    user_bias_ : ndarray of shape (n_customers,)
        ``bu``; zero for absent customers.
    item_factors_ : ndarray of shape (n_items, embedding_size)
        ``qi``; zero for absent items.
    item_bias_ : ndarray of shape (n_items,)
        ``bi``; zero for absent items.
    global_mean_ : float
        ``mu``, the mean training rating.
    trainset_ : surprise.Trainset
        The Surprise training set (raw ids are our indices); with ``keep_surprise`` only.
    algo_ : surprise.SVD
        The trained Surprise model; with ``keep_surprise`` only.

    Examples
    --------
    >>> import pandas as pd
    >>> events = pd.DataFrame({
    ...     "customer_id": ["a", "a", "b", "b"], "product_id": ["P1", "P2", "P1", "P3"],
    ...     "ts": pd.to_datetime(["2026-01-01"] * 4, utc=True),
    ...     "type": ["rating"] * 4, "value": [5.0, 1.0, 4.0, 2.0]})
    >>> model = SVD(embedding_size=2, random_state=0).fit(Interactions.from_events(events))
    >>> model.feedback_
    'explicit'
    >>> model.score(-1).round(2)  # unknown customer: mu + b_i
    array([3.27, 2.81, 2.9 ])
    """

    kind = "svd"

    def __init__(
        self,
        *,
        embedding_size: int = 32,
        epochs: int = 20,
        learning_rate: float = 0.005,
        reg: float = 0.02,
        feedback: str = "auto",
        min_rating_share: float = 0.5,
        negatives_per_positive: float = 3.0,
        half_life_days: float = 120.0,
        random_state: int | np.random.RandomState | None = None,
        keep_surprise: bool = False,
    ) -> None:
        self.embedding_size = embedding_size
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.reg = reg
        self.feedback = feedback
        self.min_rating_share = min_rating_share
        self.negatives_per_positive = negatives_per_positive
        self.half_life_days = half_life_days
        self.random_state = random_state
        self.keep_surprise = keep_surprise

    def _check_params(self) -> None:
        check_scalar(self.embedding_size, "embedding_size", Integral, min_val=1)
        check_scalar(self.epochs, "epochs", Integral, min_val=1)
        check_scalar(
            self.learning_rate, "learning_rate", Real, min_val=0, include_boundaries="neither"
        )
        check_scalar(self.reg, "reg", Real, min_val=0)
        check_scalar(self.min_rating_share, "min_rating_share", Real, min_val=0, max_val=1)
        check_scalar(self.negatives_per_positive, "negatives_per_positive", Real, min_val=0)
        check_scalar(
            self.half_life_days, "half_life_days", Real, min_val=0, include_boundaries="neither"
        )
        if self.feedback not in ("auto", "explicit", "implicit"):
            raise ValueError(f"feedback must be auto, explicit or implicit, not {self.feedback!r}")

    def _fit(self, interactions: Interactions) -> None:
        rng = check_random_state(self.random_state)
        self.feedback_ = self._choose_feedback(interactions)
        if self.feedback_ == "explicit":
            ratings, scale = explicit_ratings(interactions), (1.0, 5.0)
            if len(ratings):
                scale = (float(ratings["rating"].min()), float(ratings["rating"].max()))
        else:
            ratings = implicit_ratings(interactions, self.half_life_days)
            negatives = sample_negatives(interactions, ratings, self.negatives_per_positive, rng)
            ratings = pd.concat([ratings, negatives], ignore_index=True)
            scale = (NEGATIVE_RATING, 5.0)
        if ratings.empty:
            raise ValueError("no ratings to train on")
        data = surprise.Dataset.load_from_df(
            ratings[["customer", "item", "rating"]], surprise.Reader(rating_scale=scale)
        )
        trainset = data.build_full_trainset()
        algo = surprise.SVD(
            n_factors=self.embedding_size,
            n_epochs=self.epochs,
            lr_all=self.learning_rate,
            reg_all=self.reg,
            random_state=int(rng.randint(np.iinfo(np.int32).max)),
        )
        algo.fit(trainset)
        if self.keep_surprise:
            self.trainset_, self.algo_ = trainset, algo
        self.global_mean_ = float(trainset.global_mean)
        users = [trainset.to_raw_uid(inner) for inner in trainset.all_users()]
        items = [trainset.to_raw_iid(inner) for inner in trainset.all_items()]
        self.user_factors_, self.user_bias_ = _aligned(
            interactions.n_customers, users, algo.pu, algo.bu
        )
        self.item_factors_, self.item_bias_ = _aligned(
            interactions.n_items, items, algo.qi, algo.bi
        )

    def _choose_feedback(self, interactions: Interactions) -> str:
        if self.feedback != "auto":
            return str(self.feedback)
        pairs = interactions.customer.astype(np.int64) * interactions.n_items + interactions.item
        rated = interactions.type_code == RATING
        n_pairs = len(np.unique(pairs))
        share = len(np.unique(pairs[rated])) / n_pairs if n_pairs else 0.0
        return "explicit" if share >= self.min_rating_share and rated.any() else "implicit"

    def export_arrays(self) -> dict[str, np.ndarray]:
        """``item_factors`` (n_items, f), ``item_bias`` (n_items,), ``global_mean``."""
        return {
            "item_factors": self.item_factors_,
            "item_bias": self.item_bias_,
            "global_mean": np.asarray(self.global_mean_),
        }

    def export_customer_arrays(self) -> dict[str, np.ndarray]:
        """``user_factors`` (n_customers, f) and ``user_bias`` (n_customers,)."""
        return {"user_factors": self.user_factors_, "user_bias": self.user_bias_}

    def similar_items(self, item: int, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Cosine similarity of item factors ``qi``."""
        return similar_by_vectors(self.item_factors_, self._check_item(item), k)


def explicit_ratings(interactions: Interactions) -> pd.DataFrame:
    """The latest rating of each rated (customer, item) pair."""
    rated = interactions.type_code == RATING
    frame = pd.DataFrame(
        {
            "customer": interactions.customer[rated],
            "item": interactions.item[rated],
            "age": interactions.age_days[rated],
            "rating": interactions.value[rated],
        }
    ).dropna(subset=["rating"])
    latest = frame.sort_values("age").drop_duplicates(["customer", "item"], keep="first")
    return latest[["customer", "item", "rating"]].reset_index(drop=True)


def implicit_ratings(interactions: Interactions, half_life_days: float) -> pd.DataFrame:
    """One pseudo-rating per interacted pair (mapping table in the module docstring)."""
    t = interactions.type_code
    frame = pd.DataFrame(
        {
            "customer": interactions.customer,
            "item": interactions.item,
            "purchases": t == PURCHASE,
            "cart": t == CART,
            "view": t == VIEW,
            "age": interactions.age_days,
            "rating": np.where(t == RATING, interactions.value, np.nan),
        }
    )
    pairs = frame.groupby(["customer", "item"], sort=True).agg(
        purchases=("purchases", "sum"),
        cart=("cart", "any"),
        age=("age", "min"),
        rated=("rating", "last"),
    )
    level = np.select(
        [pairs["purchases"] >= 2, pairs["purchases"] == 1, pairs["cart"]],
        [5.0, 4.5, 4.0],
        default=3.0,
    )
    level = level - (1.0 - np.exp2(-pairs["age"].to_numpy() / half_life_days))
    rated = pairs["rated"].to_numpy(dtype=np.float64)
    pairs["rating"] = np.where(np.isnan(rated), level, rated)
    return pairs.reset_index()[["customer", "item", "rating"]]


def sample_negatives(
    interactions: Interactions,
    positives: pd.DataFrame,
    per_positive: float,
    rng: np.random.RandomState,
) -> pd.DataFrame:
    """About ``per_positive`` unobserved items per interacted pair, per customer, rated 1.

    Items are drawn uniformly (with replacement, then deduplicated), and draws that hit
    the customer's own items are dropped, so a few customers get slightly fewer.
    """
    counts = positives.groupby("customer").size()
    n_draws = np.rint(counts.to_numpy() * per_positive).astype(np.int64)
    customer = np.repeat(counts.index.to_numpy(dtype=np.int64), n_draws)
    item = rng.randint(0, interactions.n_items, size=len(customer))
    n_items = interactions.n_items
    drawn = np.unique(customer * n_items + item)
    seen = positives["customer"].to_numpy(np.int64) * n_items + positives["item"].to_numpy()
    drawn = drawn[~np.isin(drawn, seen)]
    return pd.DataFrame(
        {"customer": drawn // n_items, "item": drawn % n_items, "rating": NEGATIVE_RATING}
    )


def _aligned(
    n: int, raw_ids: list, factors: np.ndarray, bias: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Surprise's arrays (row = inner id) re-indexed by our indices (Surprise's raw ids,
    listed in inner-id order); rows Surprise never saw stay zero."""
    raw = np.asarray(raw_ids, dtype=np.int64)
    out_factors = np.zeros((n, factors.shape[1]), dtype=np.float64)
    out_bias = np.zeros(n, dtype=np.float64)
    out_factors[raw] = factors
    out_bias[raw] = bias
    return out_factors, out_bias
