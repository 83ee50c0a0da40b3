"""The generator's oracle: items ranked by the true chance that the customer buys them.

On the synthetic storefront the hidden parameters behind every purchase are known: they
are replayed from the seed in ``source.json`` (:func:`~training.data.synthetic.generator.
replay`). The oracle scores each (customer, product) with the probability that the
customer buys the product at least once in the test window, as the generator makes it:

- sessions come as a Poisson process at the persona's rate times the customer's activity,
  inside the customer's active window; each has ``1 + Poisson(views_per_session)`` views;
- each view is a staple (``p_repeat``, one of the five at random), a product launched in
  the 45 days before it (``p_trend``, uniform over them, when there are any), else a
  product drawn by category preference, the persona's price band and popularity within
  the (category, band) group; a draw not launched yet becomes the group's oldest product
  (:meth:`view_probabilities`);
- a viewed product is bought with ``p_cart * p_buy``, ``p_cart`` cut by the
  out-of-stock factor.

With ``q_i`` the chance that a view shows product ``i``, a view buys it with
``x = q_i * p_cart * p_buy``, a session with ``1 - (1 - x) * exp(-m * x)`` (``m`` the
mean extra views), and the window with ``1 - exp(-H)``: ``H`` sums that over the
sessions expected in the window, exactly, since ``q`` only changes at launches and 45
days after them. One person registered twice is one clean customer once cleaning merged
the records: their ``H`` add up. Clean ids come from cleaning's own
``customer_id_map.parquet``.

The oracle knows the hidden parameters exactly (launch dates of products still to come
included), so it is the ceiling of the evaluation: ranking by the chance of relevance
maximises every customer's expected DCG@k (given that they buy at all, as evaluated
customers do), and expected NDCG@k up to how its normaliser varies with the number of
items bought. Only for data made by the generator (seed, size and end date recorded,
the same generator version) and the temporal protocol (a window in time to buy in).

A second row, the **observed-tastes oracle**, is the same calculation with the hidden
knowledge no model could have at the cut replaced by what the events before it show
(:class:`Observed`): a staple counts only once the customer has viewed it; category
preferences are the posterior mean of the generator's own symmetric Dirichlet prior
(concentration ``category_focus``) given the customer's views per category; a product
launching inside the window is taken as launched at the cut, as the models see it. It
still knows each customer's persona (visit rate, funnel, repeat and trend shares, price
band), which segmentation recovers, and the products' popularity, which the data
estimates well. Its figures say what a model that had learnt the generator's structure
could reach: the ceiling the data leaves open, below the full oracle's.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from segrec.pseudonym import pseudonymise_many
from segrec.settings import Settings
from training.data.synthetic.catalogue import CATEGORIES, N_BANDS
from training.data.synthetic.generator import (
    GENERATOR_VERSION,
    World,
    matches_ground_truth,
    replay,
    replay_problem,
)
from training.data.synthetic.personas import PERSONAS
from training.data.synthetic.population import N_STAPLES
from training.data.synthetic.sessions import MONTH_S, OUT_OF_STOCK_CART_FACTOR, TREND_WINDOW_S
from training.evaluation.protocols import EvaluationSplit
from training.models.interactions import IdVocabulary

ORACLE = "oracle"
ORACLE_LABEL = "oracle (generator's true preferences)"
OBSERVED_ORACLE = "oracle_observed"
OBSERVED_ORACLE_LABEL = (
    "observed-tastes oracle (true persona; staples, tastes and launches as seen at the cut)"
)
ORACLES = (OBSERVED_ORACLE, ORACLE)  # in order of what they know
BLOCK_CELLS = 2_000_000  # customers x products scored at once (bounds memory)


def _persona(field: str) -> np.ndarray:
    return np.array([getattr(p, field) for p in PERSONAS], dtype=np.float64)


def _draw_probabilities(cdf: np.ndarray) -> np.ndarray:
    """Probabilities of ``min((u > cdf).sum(), last)``, the generator's categorical draw."""
    pdf = np.diff(cdf, prepend=0.0, axis=-1)
    pdf[..., -1] = 1.0 - cdf[..., -2]
    return pdf


def dirichlet_posterior_mean(counts: np.ndarray, concentration: np.ndarray) -> np.ndarray:
    """Rows of category shares: the posterior mean of a symmetric Dirichlet prior with
    per-row ``concentration`` (the generator's ``category_focus``) given ``counts``.

    Examples
    --------
    >>> dirichlet_posterior_mean(np.array([[3.0, 0.0], [0.0, 0.0]]), np.array([0.5, 2.0]))
    array([[0.875, 0.125],
           [0.5  , 0.5  ]])
    """
    prior = np.asarray(concentration, dtype=np.float64)[:, None]
    return (counts + prior) / (counts.sum(1, keepdims=True) + prior * counts.shape[1])


def customer_records(
    raw_ids: np.ndarray, id_map: pd.DataFrame, secret: str
) -> dict[str, np.ndarray]:
    """Clean customer id -> positions of the generator's customer records it holds.

    ``id_map`` is cleaning's ``customer_id_map.parquet`` (``source_customer_id``: the
    pseudonym of a raw id; ``customer_id``: the clean id it was merged into). Raw ids
    cleaning never kept (erased, say) are left out.

    Examples
    --------
    >>> from segrec.pseudonym import pseudonymise
    >>> id_map = pd.DataFrame({
    ...     "source_customer_id": [pseudonymise(r, "k") for r in ["7", "8", "9"]],
    ...     "customer_id": ["c_a", "c_b", "c_a"]})
    >>> customer_records(np.array(["7", "8", "9", "10"]), id_map, "k")
    {'c_a': array([0, 2]), 'c_b': array([1])}
    """
    source = pd.Series(pseudonymise_many([str(r) for r in raw_ids], secret))
    clean = source.map(id_map.set_index("source_customer_id")["customer_id"])
    known = clean.dropna()
    groups = known.index.to_series().groupby(known.to_numpy(), sort=True)
    return {str(c): positions.to_numpy(dtype=np.int64) for c, positions in groups}


@dataclass(frozen=True)
class Observed:
    """What the events before the cut show of each clean customer: the products they
    viewed (catalogue positions, a view each) and the cut, epoch seconds."""

    cut: int
    views: Mapping[str, np.ndarray]


def observed_views(events: pd.DataFrame, cut: pd.Timestamp, product_ids: np.ndarray) -> Observed:
    """:class:`Observed` from clean events: views before ``cut`` of the generator's
    products (``product_ids``, catalogue order), grouped by clean customer id.

    Examples
    --------
    >>> events = pd.DataFrame({
    ...     "customer_id": ["c1", "c1", "c2", "c1"], "product_id": ["B", "A", "B", "A"],
    ...     "type": ["view", "view", "purchase", "view"],
    ...     "ts": pd.to_datetime(["2026-01-01", "2026-01-02", "2026-01-02", "2026-02-01"],
    ...                          utc=True)})
    >>> seen = observed_views(events, pd.Timestamp("2026-01-15", tz="UTC"), np.array(["A", "B"]))
    >>> {c: v.tolist() for c, v in seen.views.items()}
    {'c1': [1, 0]}
    """
    views = events[(events["type"] == "view") & (events["ts"] < cut)]
    position = pd.Index(product_ids).get_indexer(views["product_id"].astype(object))
    known = position >= 0
    customers = views["customer_id"].astype(str).to_numpy()[known]
    groups = pd.Series(position[known]).groupby(customers, sort=True)
    return Observed(
        cut=int(pd.Timestamp(cut).timestamp()),
        views={str(c): p.to_numpy(dtype=np.int64) for c, p in groups},
    )


@dataclass(frozen=True)
class _Records:
    """Customer-side parameters of a block of generator records (rows)."""

    p_repeat: np.ndarray
    p_trend: np.ndarray
    views: np.ndarray  # mean extra views per session
    buy_rate: np.ndarray  # p_cart * p_buy, in stock
    sessions_per_second: np.ndarray
    start: np.ndarray  # active window, epoch seconds
    end: np.ndarray
    staples: np.ndarray  # (rows, products): share of staple draws
    category: np.ndarray  # (rows, products): chance of a category-mode draw, pre-launch


def _tail_sums(values: np.ndarray) -> np.ndarray:
    """Column ``i``: the sum of the columns of ``values`` from ``i`` on (0 past the last)."""
    tails = np.zeros((len(values), values.shape[1] + 1))
    tails[:, :-1] = np.cumsum(values[:, ::-1], axis=1)[:, ::-1]
    return tails


def _range_sums(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Column ``j``: the sum of the columns ``lo[j]`` to ``hi[j] - 1`` of ``values``; a range
    from the first column or to the last is one running sum, without a difference's
    rounding.

    Examples
    --------
    >>> _range_sums(np.array([[1.0, 2.0, 4.0]]), np.array([0, 1, 2]), np.array([2, 3, 2]))
    array([[3., 6., 0.]])
    """
    heads = np.zeros((len(values), values.shape[1] + 1))
    np.cumsum(values, axis=1, out=heads[:, 1:])
    tails = _tail_sums(values)
    return np.where(lo == 0, heads[:, hi], tails[:, lo] - tails[:, hi])


def _drawn(rows: _Records, category_share: np.ndarray, products: np.ndarray | slice) -> np.ndarray:
    """(rows, products): the chance a view draws each product as a staple or by category
    (``category_share`` of views), before launches and trends."""
    return (
        rows.p_repeat[:, None] * rows.staples[:, products]
        + category_share[:, None] * rows.category[:, products]
    )


class GeneratorOracle:
    """True purchase probabilities of the synthetic storefront's customers.

    Parameters
    ----------
    world : World
        The replayed catalogue and population.
    records : mapping of str to ndarray
        Clean customer id -> population positions (:func:`customer_records`).
    observed : Observed or None, default=None
        With it, the observed-tastes oracle (module docstring): staples, category
        preferences and launches as the events before ``observed.cut`` show them.
    """

    def __init__(
        self, world: World, records: Mapping[str, np.ndarray], observed: Observed | None = None
    ) -> None:
        self.world = world
        self.records = dict(records)
        self.observed = observed
        cat = world.catalogue
        self.launch = cat.launch.astype(np.int64)
        if observed is not None:
            # At the cut a later launch is a product without history, "new" as of now.
            self.launch = np.minimum(self.launch, observed.cut)
        self.group = cat.category * N_BANDS + cat.band
        n_groups = len(CATEGORIES) * N_BANDS
        group_weight = np.bincount(self.group, weights=cat.popularity, minlength=n_groups)
        self.within = cat.popularity / group_weight[self.group]
        # A requested (category, band) group without products maps to the next one present.
        present = np.flatnonzero(world.sampler.present)
        nearest = present[
            np.minimum(np.searchsorted(present, np.arange(n_groups)), len(present) - 1)
        ]
        self.group_map = np.zeros((n_groups, n_groups))
        self.group_map[np.arange(n_groups), nearest] = 1.0
        # A draw of a product not launched yet becomes the oldest product of its group.
        self.leader = np.zeros(n_groups, dtype=np.int64)
        for g in np.unique(self.group):
            members = np.flatnonzero(self.group == g)
            self.leader[g] = members[np.argmin(self.launch[members])]
        self.stock = np.where(cat.in_stock, 1.0, OUT_OF_STOCK_CART_FACTOR)
        self._launch_sorted = np.sort(self.launch)
        # Each leader with its group, oldest first (itself first): the products that
        # have not launched at a time are a tail of it.
        self._groups = [
            (int(self.leader[g]), members[np.argsort(self.launch[members], kind="stable")])
            for g in np.unique(self.group)
            for members in [np.flatnonzero(self.group == g)]
        ]
        self._is_leader = np.zeros(cat.n, dtype=bool)
        self._is_leader[[leader for leader, _ in self._groups]] = True

    def _records(self, positions: np.ndarray, owners: Sequence[str] = ()) -> _Records:
        """Parameters of the generator records at ``positions``; ``owners`` (their clean
        ids) are needed by the observed-tastes oracle, which reads their views."""
        pop, n = self.world.population, self.world.catalogue.n
        persona = pop.persona[positions]
        rows = len(positions)
        staples = np.zeros((rows, n))
        np.add.at(
            staples, (np.repeat(np.arange(rows), N_STAPLES), pop.staples[positions].ravel()), 1.0
        )
        preferences = _draw_probabilities(pop.category_cdf[positions])
        if self.observed is not None:
            if len(owners) != rows:
                raise ValueError("the observed-tastes oracle needs each record's clean id")
            views = [self.observed.views.get(str(o), np.zeros(0, np.int64)) for o in owners]
            row = np.repeat(np.arange(rows), [len(v) for v in views])
            viewed = np.concatenate(views)
            seen = np.zeros((rows, n), dtype=bool)
            seen[row, viewed] = True
            staples *= seen
            counts = np.zeros_like(preferences)
            np.add.at(counts, (row, self.world.catalogue.category[viewed]), 1.0)
            preferences = dirichlet_posterior_mean(counts, _persona("category_focus")[persona])
        bands = _draw_probabilities(np.cumsum(np.array([p.price_band_probs for p in PERSONAS]), 1))
        cell = preferences[:, :, None] * bands[persona][:, None]
        group = cell.reshape(rows, -1) @ self.group_map
        return _Records(
            p_repeat=_persona("p_repeat")[persona],
            p_trend=_persona("p_trend")[persona],
            views=_persona("views_per_session")[persona],
            buy_rate=(_persona("p_cart") * _persona("p_buy"))[persona],
            sessions_per_second=_persona("sessions_per_month")[persona]
            * pop.activity[positions]
            / MONTH_S,
            start=pop.active_start[positions].astype(np.int64),
            end=pop.active_end[positions].astype(np.int64),
            staples=staples / N_STAPLES,
            category=group[:, self.group] * self.within,
        )

    def view_probabilities(self, rows: _Records, t: int, columns: np.ndarray) -> np.ndarray:
        """(rows, columns): the chance that a view at epoch second ``t`` shows each product
        in ``columns`` (sorted positions), as ``SessionSimulator._choose_products`` draws
        it; over all products every row sums to 1."""
        trending = np.flatnonzero((self.launch <= t) & (self.launch >= t - TREND_WINDOW_S))
        category_share = 1.0 - rows.p_repeat - rows.p_trend * (len(trending) > 0)

        def drawn(products: np.ndarray) -> np.ndarray:
            return _drawn(rows, category_share, products)

        q = drawn(columns) * (self.launch[columns] <= t)
        # A draw of a product not launched yet becomes the oldest product of its group.
        late = np.flatnonzero(self.launch > t)
        target = np.searchsorted(columns, self.leader[self.group[late]])
        hit = target < len(columns)
        hit[hit] = columns[target[hit]] == self.leader[self.group[late[hit]]]
        if hit.any():
            np.add.at(q.T, target[hit], drawn(late[hit]).T)
        if len(trending):
            q[:, np.isin(columns, trending)] += rows.p_trend[:, None] / len(trending)
        return q

    def _hazard(self, rows: _Records, start: int, end: int) -> np.ndarray:
        """(rows, products): expected sessions in ``(start, end]`` that buy each product,
        ``H`` of the module docstring (P(at least one purchase) = 1 - exp(-H)).

        View chances are constant between launches and the ends of launches' trend
        windows: steps, each with the view chances at its middle second (what
        :meth:`view_probabilities` gives there), weighted by its sessions. Steps that
        give a product one view chance share one evaluation, their sessions summed: a
        product not launched yet is never viewed; after its trend window its chance
        changes only with whether anything trends. While it trends, it changes with how
        many products trend, through a part of the per-session chance shared by every
        product, summed over steps once. A group's leader, which takes the draws of its
        group's products still to launch, gets one evaluation per view chance it has.
        """
        launch = self.launch
        changes = np.concatenate([launch, launch + TREND_WINDOW_S])
        bounds = np.unique(np.r_[start, end, changes[(changes > start) & (changes < end)]])
        middle = (bounds[:-1] + bounds[1:]) // 2
        overlap = np.minimum(rows.end[:, None], bounds[1:]) - np.maximum(
            rows.start[:, None], bounds[:-1]
        )
        sessions = np.clip(overlap, 0, None) * rows.sessions_per_second[:, None]
        n_rows, n_steps = sessions.shape
        hazard = np.zeros((n_rows, len(launch)))
        if not n_steps:
            return hazard
        trending = np.searchsorted(self._launch_sorted, middle, "right") - np.searchsorted(
            self._launch_sorted, middle - TREND_WINDOW_S
        )
        trend_on = trending > 0
        # A product's steps: before ``first`` it is not launched, from ``last`` it is old.
        first = np.searchsorted(middle, launch)
        last = np.searchsorted(middle, launch + TREND_WINDOW_S, "right")

        def share(on: np.ndarray | bool) -> np.ndarray:
            return 1.0 - rows.p_repeat - rows.p_trend * on

        def per_session(q: np.ndarray, products: np.ndarray | slice | int) -> np.ndarray:
            # 1 - (1 - x) * exp(-m * x), in place: most calls are (rows, products).
            x = q * rows.buy_rate[:, None]
            x *= self.stock[products]
            chance = np.multiply(-rows.views[:, None], x)
            np.exp(chance, out=chance)
            np.subtract(1.0, x, out=x)
            chance *= x
            return np.subtract(1.0, chance, out=chance)

        # From ``last`` on, a product other than a leader changes only with whether
        # anything trends (leaders are 0 here, then set below).
        other = ~self._is_leader
        old_from = np.where(other, last, n_steps)
        for on in (False, True):
            mask = trend_on == on
            if mask[old_from.min() :].any():
                sessions_after = _tail_sums(sessions * mask)[:, old_from]
                everything = slice(None)
                hazard += sessions_after * per_session(
                    _drawn(rows, share(on), everything), everything
                )

        # While a product trends, x = u + d: u from its drawn chance, the same at each of
        # its steps; d from its part of the trend share, p_trend / (products trending),
        # the same for every product with its stock factor. With e(y) = exp(-m * y) and
        # g(y) = 1 - e(y), 1 - (1 - x) * e(x) = g(u) + e(u) * (g(d) + u * e(d) + d * e(d)):
        # a product needs only sums over its steps of terms in d, alike for all products
        # (no cancellation: every term is positive).
        new = np.flatnonzero(other & (first < last))
        if len(new):
            lo, hi = first[new], last[new]
            rate = rows.buy_rate[:, None]
            views = rows.views[:, None]
            u_base = _drawn(rows, share(True), new) * rate
            per_trending = rows.p_trend[:, None] / np.maximum(trending, 1)
            for stock in np.unique(self.stock[new]):
                here = self.stock[new] == stock
                d = per_trending * rate * stock
                e_d = np.exp(-views * d)
                total, g_part, e_part, d_part = (
                    _range_sums(sessions * term, lo[here], hi[here])
                    for term in (1.0, -np.expm1(-views * d), e_d, d * e_d)
                )
                u = u_base[:, here] * stock
                hazard[:, new[here]] += -np.expm1(-views * u) * total + np.exp(-views * u) * (
                    g_part + u * e_part + d_part
                )

        steps = np.arange(n_steps)
        for leader, members in self._groups:
            released = np.searchsorted(launch[members], middle, "right")  # members out
            count = np.where((first[leader] <= steps) & (steps < last[leader]), trending, 0)
            key = (released * 2 + trend_on) * (len(launch) + 1) + count
            order = np.argsort(key, kind="stable")
            ordered = key[order]
            starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
            weight = np.add.reduceat(sessions[:, order], starts, axis=1)
            step = order[starts]  # one step of each distinct view chance
            on, n_out, trend_count = trend_on[step], released[step], count[step]
            category_share = 1.0 - rows.p_repeat[:, None] - rows.p_trend[:, None] * on
            q = (
                rows.p_repeat[:, None] * rows.staples[:, [leader]]
                + category_share * rows.category[:, [leader]]
            ) * (n_out > 0)
            # Draws of the group's products not launched yet: members from ``n_out`` on.
            waiting = members[n_out.min() :]
            for value in np.unique(on):
                pending = _tail_sums(_drawn(rows, share(value), waiting))
                q[:, on == value] += pending[:, n_out[on == value] - n_out.min()]
            q += np.where(trend_count > 0, rows.p_trend[:, None] / np.maximum(trend_count, 1), 0.0)
            hazard[:, leader] = (weight * per_session(q, leader)).sum(1)
        return hazard

    def purchase_probability(
        self,
        customer_ids: Sequence[str],
        items: IdVocabulary,
        start: pd.Timestamp,
        end: pd.Timestamp,
    ) -> np.ndarray:
        """(customers, items): the chance each customer buys each item at least once in
        ``(start, end]``; 0 for customers or items the generator did not make."""
        start_s, end_s = (int(pd.Timestamp(t).timestamp()) for t in (start, end))
        n_products = self.world.catalogue.n
        column = items.index(self.world.catalogue.product_ids)
        known = column >= 0
        out = np.zeros((len(customer_ids), len(items)))
        block = max(1, BLOCK_CELLS // n_products)
        for first in range(0, len(customer_ids), block):
            ids = customer_ids[first : first + block]
            positions = [self.records.get(str(c), np.zeros(0, np.int64)) for c in ids]
            counts = np.array([len(p) for p in positions], dtype=np.int64)
            owner = np.repeat(np.arange(len(ids)), counts)
            flat = np.concatenate(positions) if positions else np.zeros(0, np.int64)
            if not len(flat):
                continue
            owners = [str(ids[int(o)]) for o in owner]
            hazard = self._hazard(self._records(flat, owners), start_s, end_s)
            if (counts == 1).all():
                summed = hazard
            else:
                # A clean customer's records are consecutive rows: added up in order.
                summed = np.zeros((len(ids), n_products))
                head = np.cumsum(counts) - counts
                summed[counts > 0] = hazard[head[counts > 0]]
                for k in range(1, counts.max()):
                    more = counts > k
                    summed[more] += hazard[head[more] + k]
            chance = summed if known.all() else summed[:, known]
            np.exp(np.negative(chance, out=chance), out=chance)
            out[first : first + len(ids)][:, column[known]] = np.subtract(1.0, chance, out=chance)
        return out


@dataclass(frozen=True)
class WindowOracle:
    """The oracles for one evaluation window: ``scores(customer_ids, items)`` for the full
    one, ``rows`` for every one there is (the report's rows, by name)."""

    oracle: GeneratorOracle
    start: pd.Timestamp
    end: pd.Timestamp
    observed: GeneratorOracle | None = None

    def scores(self, customer_ids: Sequence[str], items: IdVocabulary) -> np.ndarray:
        return self.oracle.purchase_probability(customer_ids, items, self.start, self.end)

    def rows(self, customer_ids: Sequence[str], items: IdVocabulary) -> dict[str, np.ndarray]:
        out = {ORACLE: self.scores(customer_ids, items)}
        if self.observed is not None:
            out[OBSERVED_ORACLE] = self.observed.purchase_probability(
                customer_ids, items, self.start, self.end
            )
        return out


def load_oracle(
    settings: Settings, split: EvaluationSplit
) -> tuple[WindowOracle | None, dict[str, Any]]:
    """The oracle for ``split``'s test window, and what the report says about it: where it
    came from (seed, size, end, generator and data version), or why there is none."""
    path = settings.clean_dir / "manifest.json"
    manifest = json.loads(path.read_text()) if path.exists() else {}
    source = manifest.get("source") or {}
    info: dict[str, Any] = {"name": ORACLE_LABEL, "data_version": manifest.get("data_version")}

    def absent(reason: str) -> tuple[None, dict[str, Any]]:
        return None, {**info, "available": False, "reason": reason}

    if problem := replay_problem(source):
        return absent(f"{problem}: nobody knows its true preferences")
    if split.protocol != "temporal":
        return absent(f"only for the temporal protocol (a window to buy in), not {split.protocol}")
    seed, size, end = int(source["seed"]), str(source["size"]), str(source["end"])
    world = replay(size, seed, dt.date.fromisoformat(end))
    raw_dir = settings.raw_dir / "synthetic"
    checked = (raw_dir / "ground_truth.parquet").exists()
    if checked and not matches_ground_truth(raw_dir, world):
        return absent(f"replaying seed {seed} does not reproduce the ground truth in {raw_dir}")
    id_map = pd.read_parquet(settings.clean_dir / "customer_id_map.parquet")
    secret = settings.pseudonymisation_secret.get_secret_value()
    records = customer_records(world.population.raw_ids, id_map, secret)
    if not records:
        return absent(
            "no generated customer has a clean id: was the data cleaned with another "
            "SEGREC_PSEUDONYMISATION_SECRET?"
        )
    start = split.test.reference_time
    window = pd.Timedelta(days=float(split.params["test_days"]))
    observed = observed_views(split.test.train, start, world.catalogue.product_ids)
    info.update(
        available=True,
        seed=seed,
        size=size,
        end=end,
        generator_version=GENERATOR_VERSION,
        checked_against_ground_truth=checked,
        clean_customers=len(records),
        generator_records=int(sum(len(r) for r in records.values())),
        live_events_in_table=(manifest.get("live_events") or {}).get("in_table", 0),
        window=[start.isoformat(), (start + window).isoformat()],
        scores="P(at least one purchase in the test window), from the replayed generator",
        observed={
            "name": OBSERVED_ORACLE_LABEL,
            "knows": "each customer's persona (visit rate, funnel, repeat and trend shares, "
            "price band) and the products' popularity",
            "from_the_data": "staples only once viewed before the cut; category preferences "
            "as the Dirichlet posterior mean given the views before the cut; launches after "
            "the cut as at the cut",
            "customers_with_views": len(observed.views),
        },
    )
    return WindowOracle(
        GeneratorOracle(world, records),
        start,
        start + window,
        observed=GeneratorOracle(world, records, observed),
    ), info


def describe(info: Mapping[str, Any]) -> str:
    """One line on the oracle row of a report: where it came from, or why there is none."""
    if not info:
        return "Oracle: not computed."
    if not info.get("available"):
        return f"No oracle row: {info.get('reason')}."
    return (
        f"{ORACLE_LABEL}: the generator's true purchase probabilities in the test window "
        f"(seed {info['seed']}, size {info['size']}, generator v{info['generator_version']}, "
        f"data version {info['data_version']}); the ceiling no model reaches in expectation. "
        f"{OBSERVED_ORACLE_LABEL}: the same, with staples, category preferences and launches "
        "as the events before the cut show them: what a model that had learnt the "
        "generator's structure could reach."
    )
