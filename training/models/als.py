"""Implicit-feedback ALS (Hu, Koren & Volinsky) trained with ``implicit`` on the CPU.

The confidence of a (customer, product) pair is its summed event weights
(:class:`~training.models.interactions.EventWeights`, optionally recency-decayed), then
scaled by ``weighting`` (BM25, log or none) and multiplied by ``alpha``. implicit 0.7
takes the customer x item matrix in ``fit`` (passing the transpose would silently swap
the factor shapes, implicit issues #655 and #742); the fitted factor shapes are checked.

Customers unknown at training time, or with new events, are folded in with
:func:`segrec.scoring.als_fold_in`: the exact least-squares step of implicit's
``recalculate_user``, in numpy, from the exported item factors.
"""

from __future__ import annotations

import os

# Multi-threaded OpenBLAS inside ALS's many small solves makes it several times slower.
# The variable only works if set before BLAS loads, so fit also limits the thread pools.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from sklearn.utils import check_random_state, check_scalar
from threadpoolctl import threadpool_limits

from segrec.scoring import bm25_confidence, similar_by_vectors
from training.models.base import Recommender
from training.models.interactions import EventWeights, Interactions

WEIGHTINGS = ("bm25", "log", "none")


class ALS(Recommender):
    """Alternating least squares on the customer x product confidence matrix.

    Parameters
    ----------
    embedding_size : int, default=64
        Number of latent factors (implicit's ``factors``).
    reg : float, default=0.05
        L2 regularisation (``regularization``).
    epochs : int, default=15
        ALS sweeps (``iterations``).
    alpha : float, default=2.0
        Multiplies every confidence after weighting (implicit's ``alpha``).
    weighting : {"bm25", "log", "none"}, default="none"
        Scaling of the summed event weights ``x``: BM25 with items as documents (as in
        implicit's examples, see :func:`~segrec.scoring.bm25_confidence`),
        ``log1p(x)``, or ``x`` unchanged.
    bm25_k1 : float, default=100.0
        BM25 saturation ``K1``.
    bm25_b : float, default=0.8
        BM25 length normalisation ``B`` (over item popularity).
    event_weights : EventWeights, default=EventWeights()
        Weight of each event type in ``x``.
    half_life_days : float or None, default=None
        Recency half-life of each event's weight; None = no decay.
    use_cg : bool, default=True
        Conjugate-gradient solver in training (faster; the fold-in is always exact).
    num_threads : int, default=0
        implicit's worker threads; 0 = all cores.
    random_state : int, RandomState or None, default=None
        Seeds the factor initialisation.

    Attributes
    ----------
    user_factors_ : ndarray of shape (n_customers, embedding_size)
    item_factors_ : ndarray of shape (n_items, embedding_size)
    gramian_ : ndarray of shape (embedding_size, embedding_size)
        ``item_factors_.T @ item_factors_``, reused by every fold-in.
    bm25_item_norm_ : ndarray of shape (n_items,)
        BM25 length norm per item (ones unless ``weighting="bm25"``).
    confidence_ : scipy.sparse.csr_matrix of shape (n_customers, n_items)
        The weighted confidences the model was fitted on (before ``alpha``).
    model_ : implicit.cpu.als.AlternatingLeastSquares

    Examples
    --------
    >>> import pandas as pd
    >>> events = pd.DataFrame({
    ...     "customer_id": ["a", "a", "b", "b", "c"],
    ...     "product_id": ["P1", "P2", "P1", "P2", "P1"],
    ...     "ts": pd.to_datetime(["2026-01-01"] * 5, utc=True),
    ...     "type": ["purchase"] * 5, "value": [None] * 5})
    >>> model = ALS(embedding_size=2, weighting="none", random_state=0)
    >>> model = model.fit(Interactions.from_events(events))
    >>> model.recommend(2, k=1, exclude=[0])[0]  # c bought P1; a and b also bought P2
    array([1])
    """

    kind = "als"

    def __init__(
        self,
        *,
        embedding_size: int = 64,
        reg: float = 0.05,
        epochs: int = 15,
        alpha: float = 2.0,
        weighting: str = "none",
        bm25_k1: float = 100.0,
        bm25_b: float = 0.8,
        event_weights: EventWeights = EventWeights(),  # noqa: B008 (frozen, so shared safely)
        half_life_days: float | None = None,
        use_cg: bool = True,
        num_threads: int = 0,
        random_state: int | np.random.RandomState | None = None,
    ) -> None:
        self.embedding_size = embedding_size
        self.reg = reg
        self.epochs = epochs
        self.alpha = alpha
        self.weighting = weighting
        self.bm25_k1 = bm25_k1
        self.bm25_b = bm25_b
        self.event_weights = event_weights
        self.half_life_days = half_life_days
        self.use_cg = use_cg
        self.num_threads = num_threads
        self.random_state = random_state

    def _check_params(self) -> None:
        check_scalar(self.embedding_size, "embedding_size", Integral, min_val=1)
        check_scalar(self.reg, "reg", Real, min_val=0)
        check_scalar(self.epochs, "epochs", Integral, min_val=1)
        check_scalar(self.alpha, "alpha", Real, min_val=0, include_boundaries="neither")
        check_scalar(self.bm25_k1, "bm25_k1", Real, min_val=0)
        check_scalar(self.bm25_b, "bm25_b", Real, min_val=0, max_val=1)
        check_scalar(self.num_threads, "num_threads", Integral, min_val=0)
        if self.half_life_days is not None:
            check_scalar(
                self.half_life_days, "half_life_days", Real, min_val=0, include_boundaries="neither"
            )
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, not {self.weighting!r}")
        if not isinstance(self.event_weights, EventWeights):
            raise TypeError("event_weights must be an EventWeights")

    def _fit(self, interactions: Interactions) -> None:
        raw = interactions.confidence(self.event_weights, self.half_life_days)
        self.confidence_, self.bm25_item_norm_ = self._weighted(raw)
        # implicit draws its initial factors from a numpy Generator seeded here.
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        with threadpool_limits(limits=1, user_api="blas"):
            model = AlternatingLeastSquares(
                factors=self.embedding_size,
                regularization=self.reg,
                alpha=self.alpha,
                iterations=self.epochs,
                use_cg=self.use_cg,
                num_threads=self.num_threads,
                random_state=seed,
            )
            model.fit(self.confidence_, show_progress=False)
        expected = (interactions.n_customers, interactions.n_items)
        if (model.user_factors.shape[0], model.item_factors.shape[0]) != expected:
            raise RuntimeError("implicit swapped users and items: check the matrix orientation")
        self.model_ = model
        self.user_factors_ = np.asarray(model.user_factors)
        self.item_factors_ = np.asarray(model.item_factors)
        item_factors = self.item_factors_.astype(np.float64)
        self.gramian_ = item_factors.T @ item_factors

    def _weighted(self, raw: sp.csr_matrix) -> tuple[sp.csr_matrix, np.ndarray]:
        """The confidence matrix scaled by ``weighting``, and the BM25 item norms."""
        matrix = raw.copy()
        item_norm = np.ones(raw.shape[1])
        if self.weighting == "bm25":
            item_total = np.asarray(raw.sum(axis=0)).ravel()
            mean_total = item_total.mean() if item_total.mean() > 0 else 1.0
            item_norm = (1.0 - self.bm25_b) + self.bm25_b * item_total / mean_total
            per_row = np.repeat(np.diff(raw.indptr), np.diff(raw.indptr))
            matrix.data = bm25_confidence(
                raw.data.astype(np.float64), raw.indices, per_row, item_norm, self.bm25_k1
            ).astype(np.float32)
        elif self.weighting == "log":
            matrix.data = np.log1p(raw.data)
        matrix.eliminate_zeros()
        return matrix, item_norm

    def export_arrays(self) -> dict[str, np.ndarray]:
        """``item_factors``, ``gramian`` and what the fold-in needs to rebuild confidences:
        ``reg``, ``alpha``, ``event_weights``, ``half_life_days`` (NaN = none),
        ``weighting``, ``bm25_item_norm``, ``bm25_k1``."""
        half_life = np.nan if self.half_life_days is None else float(self.half_life_days)
        return {
            "item_factors": self.item_factors_,
            "gramian": self.gramian_,
            "reg": np.asarray(float(self.reg)),
            "alpha": np.asarray(float(self.alpha)),
            "event_weights": self.event_weights.as_array(),
            "half_life_days": np.asarray(half_life),
            "weighting": np.asarray(str(self.weighting)),
            "bm25_item_norm": self.bm25_item_norm_,
            "bm25_k1": np.asarray(float(self.bm25_k1)),
        }

    def export_customer_arrays(self) -> dict[str, np.ndarray]:
        """``user_factors`` (n_customers, embedding_size)."""
        return {"user_factors": self.user_factors_}

    def similar_items(self, item: int, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Cosine similarity of item factors (as implicit's ``similar_items``)."""
        return similar_by_vectors(self.item_factors_, self._check_item(item), k)
