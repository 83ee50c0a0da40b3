"""The BentoML service storefronts call: ``bentoml serve serving.service:Segrec``.

Endpoints (all ``POST`` with a JSON body; see the README for examples):

- ``/recommend``: one carousel; ``/recommend/batch``: many customers in one call.
- ``/similar``: items like a product. ``/segment``: a customer's segment and stage.
- ``/events``: storefront events, validated one by one, folded into the live session in
  the online store and appended to the durable event log the next training run ingests.
- ``/admin/reload``: load a newer bundle, check it, swap it in (bearer token); also
  re-reads the tactics and experiments files.
- ``/livez``, ``/readyz``, ``/metrics`` (BentoML's, with segrec's metrics added).

The service holds one :class:`~serving.engine.RecommendationEngine` at a time. A request
takes the engine once and uses only it, so a reload swapping ``self.engine`` mid-request
never mixes two bundles in one answer; the old engine is dropped when its last request
finishes. The tactics and experiments files (``serving/config/``) are watched: a changed
file is validated against the bundle and swapped in whole, or refused with the old
rules still serving. Answers inside an experiment are logged as exposures
(:mod:`segrec.experiments`) for ``make ab-report``.

Readiness means a bundle is loaded and passed its smoke test and the feature store's
registry was read; it does not follow the online store's health afterwards (a down store
answers with fallbacks, and pulling every pod out of the load balancer for it would turn
degraded answers into none).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gc
import hmac
import logging
import threading
import time
from collections.abc import Container, Sequence
from typing import Annotated, Any, Literal

import anyio.to_thread
import bentoml
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse

from segrec.audit import AuditLog, clean_actor
from segrec.bundle import BundleError
from segrec.consent import ConsentError, change_consent
from segrec.erasure import ErasureError, ErasureUnavailable, erase_customer
from segrec.event_dedupe import EventDedupe
from segrec.event_log import EventLog
from segrec.experiments import Exposure, ExposureLog
from segrec.live_session import LiveEvent, LiveSessionWriter
from segrec.settings import Settings
from segrec.shared_state import SharedStateUnavailable, open_shared_state
from segrec.suppression import SharedSuppression
from serving import metrics
from serving.api_schema import HonestOpenAPI
from serving.engine import Recommendation, RecommendationEngine, RecommendRequest
from serving.event_admission import EventAdmission
from serving.event_batcher import EventBatcher
from serving.events import validate_events
from serving.feature_budget import BudgetedFeatureSource
from serving.limits import BodySizeLimit, ConcurrencyLimit, JsonBodiesOnly, bentoml_workers
from serving.loading import build_engine, load_bundle, open_reader, personalisation_for
from serving.personalisation import PersonalisationError, file_stamp
from serving.ui.app import build_ui_app

logger = logging.getLogger("segrec.service")
SETTINGS = Settings()
Placement = Literal["home", "product", "cart", "email"]
K = Annotated[int, Field(ge=1, le=100, description="How many items (1..100).")]
RETRY_LOAD_SECONDS = 5.0


class BatchRequest(BaseModel):
    """One customer's carousel within ``/recommend/batch``."""

    model_config = ConfigDict(extra="forbid")

    customer_id: str = Field(min_length=1, max_length=128)
    k: K = 10
    placement: Placement = "email"
    product_id: str | None = None
    category: str | None = None
    exclude: list[str] = Field(default_factory=list, max_length=1000)


def _error(status: int, field: str, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status)


def _unavailable(field: str, message: str) -> JSONResponse:
    """503 with Retry-After: the shared store is out of reach; retrying later succeeds."""
    response = _error(503, field, message)
    response.headers["Retry-After"] = str(SETTINGS.retry_after_seconds)
    return response


# Access logs and tracing spans off on the request path: measured (loadtests/latency.py)
# at +42% throughput on one worker; the metrics keep counts and latencies per endpoint.
# Past the timeout BentoML answers 504; past SEGREC_MAX_CONCURRENCY in-flight requests
# (split across workers) ConcurrencyLimit, below, answers 429 at once with Retry-After,
# sparing /livez, /readyz and /metrics (BentoML's own max_concurrency has no Retry-After).
@bentoml.service(
    traffic={"timeout": SETTINGS.request_timeout_seconds},
    logging={"access": {"enabled": False}},
    tracing={"excluded_urls": "/recommend,/recommend/batch,/similar,/segment,/events"},
)
class Segrec:
    def __init__(self) -> None:
        self.settings = SETTINGS
        self.engine: RecommendationEngine | None = None
        self.load_error: str | None = None
        self._load_lock = threading.Lock()
        self._events_lock = threading.Lock()
        self._last_attempt = 0.0
        self.event_log = EventLog(self.settings.event_log_dir)
        self._event_batcher = EventBatcher(self._write_events)
        self.exposure_log = ExposureLog(self.settings.exposure_log_dir)
        self.audit_log = AuditLog(self.settings.audit_log_file)
        # The suppression list and event-id claims every worker and pod shares.
        self.shared_state = open_shared_state(self.settings)
        self._admission = EventAdmission(
            SharedSuppression(self.shared_state),
            EventDedupe.from_settings(self.shared_state, self.settings),
        )
        self._load()
        threading.Thread(target=self._watch_config, name="config-watch", daemon=True).start()

    # ---- loading and readiness --------------------------------------------------------
    def _load(self) -> None:
        """Load the bundle and open the store; on failure stay live but not ready."""
        with self._load_lock:
            self._last_attempt = time.monotonic()
            try:
                reader = open_reader(self.settings)
                features = BudgetedFeatureSource(
                    reader,
                    self.settings.serving_timeout_ms,
                    on_read=metrics.FEATURE_READ_SECONDS.observe,
                )
                engine = build_engine(self.settings, features=features)
                engine.smoke_test()
                # The first read opens connections and fills Feast's caches (~100 ms);
                # outside the budget here, so no real request pays for it.
                reader.read_many(["c_warm_up"])
            except Exception as error:  # a missing or bad bundle must not kill the process
                self.load_error = f"{type(error).__name__}: {error}"
                logger.error("not ready: %s", self.load_error)
                return
            self._writer = LiveSessionWriter(
                reader.store,
                engine.categories_by_product(),
                dt.timedelta(minutes=self.settings.session_timeout_minutes),
            )
            self._swap(engine)
            self.load_error = None
            # Everything loaded so far lives as long as the process: out of the collector's
            # reach, a full pass never walks it on the request path. (On the small data
            # no full pass happened in 1,000 requests either way: cheap insurance.)
            gc.collect()
            gc.freeze()

    def _swap(self, engine: RecommendationEngine) -> None:
        previous = self.engine
        if previous is not None:
            metrics.BUNDLE_INFO.labels(
                version=previous.bundle.version, segments_version=previous.segments_version
            ).set(0)
        self.engine = engine  # one attribute store: atomic for every reader of it
        if hasattr(self, "_writer"):
            # Sessions record categories: a new catalogue brings new products.
            self._writer.product_categories = engine.categories_by_product()
        metrics.BUNDLE_INFO.labels(
            version=engine.bundle.version, segments_version=engine.segments_version
        ).set(1)

    def _write_events(self, events: list[LiveEvent]) -> str | None:
        """Log ``events`` durably, then fold them into the live sessions; returns the
        session error (the store down), if any. Runs in a worker thread."""
        with self._events_lock:
            # The log first: once it returns the events are durable, whatever the store does.
            self.event_log.append(events, dt.datetime.now(dt.UTC))
            try:
                self._writer.apply(events)
            except Exception as error:  # store down: logged events still reach training
                message = f"{type(error).__name__}: {error}"
                logger.warning("live session not updated: %s", message)
                return message
        return None

    def _watch_config(self) -> None:
        """Swap in changed tactics/experiments files; a bad change is refused and logged."""
        while True:
            time.sleep(self.settings.config_poll_seconds)
            try:
                self.refresh_config()
            except Exception:  # the watcher must outlive any surprise
                logger.exception("checking the tactics and experiments files failed")

    def refresh_config(self, force: bool = False) -> dict[str, Any]:
        """Re-read the tactics and experiments files when they changed (or ``force``)."""
        engine = self.engine
        if engine is None:
            return {"swapped": False, "reason": "no bundle loaded"}
        stamps = (
            file_stamp(self.settings.tactics_file),
            file_stamp(self.settings.experiments_file),
        )
        if stamps == engine.personalisation.stamps and not force:
            return {"swapped": False, "reason": "unchanged"}
        try:
            fresh = personalisation_for(self.settings, engine)
        except PersonalisationError as error:
            metrics.CONFIG_RELOADS.labels(outcome="rejected").inc()
            # Remember the refused stamps: one error per change, not one per poll.
            engine.personalisation = dataclasses.replace(engine.personalisation, stamps=stamps)
            logger.error("tactics/experiments change refused, old rules keep serving: %s", error)
            return {"swapped": False, "error": str(error)}
        engine.personalisation = fresh
        metrics.CONFIG_RELOADS.labels(outcome="swapped").inc()
        logger.info(
            "tactics %s and experiments %s now serving",
            fresh.tactics.version,
            fresh.experiments.version,
        )
        return {"swapped": True, **fresh.summary()}

    def _log_exposures(
        self,
        engine: RecommendationEngine,
        requests: list[RecommendRequest],
        answers: list[Recommendation],
    ) -> None:
        now = engine.clock()
        exposures = []
        for request, answer in zip(requests, answers, strict=True):
            for rule in answer.tactics.rules:
                metrics.TACTIC_RULES.labels(rule=rule).inc()
            assignment = answer.experiment
            if assignment is None:
                continue
            value = answer.customer_value or {}
            metrics.EXPOSURES.labels(
                experiment=assignment.experiment, variant=assignment.variant
            ).inc()
            exposures.append(
                Exposure(
                    customer_id=request.customer_id,
                    experiment=assignment.experiment,
                    variant=assignment.variant,
                    placement=request.placement,
                    items=tuple(item["product_id"] for item in answer.items),
                    ts=now,
                    bundle_version=answer.bundle_version,
                    config_version=engine.personalisation.experiments.version,
                    segment_id=None if answer.segment is None else int(answer.segment["id"]),
                    segment_name=None if answer.segment is None else str(answer.segment["name"]),
                    rules=answer.tactics.rules,
                    churn_risk=value.get("churn_risk"),
                    clv_band=value.get("clv_band"),
                )
            )
        if exposures:
            try:
                self.exposure_log.append(exposures)
            except OSError as error:  # a full disk must not fail the carousel
                logger.warning("exposures not logged: %s", error)

    def __is_ready__(self) -> bool:
        if self.engine is None and time.monotonic() - self._last_attempt > RETRY_LOAD_SECONDS:
            # The bundle may have been published after the pod started.
            self._load()
        return self.engine is not None

    def _engine(self) -> RecommendationEngine:
        engine = self.engine
        if engine is None:
            raise bentoml.exceptions.ServiceUnavailable(f"no bundle loaded yet: {self.load_error}")
        return engine

    # ---- recommendations --------------------------------------------------------------
    def _observe(self, endpoint: str, answers: list[Recommendation], seconds: float) -> None:
        metrics.ENGINE_SECONDS.labels(endpoint=endpoint).observe(seconds)
        for answer in answers:
            if answer.fallback:
                metrics.FALLBACKS.labels(endpoint=endpoint, reason=answer.fallback).inc()
            segment = "none" if answer.segment is None else str(answer.segment["name"])
            metrics.SEGMENT_REQUESTS.labels(segment=segment).inc()
            for view in {m.split(":", 1)[0] for m in answer.missing_features}:
                metrics.MISSING_FEATURES.labels(view=view).inc()

    @bentoml.api(route="/recommend")
    async def recommend(
        self,
        customer_id: Annotated[str, Field(min_length=1, max_length=128)],
        k: K = 10,
        placement: Placement = "home",
        product_id: str | None = None,
        category: str | None = None,
        exclude: Annotated[list[str], Field(max_length=1000)] = [],  # noqa: B006 (pydantic copies)
    ) -> Any:
        """A ranked carousel for one customer, with each item's contributions (why it is
        there), the segment, lifecycle stage, bundle version and any fallback reason."""
        engine = self._engine()
        started = time.perf_counter()
        request = RecommendRequest(customer_id, k, placement, product_id, category, tuple(exclude))
        answer = (await engine.recommend_many_async([request]))[0]
        self._observe("recommend", [answer], time.perf_counter() - started)
        self._log_exposures(engine, [request], [answer])
        # A ready response passes through BentoML untouched; a dict is validated against
        # a schema rebuilt per response (measured at +15% throughput).
        return JSONResponse(answer.as_json(customer_id))

    @bentoml.api(route="/recommend/batch")
    async def recommend_batch(self, requests: list[BatchRequest]) -> Any:
        """Many carousels in one call (campaign e-mails): one online-store read and one
        blend for the whole batch. At most ``SEGREC_MAX_BATCH_CUSTOMERS`` requests."""
        if len(requests) > self.settings.max_batch_customers:
            return _error(
                400,
                "requests",
                f"{len(requests)} requests in one batch; at most "
                f"{self.settings.max_batch_customers} (SEGREC_MAX_BATCH_CUSTOMERS)",
            )
        engine = self._engine()
        started = time.perf_counter()
        batch = [
            RecommendRequest(
                r.customer_id, r.k, r.placement, r.product_id, r.category, tuple(r.exclude)
            )
            for r in requests
        ]
        answers = await engine.recommend_many_async(batch)
        self._observe("recommend_batch", answers, time.perf_counter() - started)
        self._log_exposures(engine, batch, answers)
        return JSONResponse(
            {
                "bundle_version": engine.bundle.version,
                "results": [
                    a.as_json(r.customer_id) for r, a in zip(requests, answers, strict=True)
                ],
            }
        )

    @bentoml.api(route="/segment")
    async def segment(
        self, customer_id: Annotated[str, Field(min_length=1, max_length=128)]
    ) -> Any:
        """A customer's segment (stored, or assigned live after session activity),
        lifecycle stage and the feature values the segment rests on."""
        # In a worker thread: the online read blocks, and sync endpoints share one thread.
        answer = await anyio.to_thread.run_sync(self._engine().segment, customer_id)
        if answer["fallback"]:
            metrics.FALLBACKS.labels(endpoint="segment", reason=answer["fallback"]).inc()
        return answer

    @bentoml.api(route="/similar")
    async def similar(
        self, product_id: Annotated[str, Field(min_length=1, max_length=64)], k: K = 10
    ) -> Any:
        """Items like ``product_id`` (content and collaborative neighbours)."""
        # Pure numpy over arrays in memory (about a millisecond): on the event loop, not
        # queued behind the single thread BentoML gives sync endpoints.
        try:
            items = self._engine().similar(product_id, k)
        except KeyError as error:
            return _error(404, "product_id", str(error.args[0]))
        return {"product_id": product_id, "items": items}

    # ---- events -----------------------------------------------------------------------
    @bentoml.api(route="/events")
    async def events(self, events: list[Any]) -> Any:
        """Storefront events (view, add_to_cart, remove_from_cart, purchase, rating),
        checked one by one. Accepted ones are appended to the durable event log, then
        folded into each customer's live session in the online store, so the very next
        ``/recommend`` reflects them; rejected ones come back with their index, field and
        reason. At most ``SEGREC_MAX_BATCH_EVENTS`` per call. Concurrent calls share one
        log fsync and one session push (:mod:`serving.event_batcher`); each answers once its
        own events are durable."""
        if len(events) > self.settings.max_batch_events:
            return _error(
                400,
                "events",
                f"{len(events)} events in one call; at most {self.settings.max_batch_events} "
                "(SEGREC_MAX_BATCH_EVENTS)",
            )
        engine = self._engine()
        now = engine.clock()
        skew = dt.timedelta(seconds=self.settings.event_clock_skew_seconds)
        age = dt.timedelta(hours=self.settings.event_max_age_hours)

        def validate(raw: Sequence[Any], erased: Container[str]) -> Any:
            return validate_events(raw, engine.index_of, now, erased, max_skew=skew, max_age=age)

        # Erased customers' events are refused and event ids claimed before the write, in
        # the store every worker and pod shares (a thread: it is I/O); claims are released
        # if the write fails, so a retry after a failure is not a duplicate. Without the
        # store nothing is written: 503, retry later (events of a customer erased on another
        # pod must not be stored).
        try:
            admission = await anyio.to_thread.run_sync(self._admission.admit, events, validate)
        except SharedStateUnavailable as error:
            logger.warning("events refused, shared state unavailable: %s", error)
            return _unavailable(
                "customer_id",
                "cannot check the suppression list (online store unavailable): retry later",
            )
        fresh, rejected = admission.fresh, admission.rejected
        try:
            session_error = await self._event_batcher.submit(fresh)
        except Exception:
            await anyio.to_thread.run_sync(self._admission.release, fresh)
            raise
        duplicates = admission.duplicates
        metrics.EVENTS.labels(outcome="accepted").inc(len(fresh))
        metrics.EVENTS.labels(outcome="duplicate").inc(duplicates)
        metrics.EVENTS.labels(outcome="rejected").inc(len(rejected))
        return {
            "accepted": len(fresh),
            "duplicates": duplicates,
            "rejected": [r.as_dict() for r in rejected],
            "session_updated": session_error is None,
            **({"session_error": session_error} if session_error else {}),
        }

    # ---- operations -------------------------------------------------------------------
    def _authorise(self, ctx: bentoml.Context, action: str) -> tuple[str, dict[str, Any] | None]:
        """The caller's actor name, and the refusal to answer with (status set on ``ctx``)
        when the bearer token is missing (401) or wrong (403), or admin is off (403).
        Refusals are audited too; the token itself is never logged or echoed."""
        request = ctx.request
        actor = clean_actor(request.headers.get("x-segrec-actor"), "admin")
        client = request.client.host if request.client else "unknown"
        token = self.settings.admin_token
        given = request.headers.get("authorization", "")
        if token is None:
            status, error = 403, "admin endpoints are off: set SEGREC_ADMIN_TOKEN"
        elif not given:
            status, error = 401, "missing bearer token (Authorization: Bearer <token>)"
        elif not hmac.compare_digest(given.encode(), f"Bearer {token.get_secret_value()}".encode()):
            status, error = 403, "wrong bearer token"
        else:
            return actor, None
        self._audit(actor, action, "refused", {"status": status, "client": client})
        ctx.response.status_code = status
        # With a context parameter BentoML takes the status from the context.
        return actor, {"error": error, "field": "authorization"}

    def _audit(self, actor: str, action: str, outcome: str, details: dict[str, Any]) -> None:
        try:
            self.audit_log.record(actor=actor, action=action, outcome=outcome, details=details)
        except OSError as error:  # the action happened; say loudly that its record did not
            logger.error("audit log not written for %s %s: %s", action, outcome, error)

    @bentoml.api(route="/admin/reload")
    def reload(
        self,
        ctx: bentoml.Context,
        version: str | None = None,
        force: bool = False,
    ) -> Any:
        """Load bundle ``version`` (default: the newest), verify its checksums and a smoke
        prediction, then swap it in; the old bundle keeps serving if anything fails.
        Needs ``Authorization: Bearer <SEGREC_ADMIN_TOKEN>``; audited."""
        actor, refused = self._authorise(ctx, "reload")
        if refused is not None:
            return refused
        status, body = self._reload(version, force)
        ctx.response.status_code = status
        outcome = (
            "swapped" if body.get("swapped") else ("rejected" if status >= 400 else "unchanged")
        )
        self._audit(
            actor,
            "reload",
            outcome,
            {k: body.get(k) for k in ("bundle_version", "previous", "error") if body.get(k)},
        )
        return body

    def _reload(self, version: str | None, force: bool) -> tuple[int, dict[str, Any]]:
        current = self.engine
        serving = current.bundle.version if current else None
        try:
            bundle = load_bundle(self.settings, version)
            if current is not None and bundle.version == current.bundle.version and not force:
                metrics.RELOADS.labels(outcome="unchanged").inc()
                config = self.refresh_config()
                if "error" in config:
                    return 409, {**config, "field": "config", "bundle_version": bundle.version}
                return 200, {
                    "swapped": False,
                    "bundle_version": bundle.version,
                    "reason": "unchanged",
                    "config": config,
                }
            features = current.features if current else None
            engine = build_engine(self.settings, bundle=bundle, features=features)
            engine.smoke_test()
        except PersonalisationError as error:
            field = "config"
            message = f"tactics or experiments do not fit bundle {bundle.version}: {error}"
        except (BundleError, FileNotFoundError, ValueError, KeyError) as error:
            field, message = "version", f"bundle rejected: {error}"
        else:
            if current is None:
                self._load()  # first load also needs the session writer
            else:
                self._swap(engine)
            metrics.RELOADS.labels(outcome="swapped").inc()
            logger.info("bundle %s now serving", engine.bundle.version)
            return 200, {
                "swapped": True,
                "bundle_version": engine.bundle.version,
                "previous": serving,
            }
        metrics.RELOADS.labels(outcome="rejected").inc()
        return 409, {"swapped": False, "error": message, "field": field, "bundle_version": serving}

    @bentoml.api(route="/admin/consent")
    def consent(
        self,
        ctx: bentoml.Context,
        customer_id: Annotated[str, Field(min_length=1, max_length=256)],
        personalisation: bool,
    ) -> Any:
        """A customer withdrew (``personalisation: false``) or gave consent to
        personalisation: their next request anywhere follows it, and so does the next
        training. Needs the admin bearer token (the storefront's back end holds it)."""
        actor, refused = self._authorise(ctx, "consent")
        if refused is not None:
            return refused
        store = self._writer.store if hasattr(self, "_writer") else None
        try:
            change = change_consent(self.settings, customer_id, personalisation, online_store=store)
        except ConsentError as error:
            ctx.response.status_code = 400
            self._audit(actor, "consent", "rejected", {"error": str(error)})
            return {"error": str(error), "field": "customer_id"}
        self._audit(actor, "consent", "changed", change.as_dict())
        return change.as_dict()

    @bentoml.api(route="/admin/erase")
    def erase(
        self,
        ctx: bentoml.Context,
        customer_id: Annotated[str, Field(min_length=1, max_length=256)],
    ) -> Any:
        """Forget a customer (pseudonym or raw id): suppress them first in the online store
        (every pod refuses their events from the answer on) and in the offline record (so
        re-imports withhold them), then remove them from every online feature view, the
        offline Parquet data, event and exposure logs. 503 with Retry-After, nothing
        changed, when the online store is out of reach. Needs the admin bearer token;
        audited by pseudonym only."""
        actor, refused = self._authorise(ctx, "erase")
        if refused is not None:
            return refused
        store = self._writer.store if hasattr(self, "_writer") else None
        try:
            # Under the event-log lock: no append races the logs' rewrite.
            with self._events_lock:
                report = erase_customer(
                    self.settings, customer_id, online_store=store, shared=self.shared_state
                )
        except ErasureError as error:
            unavailable = isinstance(error, ErasureUnavailable)
            ctx.response.status_code = 503 if unavailable else 400
            if unavailable:
                ctx.response.headers["Retry-After"] = str(self.settings.retry_after_seconds)
            self._audit(actor, "erase", "rejected", {"error": str(error)})
            return {"error": str(error), "field": "customer_id"}
        self._audit(actor, "erase", "erased", report.as_dict())
        metrics.ERASURES.inc()
        return {"erased": True, **report.as_dict()}


# The decorator returns BentoML's Service wrapper, which the type checker cannot see.
# The concurrency limit first (outermost of ours): a refused request costs nothing more.
Segrec.add_asgi_middleware(  # type: ignore[attr-defined]
    ConcurrencyLimit,
    max_concurrency=SETTINGS.max_concurrency,
    retry_after_seconds=SETTINGS.retry_after_seconds,
    workers=lambda: bentoml_workers("Segrec"),
)
Segrec.add_asgi_middleware(BodySizeLimit, max_bytes=SETTINGS.max_request_bytes)  # type: ignore[attr-defined]
Segrec.add_asgi_middleware(  # type: ignore[attr-defined]
    JsonBodiesOnly,
    paths=[api.route for api in Segrec.apis.values()],  # type: ignore[attr-defined]
)
# /docs.json as the service behaves (BentoML's own drops nullables and error statuses).
Segrec.add_asgi_middleware(HonestOpenAPI, spec=lambda: Segrec.openapi_spec.asdict())  # type: ignore[attr-defined]
# The storefront demo and console (serving/ui), over whatever engine this worker serves.
Segrec.mount_asgi_app(  # type: ignore[attr-defined]
    build_ui_app(SETTINGS, lambda: bentoml.get_current_service().engine), path="/ui"
)
# BentoML asks each answer's output spec for its media type, and for a dict that means
# building a pydantic TypeAdapter and a JSON schema on every response: 4-6% of the
# worker's CPU under the storefront mix (py-spy, 2026-11-23). The answer depends on the
# class alone, so it is computed once here.
for _api in Segrec.apis.values():  # type: ignore[attr-defined]
    if _api.output_spec.media_type is None:
        _api.output_spec.media_type = _api.output_spec.mime_type()
