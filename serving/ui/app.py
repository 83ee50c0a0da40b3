"""The ``/ui`` ASGI app: the static pages and their read-only JSON under ``/ui/api/``.

Mounted on the BentoML service (``serving.service``), so it runs in the service's worker
and reads the engine the service is serving right now (``engine()``, passed in; a
reload is seen on the next call). Bad query parameters get a 400 naming the field; a
missing data file is a 404 or a "not available" part saying why, never a 500.

- ``GET /ui/api/overview``: bundle, segments (id, name, customers to pick from), the
  service clock (the demo's events are stamped on it) and the session timeout.
- ``GET /ui/api/products?ids=P1,P2``: product cards (title, category, price, stock).
- ``GET /ui/api/customers?q=c_ab`` or ``?segment=12``: ids by prefix, or one at random.
- ``GET /ui/api/customer?id=c_...``: churn risk and CLV band as the service reads them.
- ``GET /ui/api/segments`` and ``/ui/api/models``: the console's data
  (:mod:`serving.ui.console_data`).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio.to_thread
import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from segrec.pseudonym import CUSTOMER_ID_PATTERN
from segrec.settings import Settings
from serving.engine import RecommendationEngine
from serving.personalisation import file_stamp
from serving.ui import console_data
from serving.ui.catalogue import CustomerPool, ProductCards

STATIC = Path(__file__).parent / "static"
MAX_IDS = 200
PRODUCT_ID = re.compile(r"[^\x00-\x1f,]{1,64}")  # as /similar takes them: any printable id
VALUE_FEATURES = ("churn_risk", "clv_expected", "clv_band")


class NotReady(RuntimeError):
    """The service has no bundle loaded yet."""


def _error(status: int, field: str, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status)


class UiData:
    """Caches what the API reads from disk, per bundle version (a reload refreshes it)."""

    def __init__(self, settings: Settings, engine: Callable[[], RecommendationEngine | None]):
        self.settings = settings
        self.engine = engine
        self._lock = threading.Lock()
        self._cards: ProductCards | None = None
        self._pool: CustomerPool | str | None = None  # str: why there is none
        self._pool_stamp: float | None = None
        self._rng = np.random.default_rng()  # a demo's "random customer": not seeded on purpose

    def current(self) -> RecommendationEngine:
        engine = self.engine()
        if engine is None:
            raise NotReady("no bundle loaded yet: the service is not ready")
        return engine

    def cards(self, engine: RecommendationEngine) -> ProductCards:
        with self._lock:
            if self._cards is None or self._cards.bundle_version != engine.bundle.version:
                self._cards = ProductCards.build(engine, self.settings)
            return self._cards

    def pool(self) -> CustomerPool | str:
        # Re-read when make segments rewrote the snapshot under a running service.
        stamp = file_stamp(self.settings.features_dir / "customer_segments.parquet")
        with self._lock:
            if self._pool is None or stamp != self._pool_stamp:
                try:
                    self._pool = CustomerPool.load(self.settings)
                except FileNotFoundError as error:
                    self._pool = str(error)
                self._pool_stamp = stamp
            return self._pool

    def random_customer(self, pool: CustomerPool, segment: int) -> str:
        with self._lock:
            return pool.random(segment, self._rng)


def build_ui_app(
    settings: Settings, engine: Callable[[], RecommendationEngine | None]
) -> Starlette:
    """The ``/ui`` app over ``engine()`` (the engine being served, or None before ready)."""
    data = UiData(settings, engine)

    async def overview(request: Request) -> Response:
        engine = data.current()
        pool = await anyio.to_thread.run_sync(data.pool)
        sizes = pool.sizes() if isinstance(pool, CustomerPool) else {}
        model = engine.bundle.segment_model
        return JSONResponse(
            {
                "bundle_version": engine.bundle.version,
                "segments_version": model.version,
                "segments": [
                    {"id": int(i), "name": n, "customers": sizes.get(int(i), 0)}
                    for i, n in zip(model.segment_ids, model.segment_names, strict=True)
                ],
                "customers": None if isinstance(pool, CustomerPool) else pool,
                "now": engine.clock().isoformat(),
                "session_timeout_minutes": settings.session_timeout_minutes,
                "feature_clock": settings.feature_clock,
            }
        )

    async def products(request: Request) -> Response:
        raw = request.query_params.get("ids", "")
        ids = [p for p in raw.split(",") if p]
        if not ids:
            return _error(400, "ids", "give product ids: ?ids=P000001,P000002")
        if len(ids) > MAX_IDS:
            return _error(400, "ids", f"{len(ids)} ids; at most {MAX_IDS}")
        bad = next((p for p in ids if not PRODUCT_ID.fullmatch(p)), None)
        if bad is not None:
            return _error(400, "ids", f"not a product id: {bad[:70]!r}")
        engine = data.current()
        cards = await anyio.to_thread.run_sync(data.cards, engine)
        return JSONResponse(cards.lookup(ids))

    async def customers(request: Request) -> Response:
        prefix = request.query_params.get("q")
        segment = request.query_params.get("segment")
        if (prefix is None) == (segment is None):
            return _error(400, "q", "give either ?q=<id prefix> or ?segment=<segment id>")
        pool = await anyio.to_thread.run_sync(data.pool)
        if not isinstance(pool, CustomerPool):
            return _error(404, "segment" if segment is not None else "q", pool)
        if prefix is not None:
            if len(prefix) > 128:
                return _error(400, "q", "at most 128 characters")
            return JSONResponse({"customers": pool.search(prefix)})
        try:
            segment_id = int(str(segment))
        except ValueError:
            return _error(400, "segment", f"not a segment id: {str(segment)[:40]!r}")
        try:
            chosen = data.random_customer(pool, segment_id)
        except KeyError:
            return _error(404, "segment", f"no customers in segment {segment_id}")
        return JSONResponse({"customers": [chosen], "segment": segment_id})

    async def customer(request: Request) -> Response:
        customer_id = request.query_params.get("id", "")
        if not re.fullmatch(CUSTOMER_ID_PATTERN, customer_id):
            return _error(
                400, "id", "must be a pseudonymous customer id: c_ followed by 16 hex digits"
            )
        engine = data.current()
        vector = (await anyio.to_thread.run_sync(engine.features.read_many, [customer_id]))[0]
        values = {
            name: _plain(vector.values.get(name)) for name in (*VALUE_FEATURES, "segment_name")
        }
        return JSONResponse(
            {
                "customer_id": customer_id,
                **values,
                "value_missing": any(m.startswith("customer_value:") for m in vector.missing),
                "known": "customer_profile:consent_personalisation" not in vector.missing,
                "error": vector.error,
            }
        )

    async def segments(request: Request) -> Response:
        engine = data.current()
        body = await anyio.to_thread.run_sync(console_data.segments_payload, settings, engine)
        return JSONResponse(body)

    async def models(request: Request) -> Response:
        engine = data.current()
        body = await anyio.to_thread.run_sync(console_data.models_payload, settings, engine)
        return JSONResponse(body)

    async def not_ready(request: Request, error: Exception) -> Response:
        return _error(503, "service", str(error))

    return Starlette(
        routes=[
            Route("/api/overview", overview),
            Route("/api/products", products),
            Route("/api/customers", customers),
            Route("/api/customer", customer),
            Route("/api/segments", segments),
            Route("/api/models", models),
            Mount("/", StaticFiles(directory=STATIC, html=True), name="static"),
        ],
        exception_handlers={NotReady: not_ready},
    )


def _plain(value: Any) -> Any:
    """JSON-ready: NaN (unknown) becomes None; numbers are rounded for display."""
    if isinstance(value, float):
        return None if value != value else round(value, 4)
    return value
