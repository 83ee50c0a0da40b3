"""The BentoML service storefronts call: ``bentoml serve serving.service:Segrec``.

It loads the newest bundle (``SEGREC_BUNDLE_DIR``, or the newest under
``<data_dir>/bundles``; checksums verified, numpy only) and reads customers' features from
Feast's online store (``customer_serving_v2``), then answers through
:class:`serving.engine.RecommendationEngine`. BentoML adds ``/livez``, ``/readyz`` and
``/metrics``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import bentoml
from pydantic import Field

from segrec.settings import Settings
from serving.loading import build_engine


@bentoml.service(traffic={"timeout": 10})
class Segrec:
    def __init__(self) -> None:
        self.engine = build_engine(Settings())

    @bentoml.api(route="/recommend")
    def recommend(
        self,
        customer_id: str,
        k: Annotated[int, Field(ge=1, le=100)] = 10,
        placement: Literal["home", "product", "cart", "email"] = "home",
        product_id: str | None = None,
        category: str | None = None,
        exclude: list[str] | None = None,
    ) -> dict[str, Any]:
        """A ranked carousel for one customer, with each item's model contributions."""
        answer = self.engine.recommend(
            customer_id,
            k,
            placement=placement,
            product_id=product_id,
            category=category,
            exclude=exclude,
        )
        return {
            "customer_id": customer_id,
            "items": answer.items,
            "segment": answer.segment,
            "lifecycle_stage": answer.lifecycle_stage,
            "bundle_version": answer.bundle_version,
            "fallback": answer.fallback,
        }

    @bentoml.api(route="/segment")
    def segment(self, customer_id: str) -> dict[str, Any]:
        """A customer's segment (stored or assigned live), lifecycle stage and the
        feature values the segment rests on."""
        return self.engine.segment(customer_id)

    @bentoml.api(route="/similar")
    def similar(
        self, product_id: str, k: Annotated[int, Field(ge=1, le=100)] = 10
    ) -> dict[str, Any]:
        """Items like ``product_id`` (content and collaborative neighbours)."""
        try:
            items = self.engine.similar(product_id, k)
        except KeyError as error:
            return {"product_id": product_id, "items": [], "error": str(error.args[0])}
        return {"product_id": product_id, "items": items}
