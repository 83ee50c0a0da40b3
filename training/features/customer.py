"""Customer features as of a timestamp: RFM, regularity, tastes, engagement, lifecycle.

Only events strictly before ``as_of`` are used, so a snapshot never sees its future.
Interaction weights for taste shares: view 1, add to cart 2, rating 2, purchase 4 (a
purchase says more than a look; a handful of views still says something for customers
who never bought).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from training.features.inputs import PRICE_BANDS, FeatureInputs

ENGAGEMENT_WINDOW = pd.Timedelta(days=90)
DISCOUNT_THRESHOLD = 0.95  # paid under 95% of list price counts as bought on discount
INTERACTION_WEIGHTS = {
    "view": 1.0,
    "add_to_cart": 2.0,
    "rating": 2.0,
    "purchase": 4.0,
    "remove_from_cart": 0.0,
}
RFM_BINS = 5
NOVELTY_WINDOW = pd.Timedelta(days=30)


def events_before(inputs: FeatureInputs, as_of: pd.Timestamp) -> pd.DataFrame:
    """Events strictly before ``as_of`` (events are sorted by time)."""
    stop = int(inputs.events["ts"].searchsorted(as_of, side="left"))
    return inputs.events.iloc[:stop]


def _days(deltas: pd.Series) -> pd.Series:
    return deltas.dt.total_seconds() / 86400


def _quantile_score(values: pd.Series, higher_is_better: bool = True) -> pd.Series:
    """1..5 by quintile of rank (ties share a rank); missing stays 0."""
    ranks = values.rank(pct=True, method="average", ascending=higher_is_better)
    scores = (ranks * RFM_BINS).apply(np.ceil).clip(1, RFM_BINS)
    return scores.fillna(0).astype(np.int64)


def _novelty_share(
    inputs: FeatureInputs, as_of: pd.Timestamp, ev: pd.DataFrame, weight: pd.Series
) -> pd.Series:
    """Weighted share of a customer's interactions with products that were new then: first
    seen in the shop at most ``NOVELTY_DAYS`` before the interaction. Trend followers chase
    launches; loyal customers rebuy staples."""
    seen = events_before(inputs, as_of)
    first_seen = seen.groupby(seen["product_id"].astype(object))["ts"].min()
    product_age = ev["ts"] - ev["product_id"].astype(object).map(first_seen)
    novel = (product_age <= NOVELTY_WINDOW).to_numpy()
    frame = (
        pd.DataFrame(
            {
                "cid": ev["customer_id"].astype(object).to_numpy(),
                "w": weight.to_numpy(),
                "novel_w": weight.to_numpy() * novel,
            }
        )
        .groupby("cid")[["w", "novel_w"]]
        .sum()
    )
    return (frame["novel_w"] / frame["w"]).where(frame["w"] > 0)


def _habits(ev: pd.DataFrame) -> pd.DataFrame:
    """How a customer shops, over their whole history: views per visit, how often they
    come back to products they have seen (staples), and how many units they buy at once."""
    views = ev[ev["type"] == "view"]
    view_cust = views["customer_id"].astype(object)
    out = pd.DataFrame(
        {
            "views_per_session": views.groupby(view_cust).size().astype(np.float64)
            / views.groupby(view_cust)["session_id"]
            .nunique()
            .astype(np.float64)
            .replace(0.0, np.nan),
            # Events are in time order, so a duplicate is a return to a product seen before.
            "repeat_view_share": views.assign(cid=view_cust.to_numpy())
            .duplicated(["cid", "product_id"])
            .groupby(view_cust)
            .mean(),
        }
    )
    purchases = ev[ev["type"] == "purchase"]
    out["mean_basket_quantity"] = purchases.groupby(purchases["customer_id"].astype(object))[
        "quantity"
    ].mean()
    return out.astype(np.float64)


def _missed_visits(
    ev: pd.DataFrame, days_since_last_event: pd.Series, observed_days: pd.Series
) -> pd.Series:
    """Visits a customer would have made since their last one at their own pace: days
    since the last event times visits per day observed (a visit is a day with any event).

    It tells "few visits, evenly spread" from "many visits, then stopped", which recency
    alone does not: 70 days after the last of 5 visits in 500 days is 0.7 missed visits
    (an occasional shopper on time), 70 days after the last of 25 is 3.5 (a regular who
    stopped). NaN without events, like ``days_since_last_event``."""
    visits = ev["ts"].dt.floor("D").groupby(ev["customer_id"].astype(object)).nunique()
    rate = visits.reindex(days_since_last_event.index).fillna(0) / observed_days
    return (days_since_last_event * rate).astype(np.float64)


def customer_features(inputs: FeatureInputs, as_of: pd.Timestamp) -> pd.DataFrame:
    """One row per customer who had signed up by ``as_of``, stamped ``event_timestamp``."""
    customers = inputs.customers[inputs.customers["signup_ts"] < as_of].set_index("customer_id")
    ids = customers.index
    ev = events_before(inputs, as_of)
    ev = ev[ev["customer_id"].isin(ids)]
    cust = ev["customer_id"].astype(object)
    out = pd.DataFrame(index=ids)

    purchases = ev[ev["type"] == "purchase"]
    order_key = (
        purchases["session_id"].astype(object).fillna(purchases["ts"].dt.floor("D").astype(str))
    )
    orders = (
        purchases.assign(order=order_key.to_numpy(), cid=purchases["customer_id"].astype(object))
        .groupby(["cid", "order"], observed=True)
        .agg(ts=("ts", "max"), value=("value", "sum"))
        .reset_index()
        .sort_values(["cid", "ts"])
    )
    by_customer = orders.groupby("cid")
    last_purchase = by_customer["ts"].max()
    out["recency_days"] = _days(as_of - last_purchase).reindex(ids)
    out["frequency"] = by_customer.size().reindex(ids).fillna(0).astype(np.int64)
    out["monetary_total"] = by_customer["value"].sum().reindex(ids).fillna(0.0)
    out["avg_order_value"] = (out["monetary_total"] / out["frequency"]).where(out["frequency"] > 0)
    gaps = orders["ts"].diff().dt.total_seconds() / 86400
    gaps[orders["cid"].ne(orders["cid"].shift())] = np.nan
    gap_stats = gaps.groupby(orders["cid"]).agg(["mean", "std"])
    out["purchase_gap_mean_days"] = gap_stats["mean"].reindex(ids)
    out["purchase_gap_std_days"] = gap_stats["std"].reindex(ids)

    buyers = out["frequency"] > 0
    out["rfm_r"] = 0
    out["rfm_f"] = 0
    out["rfm_m"] = 0
    out.loc[buyers, "rfm_r"] = _quantile_score(out.loc[buyers, "recency_days"], False)
    out.loc[buyers, "rfm_f"] = _quantile_score(out.loc[buyers, "frequency"])
    out.loc[buyers, "rfm_m"] = _quantile_score(out.loc[buyers, "monetary_total"])
    out["rfm_score"] = out["rfm_r"] + out["rfm_f"] + out["rfm_m"]
    out["rfm_cell"] = out["rfm_r"].astype(str) + out["rfm_f"].astype(str) + out["rfm_m"].astype(str)

    weight = ev["type"].astype(object).map(INTERACTION_WEIGHTS).fillna(0.0)
    categories = sorted(inputs.products["category"].unique())
    taste = (
        pd.DataFrame({"cid": cust, "category": ev["category"].astype(object), "w": weight})
        .groupby(["cid", "category"])["w"]
        .sum()
        .unstack(fill_value=0)
        .reindex(index=ids, columns=categories, fill_value=0.0)
    )
    totals = taste.sum(axis=1)
    shares = taste.div(totals.where(totals > 0), axis=0)
    out["category_shares"] = pd.Series(
        list(shares.fillna(0.0).to_numpy(dtype=np.float32)), index=out.index
    )
    out["top_category"] = shares.fillna(0.0).idxmax(axis=1).where(totals > 0, "none")

    bands = (
        pd.DataFrame({"cid": cust, "band": ev["price_band"].astype(object), "w": weight})
        .groupby(["cid", "band"])["w"]
        .sum()
        .unstack(fill_value=0)
        .reindex(index=ids, columns=list(PRICE_BANDS), fill_value=0.0)
    )
    band_totals = bands.sum(axis=1)
    for band in PRICE_BANDS:
        out[f"price_band_{band}_share"] = (bands[band] / band_totals).where(band_totals > 0)
    out["preferred_price_band"] = bands.idxmax(axis=1).where(band_totals > 0, "none")

    recent = ev[ev["ts"] >= as_of - ENGAGEMENT_WINDOW]
    recent_cust = recent["customer_id"].astype(object)
    counts = (
        recent.groupby([recent_cust, recent["type"].astype(object)]).size().unstack(fill_value=0)
    )
    for kind, column in (
        ("view", "views_90d"),
        ("add_to_cart", "carts_90d"),
        ("purchase", "purchases_90d"),
    ):
        values = counts[kind] if kind in counts else pd.Series(dtype=np.int64)
        out[column] = values.reindex(ids).fillna(0).astype(np.int64)
    in_session = recent.dropna(subset=["session_id"])
    flags = (
        pd.DataFrame(
            {
                "carted": in_session["type"].eq("add_to_cart").to_numpy(),
                "bought": in_session["type"].eq("purchase").to_numpy(),
            }
        )
        .groupby(
            [
                in_session["customer_id"].astype(object).to_numpy(),
                in_session["session_id"].astype(object).to_numpy(),
            ]
        )
        .any()
    )
    flags["abandoned"] = flags["carted"] & ~flags["bought"]
    per = flags.groupby(level=0).agg(
        sessions=("carted", "size"), carted=("carted", "sum"), abandoned=("abandoned", "sum")
    )
    out["sessions_90d"] = per["sessions"].reindex(ids).fillna(0).astype(np.int64)
    out["cart_rate_90d"] = (out["carts_90d"] / out["views_90d"]).where(out["views_90d"] > 0)
    # Clipped: a cart made just before the window can be bought inside it.
    out["purchase_rate_90d"] = (
        (out["purchases_90d"] / out["carts_90d"]).clip(upper=1.0).where(out["carts_90d"] > 0)
    )
    carted_sessions = per["carted"].reindex(ids)
    out["abandonment_rate_90d"] = (per["abandoned"].reindex(ids) / carted_sessions).where(
        carted_sessions > 0
    )
    out["active_days_90d"] = (
        recent["ts"]
        .dt.floor("D")
        .groupby(recent_cust)
        .nunique()
        .reindex(ids)
        .fillna(0)
        .astype(np.int64)
    )

    priced = purchases[purchases["price"].notna() & purchases["list_price"].notna()]
    discounted = priced["price"] < DISCOUNT_THRESHOLD * priced["list_price"]
    out["discount_affinity"] = discounted.groupby(priced["customer_id"].astype(object)).mean()
    ratings = ev[ev["type"] == "rating"]
    rating_stats = ratings.groupby(ratings["customer_id"].astype(object))["value"].agg(
        ["size", "mean"]
    )
    out["ratings"] = rating_stats["size"].reindex(ids).fillna(0).astype(np.int64)
    out["mean_rating"] = rating_stats["mean"].reindex(ids)

    out["days_since_last_event"] = _days(as_of - ev.groupby(cust)["ts"].max()).reindex(ids)
    out["tenure_days"] = _days(as_of - customers["signup_ts"])
    out["age"] = (as_of.year - customers["birth_year"]).astype("float64")
    for column in ("gender", "country", "city", "consent_personalisation"):
        out[column] = customers[column]
    out["interactions"] = ev.groupby(cust).size().reindex(ids).fillna(0).astype(np.int64)
    # Rate over the days we could have seen the customer: since signup, or since the
    # shop's data begins for customers older than that.
    observed_from = customers["signup_ts"].clip(lower=inputs.events["ts"].min())
    observed_days = _days(as_of - observed_from).clip(lower=1.0)
    out["interaction_rate_30d"] = out["interactions"] / observed_days * 30.0
    out["missed_visits"] = _missed_visits(ev, out["days_since_last_event"], observed_days)
    out = out.join(_habits(ev))
    out["novelty_share"] = _novelty_share(inputs, as_of, ev, weight).reindex(ids)

    out = out.reset_index().rename(columns={"index": "customer_id"})
    out["event_timestamp"] = as_of
    return out
