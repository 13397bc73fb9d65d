"""/v1/usage — the organisation's metered usage and its cost, grouped by day, model or key."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from aiaas.api.deps import PrincipalDep, StateDep
from aiaas.api.openapi import documented
from aiaas.protocol import responses as r
from aiaas.core.clock import now
from aiaas.services import usage as usage_service

MAX_UNIX_S = 253_402_300_799  # 9999-12-31: beyond it, databases overflow

router = APIRouter(prefix="/v1", tags=["usage"])


@router.get("/usage", responses=documented(r.UsageReport, "invalid_request"))
async def get_usage(
    principal: PrincipalDep,
    state: StateDep,
    start: Annotated[int | None, Query(ge=0, le=MAX_UNIX_S)] = None,
    end: Annotated[int | None, Query(ge=0, le=MAX_UNIX_S)] = None,
    group_by: Literal["day", "model", "key"] = "day",
) -> dict:
    """Usage in [start, end) (unix seconds; default: the last 30 days), priced by the server's price sheet."""
    start, end = usage_service.check_range(start, end, now=now())
    await state.services.usage.aflush()  # this process's pending counts first: reports include earlier requests
    prices = usage_service.PriceSheet.from_settings(state.settings)

    def report() -> dict:
        with state.db.session() as s:
            return usage_service.summarize(s, principal.org_id, start=start, end=end, group_by=group_by,
                                           prices=prices)

    return await run_in_threadpool(report)
