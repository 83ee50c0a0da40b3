"""The state workers and pods share (suppression list, event-id claims) on a real SQLite
file and a real redis-server: one winner per event id across processes and clients,
claims released and expiring, suppressions visible to every other reader, and a store out
of reach raising ``SharedStateUnavailable`` instead of answering wrongly.

The per-event cost of a claim is printed: ``.venv/bin/pytest -s tests/test_shared_state.py
-k cost``."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from segrec.event_dedupe import EventDedupe
from segrec.settings import Settings
from segrec.shared_state import (
    EVENT_KEY_PREFIX,
    SUPPRESSED_KEY,
    RedisSharedState,
    SharedState,
    SharedStateUnavailable,
    SqliteSharedState,
    open_shared_state,
    redis_options,
)
from segrec.suppression import SharedSuppression, pseudonyms_in
from serving.event_admission import EventAdmission
from serving.events import validate_events
from training.features.local_redis import redis_server

TIMEOUT = 0.5
SECRET = "shared-state-test-secret"
ALICE, BOB = "c_00000000000000a1", "c_00000000000000b0"


@pytest.fixture(scope="module")
def redis_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    try:
        with redis_server(tmp_path_factory.mktemp("shared-redis")) as address:
            yield address
    except RuntimeError as error:  # not installed: make setup
        pytest.skip(str(error))


@pytest.fixture(params=["sqlite", "redis"])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> SharedState:
    if request.param == "sqlite":
        return SqliteSharedState(tmp_path / "shared_state.db", TIMEOUT)
    redis = RedisSharedState(request.getfixturevalue("redis_address"), TIMEOUT)
    redis.client.flushall()  # the server is shared by the module's tests
    return redis


def _another(state: SharedState) -> SharedState:
    """A second handle on the same store: another worker or pod."""
    if isinstance(state, SqliteSharedState):
        return SqliteSharedState(state.path, TIMEOUT)
    assert isinstance(state, RedisSharedState)
    options = state.client.connection_pool.connection_kwargs
    return RedisSharedState(f"{options['host']}:{options['port']}", TIMEOUT)


def test_open_shared_state_follows_the_online_store(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    sqlite = open_shared_state(settings)
    assert isinstance(sqlite, SqliteSharedState)
    assert sqlite.path == settings.privacy_dir / "shared_state.db"
    redis = open_shared_state(settings.model_copy(update={"online_store": "redis"}))
    assert isinstance(redis, RedisSharedState)
    assert redis_options("redis:6380,db=2,ssl=true,password=s3") == {
        "host": "redis",
        "port": 6380,
        "db": 2,
        "ssl": True,
        "password": "s3",
    }
    with pytest.raises(ValueError, match="host:port"):
        redis_options("db=1")


def test_suppression_is_seen_by_every_other_handle(state: SharedState) -> None:
    other = _another(state)
    assert other.suppressed([ALICE, BOB]) == set()
    assert state.suppress([ALICE]) == {ALICE}
    assert state.suppress([ALICE, BOB]) == {BOB}, "only the new one"
    assert other.suppressed([ALICE, BOB, "c_00000000000000c0"]) == {ALICE, BOB}
    assert other.all_suppressed() == {ALICE, BOB}


def test_a_claim_has_one_winner_until_released_or_expired(state: SharedState) -> None:
    other = _another(state)
    assert state.claim(["k1", "k2"], 60) == {"k1", "k2"}
    assert other.claim(["k1", "k2", "k3"], 60) == {"k3"}
    other.release(["k1"])
    assert other.claim(["k1"], 60) == {"k1"}, "released: claimable again"
    assert state.claim([], 60) == set()
    # Expiry: Redis counts whole seconds, so one second and a little.
    assert state.claim(["short"], 1) == {"short"}
    assert other.claim(["short"], 1) == set()
    time.sleep(1.2)
    assert other.claim(["short"], 60) == {"short"}, "expired: free again"


def test_sqlite_prunes_expired_claims(tmp_path: Path) -> None:
    state = SqliteSharedState(tmp_path / "shared_state.db", TIMEOUT)
    state.claim([f"old{n}" for n in range(50)], 0.1)
    time.sleep(0.2)
    state._next_prune = 0.0  # the next claim is due to prune
    state.claim(["new"], 60)
    rows = state._connection().execute("SELECT key FROM event_claims").fetchall()
    assert rows == [("new",)]


def _claim_all(path: str, keys: list[str], ready: Any, out: Any) -> None:
    state = SqliteSharedState(Path(path), 5.0)
    state.claim([], 60)
    ready.wait(timeout=120)  # both processes imported and ready: start together
    won: set[str] = set()
    for start in range(0, len(keys), 5):
        won |= state.claim(keys[start : start + 5], 60)
    out.put(sorted(won))


def test_sqlite_claims_across_processes_have_one_winner_each(tmp_path: Path) -> None:
    """Two processes (two workers of a pod) claim the same 2,000 ids at once, in the same
    order: each id is won by exactly one of them."""
    keys = [f"event-{n}" for n in range(2000)]
    path = str(tmp_path / "shared_state.db")
    creator = SqliteSharedState(Path(path), TIMEOUT)
    creator.claim(["create"], 60)  # the file exists
    creator._local.connection.close()  # no open connection crosses the fork
    context = multiprocessing.get_context("fork")  # a worker starts in milliseconds
    ready, out = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_claim_all, args=(path, keys, ready, out)) for _ in range(2)]
    for worker in workers:
        worker.start()
    results = [set(out.get(timeout=180)) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    print(f"\nsplit between the processes: {len(results[0])} / {len(results[1])}")
    assert results[0] | results[1] == set(keys)
    assert not results[0] & results[1], "an id claimed twice"


def test_redis_keys_hold_keyed_hashes_and_pseudonyms_only(redis_address: str) -> None:
    state = RedisSharedState(redis_address, TIMEOUT)
    state.client.flushall()
    dedupe = EventDedupe(state, SECRET, 60, 100)
    secret_looking_id = "order-4711-alice@example.com"
    assert dedupe.claim([secret_looking_id, "e2"]) == {secret_looking_id, "e2"}
    state.suppress([ALICE])
    keys = sorted(k.decode() for k in state.client.keys("*"))
    assert keys == sorted(
        [SUPPRESSED_KEY, *(EVENT_KEY_PREFIX + dedupe.key(i) for i in ("e2", secret_looking_id))]
    )
    assert all(re.fullmatch(r"segrec:(suppressed|event:[0-9a-f]{32})", k) for k in keys)
    assert not any("alice" in k or "4711" in k for k in keys)
    ttl = state.client.ttl(EVENT_KEY_PREFIX + dedupe.key("e2"))
    assert 0 < ttl <= 60
    # Another secret, other keys: the hashes cannot be recomputed without the key.
    assert EventDedupe(state, "other", 60, 100).key("e2") != dedupe.key("e2")


def test_a_store_out_of_reach_raises_unavailable(tmp_path: Path) -> None:
    with redis_server(tmp_path) as address:
        redis = RedisSharedState(address, TIMEOUT)
        assert redis.suppressed([ALICE]) == set()
    # The server is gone now: each call fails within its timeout, never hangs.
    sqlite_path = tmp_path / "shared_state.db"
    sqlite = SqliteSharedState(sqlite_path, TIMEOUT)
    sqlite.suppress([ALICE])
    sqlite._local.connection.close()
    sqlite._local.connection = None
    sqlite_path.write_bytes(b"\0" * 4096)  # scribbled over
    for state in (redis, sqlite):
        for call in (
            lambda s=state: s.suppressed([ALICE]),
            lambda s=state: s.suppress([BOB]),
            lambda s=state: s.claim(["k"], 60),
            lambda s=state: s.release(["k"]),
        ):
            started = time.monotonic()
            with pytest.raises(SharedStateUnavailable):
                call()
            assert time.monotonic() - started < 5, "a timeout, not a hang"
    sqlite_path.unlink()
    assert sqlite.suppress([ALICE]) == {ALICE}, "a repaired store works again"


class _Counting:
    """A real store, with its claim round trips counted."""

    def __init__(self, state: SharedState) -> None:
        self.state = state
        self.claims = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.state, name)

    def claim(self, keys: list[str], ttl: float) -> set[str]:
        self.claims += 1
        return self.state.claim(keys, ttl)


def test_the_local_memory_answers_repeats_without_a_round_trip(tmp_path: Path) -> None:
    counting = _Counting(SqliteSharedState(tmp_path / "shared_state.db", TIMEOUT))
    dedupe = EventDedupe(counting, SECRET, 60, local_ids=2)  # type: ignore[arg-type]
    assert dedupe.claim(["a", "b", "a"]) == {"a", "b"}
    assert dedupe.claim(["a", "b"]) == set() and counting.claims == 1, "from memory"
    assert dedupe.claim(["c"]) == {"c"}  # evicts "a", the oldest
    assert dedupe.claim(["a"]) == set() and counting.claims == 3, "the store still says no"
    dedupe.release(["c"])
    assert dedupe.claim(["c"]) == {"c"}, "released in memory and in the store"
    # Another worker of the pod (its own memory) sees the claims.
    other = EventDedupe(counting.state, SECRET, 60, local_ids=2)
    assert other.claim(["a", "b", "c", "d"]) == {"d"}


def _event(customer: str, event_id: str | None = None) -> dict[str, object]:
    event: dict[str, object] = {"customer_id": customer, "product_id": "P1", "type": "view"}
    if event_id:
        event["event_id"] = event_id
    return event


def test_admission_refuses_erased_customers_and_counts_each_event_once(tmp_path: Path) -> None:
    state = SqliteSharedState(tmp_path / "shared_state.db", TIMEOUT)
    now = dt.datetime(2026, 11, 23, 10, tzinfo=dt.UTC)

    def validate(raw: object, erased: object) -> object:
        return validate_events(raw, {"P1"}, now, erased)  # type: ignore[arg-type]

    pod_a = EventAdmission(SharedSuppression(state), EventDedupe(state, SECRET, 60, 100))
    pod_b = EventAdmission(
        SharedSuppression(_another(state)), EventDedupe(_another(state), SECRET, 60, 100)
    )
    batch = [_event(ALICE, "e1"), _event(BOB, "e2"), _event(ALICE, "e1"), _event(BOB)]
    first = pod_a.admit(batch, validate)  # type: ignore[arg-type]
    assert [e.event_id for e in first.fresh][:2] == ["e1", "e2"] and len(first.fresh) == 3
    assert first.duplicates == 1 and first.rejected == []
    again = pod_b.admit(batch, validate)  # type: ignore[arg-type]
    assert again.fresh == [] and again.duplicates == 4, "the other pod counts none twice"

    pod_a.suppression.add([BOB])
    later = pod_b.admit([_event(BOB, "e3"), _event(ALICE, "e4")], validate)  # type: ignore[arg-type]
    assert [e.event_id for e in later.fresh] == ["e4"]
    assert [(r.index, r.field, r.reason) for r in later.rejected] == [
        (0, "customer_id", "customer erased: events refused")
    ]
    pod_b.release(later.fresh)  # the write failed: the retry is new
    assert [e.event_id for e in pod_b.admit([_event(ALICE, "e4")], validate).fresh] == ["e4"]  # type: ignore[arg-type]
    assert pseudonyms_in([{"customer_id": f" {ALICE} "}, {"customer_id": 5}, "x", {}]) == {ALICE}


@pytest.mark.parametrize("batch", [1, 50])
def test_cost_of_a_claim_per_event(state: SharedState, batch: int) -> None:
    """Printed, not asserted: the shared dedupe's cost per event on this machine."""
    dedupe = EventDedupe(state, SECRET, 3600, local_ids=0)
    rounds = max(2000 // batch, 40)
    ids = [[f"cost-{batch}-{r}-{n}" for n in range(batch)] for r in range(rounds)]
    started = time.perf_counter()
    for chunk in ids:
        assert len(dedupe.claim(chunk)) == batch
    seconds = time.perf_counter() - started
    kind = type(state).__name__
    print(f"\n{kind}: {seconds / (rounds * batch) * 1e6:.1f} µs per event in calls of {batch}")
