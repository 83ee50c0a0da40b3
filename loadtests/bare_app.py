"""The latency benchmark's reference server: the same scoring behind a bare Starlette app.

``python -m loadtests.bare_app --port 3001`` serves ``POST /recommend`` (and ``GET
/readyz``) with uvicorn, one worker, over the engine built as ``serving.service`` builds
it (:func:`serving.loading.build_engine` over the time-budgeted online reader), answering
with the same JSON. What BentoML adds on top (pydantic request models, the hop to the
API's thread, tracing, metrics and access-log middleware, segrec's own metrics) is missing
on purpose: the gap between the two servers is the framework's cost.

It also holds prototypes of serving changes still under study, applied without editing
the engine or the service when ``SEGREC_LATENCY_PATCHES`` names them (comma-separated):

``inline_read``
    The online read called on the request's own thread instead of through
    :class:`serving.feature_budget.BudgetedFeatureSource`'s thread pool (what the hop to
    another thread and back costs on a busy core; it gives up the read's time budget).
``switch_1ms``
    ``sys.setswitchinterval(0.001)``: a thread handed work (the read pool) waits at most
    1 ms, not 5, for the GIL held by the busy event loop.

For BentoML the same patches apply when the benchmark serves
``loadtests.bare_app:Segrec`` (the real service, built through the patched
``build_engine``). Earlier prototypes (reading through the provider's ``online_read``,
``gc.freeze()``, returning a ready ``JSONResponse``, an ``async`` API) measured well and
are now in ``segrec.online_features`` and ``serving.service`` themselves.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from serving.engine import RecommendationEngine

PATCHES_ENV = "SEGREC_LATENCY_PATCHES"
ENGINE_PATCHES = ("inline_read", "switch_1ms")
SERVICE_PATCHES: tuple[str, ...] = ()  # BentoML-only prototypes: none open at present
KNOWN_PATCHES = ENGINE_PATCHES + SERVICE_PATCHES


def requested_patches(value: str | None = None) -> list[str]:
    """The patch names in ``value`` (default: ``$SEGREC_LATENCY_PATCHES``), validated."""
    raw = os.environ.get(PATCHES_ENV, "") if value is None else value
    names = [name.strip() for name in raw.split(",") if name.strip()]
    unknown = sorted(set(names) - set(KNOWN_PATCHES))
    if unknown:
        raise ValueError(f"unknown patches {unknown}; known: {', '.join(KNOWN_PATCHES)}")
    return names


# ---- prototypes of the proposed fixes ---------------------------------------------------
def apply_patches(engine: RecommendationEngine, names: Sequence[str]) -> RecommendationEngine:
    """Apply the named prototypes to a built engine (in place) and return it."""
    features: Any = engine.features
    if "inline_read" in names and hasattr(features, "reader"):  # a BudgetedFeatureSource
        engine.features = features.reader
    if "switch_1ms" in names:
        sys.setswitchinterval(0.001)
    return engine


def build_service_engine() -> RecommendationEngine:
    """The engine as ``serving.service.Segrec`` builds it: the online reader inside the
    time-budgeted feature source, smoke-tested, the store's caches warmed."""
    from segrec.settings import Settings
    from serving.feature_budget import BudgetedFeatureSource
    from serving.loading import build_engine, open_reader

    settings = Settings()
    reader = open_reader(settings)
    features = BudgetedFeatureSource(reader, settings.serving_timeout_ms)
    engine = build_engine(settings, features=features)
    engine.smoke_test()
    reader.read_many(["c_warm_up"])
    gc.collect()
    gc.freeze()
    return engine


def build_patched_engine(names: Sequence[str] | None = None) -> RecommendationEngine:
    """:func:`build_service_engine`, then :func:`apply_patches`."""
    return apply_patches(build_service_engine(), requested_patches() if names is None else names)


# ---- the bare app -------------------------------------------------------------------------
def _invalid(message: str) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=400)


def create_app(engine: RecommendationEngine) -> Starlette:
    """``POST /recommend`` and ``GET /readyz`` over ``engine``."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    from serving.engine import PLACEMENTS, RecommendRequest

    async def recommend(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return _invalid("body is not JSON")
        # The same checks the service's typed signature makes, by hand: that is the point.
        customer_id = body.get("customer_id") if isinstance(body, dict) else None
        if not isinstance(customer_id, str):
            return _invalid("customer_id: a string is required")
        k = body.get("k", 10)
        if not isinstance(k, int) or not 1 <= k <= 100:
            return _invalid("k: an integer from 1 to 100")
        placement = body.get("placement", "home")
        if placement not in PLACEMENTS:
            return _invalid(f"placement: one of {', '.join(PLACEMENTS)}")
        # The service's own request path: the read awaited on the budgeted pool, the
        # scoring on the event loop.
        request_ = RecommendRequest(
            customer_id,
            k,
            placement,
            body.get("product_id"),
            body.get("category"),
            tuple(body.get("exclude") or ()),
        )
        answer = (await engine.recommend_many_async([request_]))[0]
        return JSONResponse(answer.as_json(customer_id))

    async def readyz(request: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route("/recommend", recommend, methods=["POST"]),
            Route("/readyz", readyz, methods=["GET"]),
        ]
    )


def __getattr__(name: str) -> Any:
    """``loadtests.bare_app:Segrec``: the real BentoML service, its engine built through
    the patched ``build_engine`` (so BentoML is measured with the same prototypes)."""
    if name != "Segrec":
        raise AttributeError(name)
    import serving.loading

    original = serving.loading.build_engine
    names = requested_patches()

    def build_engine(*args: Any, **kwargs: Any) -> RecommendationEngine:
        return apply_patches(original(*args, **kwargs), names)

    # serving.service binds build_engine at import: patch before it is imported.
    serving.loading.build_engine = build_engine
    from serving.service import Segrec

    return Segrec


def main(argv: Sequence[str] | None = None) -> None:
    """Build the engine, then serve it with uvicorn (one worker, no access log)."""
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3001)
    args = parser.parse_args(argv)
    app = create_app(build_patched_engine())
    uvicorn.run(
        app, host=args.host, port=args.port, workers=1, access_log=False, log_level="warning"
    )


if __name__ == "__main__":
    main()
