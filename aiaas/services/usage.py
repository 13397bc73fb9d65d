"""Metering: inference usage aggregated in memory, training usage per job, and usage reports with cost.

Why a recorder: a database write per inference request would cost more than the model
on a small classifier. `UsageRecorder.record_inference` only adds to a dict (a lock and
two additions); a background thread writes one row per (key, model) every
`usage_flush_seconds`, and `aclose()` writes what is left at shutdown. A crash loses
at most that interval's counts.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import func, literal_column, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aiaas.core.clock import now
from aiaas.core.errors import InvalidRequest
from aiaas.core.ids import new_id
from aiaas.core.settings import Settings
from aiaas.store.db import Database
from aiaas.store.models import ApiKey, UsageEvent

log = logging.getLogger(__name__)

GroupBy = Literal["day", "model", "key"]
DAY_S = 86_400
MAX_RANGE_S = 366 * DAY_S
IDLE_EXIT_FLUSHES = 60  # the flusher thread ends after this many empty rounds; the next record restarts it


@dataclass
class _Bucket:
    requests: int = 0
    input_tokens: int = 0
    first_at: int = 0


class UsageRecorder:
    """state.services.usage: counts inference in memory, writes it in the background."""

    def __init__(self, db: Database, *, flush_seconds: float = 1.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.flush_seconds = flush_seconds
        self.clock = clock
        self._pending: dict[tuple[str, str | None, str], _Bucket] = {}
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one writer at a time: the thread, a reader, or aclose
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    def record_inference(self, org_id: str, key_id: str | None, model: str, requests: int,
                         input_tokens: int) -> None:
        """Count `requests` requests and `input_tokens` tokens; cheap enough for every request."""
        with self._lock:
            bucket = self._pending.get((org_id, key_id, model))
            if bucket is None:
                bucket = self._pending[(org_id, key_id, model)] = _Bucket(first_at=int(self.clock()))
            bucket.requests += int(requests)
            bucket.input_tokens += int(input_tokens)
            if self._thread is None and not self._closed:
                # The thread holds only a weak reference: a recorder dropped without aclose() (an app
                # discarded in a test) lets its thread end instead of flushing into a database that is gone.
                self._thread = threading.Thread(target=_flush_loop, args=(weakref.ref(self), self._wake),
                                                name="usage-flush", daemon=True)
                self._thread.start()

    def _round(self, idle: int, failures: int) -> tuple[int, int, bool]:
        """One background round; returns (idle rounds, consecutive failures, keep going)."""
        try:
            idle = 0 if self.flush() else idle + 1
            failures = 0
        except Exception:  # noqa: BLE001 - the counts stay pending for the next round
            failures += 1
            if failures == 1 or failures % 60 == 0:
                log.exception("usage flush failed (%d in a row); counts are kept and retried", failures)
        with self._lock:
            if idle >= IDLE_EXIT_FLUSHES and not self._pending:
                self._thread = None
                return idle, failures, False
        return idle, failures, True

    def _take(self) -> dict[tuple[str, str | None, str], _Bucket]:
        with self._lock:
            pending, self._pending = self._pending, {}
        return pending

    def _restore(self, items: dict[tuple[str, str | None, str], _Bucket]) -> None:
        with self._lock:
            for k, b in items.items():
                cur = self._pending.setdefault(k, _Bucket(first_at=b.first_at))
                cur.requests += b.requests
                cur.input_tokens += b.input_tokens
                cur.first_at = min(cur.first_at, b.first_at)

    def flush(self) -> int:
        """Write pending counts (blocking; call from a thread). Returns the rows written."""
        with self._flush_lock:
            pending = self._take()
            if not pending:
                return 0
            rows = [
                UsageEvent(id=new_id("usage"), org_id=org, key_id=key, kind="inference", model=model,
                           requests=b.requests, input_tokens=b.input_tokens, trained_tokens=0,
                           cpu_seconds=0.0, created_at=b.first_at)
                for (org, key, model), b in pending.items()
            ]
            try:
                with self.db.session() as s:
                    s.add_all(rows)
                return len(rows)
            except IntegrityError:
                pass
            except Exception:
                self._restore(pending)
                raise
            # A constraint failed: an organisation was deleted meanwhile. Drop its rows, keep the rest.
            written = 0
            for (org, key, model), row in zip(pending, rows, strict=True):
                try:
                    with self.db.session() as s:
                        s.add(row)
                    written += 1
                except IntegrityError:
                    log.warning("dropping usage of organization %s (deleted)", org)
                except Exception:
                    self._restore({(org, key, model): pending[(org, key, model)]})
                    log.exception("usage flush failed; kept for the next round")
            return written

    async def aflush(self) -> int:
        return await asyncio.to_thread(self.flush)

    async def aclose(self) -> None:
        self._closed = True
        self._wake.set()
        thread = self._thread
        if thread is not None:
            await asyncio.to_thread(thread.join, 10)
        self._thread = None
        await self.aflush()


def _flush_loop(ref: weakref.ref[UsageRecorder], wake: threading.Event) -> None:
    idle = failures = 0
    while True:
        recorder = ref()
        if recorder is None:
            return
        interval = recorder.flush_seconds
        del recorder
        if wake.wait(interval):
            return  # aclose() flushes what is left
        recorder = ref()
        if recorder is None:
            return
        idle, failures, keep_going = recorder._round(idle, failures)
        del recorder
        if not keep_going:
            return


def training_event(*, org_id: str, key_id: str | None, model: str, trained_tokens: int,
                   cpu_seconds: float) -> UsageEvent:
    """The usage row of one job attempt, written by the worker under its lease."""
    return UsageEvent(id=new_id("usage"), org_id=org_id, key_id=key_id, kind="training", model=model,
                      requests=0, input_tokens=0, trained_tokens=int(trained_tokens),
                      cpu_seconds=round(float(cpu_seconds), 3), created_at=now())


# ---- reports ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class PriceSheet:
    currency: str
    per_million_input_tokens: float
    per_million_trained_tokens: float
    per_cpu_hour: float

    @classmethod
    def from_settings(cls, settings: Settings) -> PriceSheet:
        return cls(settings.price_currency, settings.price_per_million_input_tokens,
                   settings.price_per_million_trained_tokens, settings.price_per_cpu_hour)

    def cost(self, input_tokens: int, trained_tokens: int, cpu_seconds: float) -> dict[str, float]:
        inference = input_tokens / 1e6 * self.per_million_input_tokens
        training = trained_tokens / 1e6 * self.per_million_trained_tokens
        training += cpu_seconds / 3600 * self.per_cpu_hour
        return {"inference": round(inference, 6), "training": round(training, 6),
                "total": round(inference + training, 6)}

    def public(self) -> dict[str, Any]:
        return {"currency": self.currency, "per_million_input_tokens": self.per_million_input_tokens,
                "per_million_trained_tokens": self.per_million_trained_tokens,
                "per_cpu_hour": self.per_cpu_hour}


def _totals(requests: int, input_tokens: int, trained_tokens: int, cpu: float, prices: PriceSheet) -> dict[str, Any]:
    return {"requests": int(requests), "input_tokens": int(input_tokens),
            "trained_tokens": int(trained_tokens), "cpu_seconds": round(float(cpu), 3),
            "cost": prices.cost(input_tokens, trained_tokens, cpu)}


def check_range(start: int | None, end: int | None, *, now: int) -> tuple[int, int]:
    end = now + 1 if end is None else end
    start = end - 30 * DAY_S if start is None else start
    if start < 0 or end <= start:
        raise InvalidRequest("start must be before end (unix seconds, start inclusive, end exclusive).",
                             param="start")
    if end - start > MAX_RANGE_S:
        raise InvalidRequest("The range may cover at most 366 days; ask for several ranges.", param="end")
    return start, end


def summarize(session: Session, org_id: str, *, start: int, end: int, group_by: GroupBy,
              prices: PriceSheet) -> dict[str, Any]:
    """Usage and cost of one organisation in [start, end), grouped by day, model or key."""
    sums = (func.sum(UsageEvent.requests), func.sum(UsageEvent.input_tokens),
            func.sum(UsageEvent.trained_tokens), func.sum(UsageEvent.cpu_seconds))
    # The divisor is inlined: PostgreSQL matches GROUP BY to the select list only when both read the same.
    group_col: Any = {"day": UsageEvent.created_at // literal_column(str(DAY_S)), "model": UsageEvent.model,
                      "key": UsageEvent.key_id}[group_by]
    stmt = (select(group_col, *sums)
            .where(UsageEvent.org_id == org_id, UsageEvent.created_at >= start, UsageEvent.created_at < end)
            .group_by(group_col).order_by(group_col))
    rows = list(session.execute(stmt))
    names: dict[str, str] = {}
    if group_by == "key":
        ids = [r[0] for r in rows if r[0]]
        if ids:
            names = dict(session.execute(select(ApiKey.id, ApiKey.name).where(ApiKey.org_id == org_id,
                                                                               ApiKey.id.in_(ids))).all())
    data = []
    total_req = total_inp = total_trained = 0
    total_cpu = 0.0
    for group, req, inp, trained, cpu in rows:
        req, inp, trained, cpu = int(req or 0), int(inp or 0), int(trained or 0), float(cpu or 0.0)
        total_req, total_inp, total_trained = total_req + req, total_inp + inp, total_trained + trained
        total_cpu += cpu
        item: dict[str, Any] = {"object": "usage.bucket"}
        if group_by == "day":
            item["day"] = datetime.fromtimestamp(int(group) * DAY_S, UTC).date().isoformat()
        elif group_by == "model":
            item["model"] = group
        else:
            item["key_id"] = group
            item["key_name"] = names.get(group) if group else None
        data.append(item | _totals(req, inp, trained, cpu, prices))
    return {"object": "usage", "start": start, "end": end, "group_by": group_by, "prices": prices.public(),
            "data": data, "total": _totals(total_req, total_inp, total_trained, total_cpu, prices)}
