"""In-process API fixtures: the real app over httpx's ASGI transport, on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import pytest

from aiaas.api.app import create_app
from aiaas.store import tenancy


@dataclass
class Org:
    id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@pytest.fixture
def app(settings, db):
    return create_app(settings, db=db, migrate_db=False)


@pytest.fixture
async def client(app):
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


def make_org(db, name: str) -> Org:
    with db.session() as s:
        org, _row, key = tenancy.create_organization(s, name)
        return Org(id=org.id, key=key)


@pytest.fixture
def org_a(db) -> Org:
    return make_org(db, "org-a")


@pytest.fixture
def org_b(db) -> Org:
    return make_org(db, "org-b")
