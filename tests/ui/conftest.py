"""In-process console fixtures: the real app over httpx's ASGI transport (SQLite and PostgreSQL)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx
import pytest

from aiaas.api.app import create_app
from aiaas.store import tenancy

CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Org:
    id: str
    key: str


def make_org(db, name: str) -> Org:
    with db.session() as s:
        org, _row, key = tenancy.create_organization(s, name)
        return Org(id=org.id, key=key)


def make_key(db, org: Org, scopes: list[str]) -> str:
    with db.session() as s:
        _row, key = tenancy.create_key(s, org.id, name="-".join(scopes), scopes=scopes)
        return key


@pytest.fixture
def app(settings, db):
    return create_app(settings, db=db, migrate_db=False)


def new_client(app) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


@pytest.fixture
async def client(app):
    async with new_client(app) as c:
        yield c


@pytest.fixture
def org_a(db) -> Org:
    return make_org(db, "org-a")


@pytest.fixture
def org_b(db) -> Org:
    return make_org(db, "org-b")


def csrf_of(html: str) -> str:
    m = CSRF_RE.search(html)
    assert m, "no CSRF field on the page"
    return m.group(1)


async def sign_in(client: httpx.AsyncClient, key: str) -> str:
    """Sign in through the form; return the session's CSRF token (read from a page, as a browser would)."""
    form = await client.get("/ui/signin")
    r = await client.post("/ui/signin", data={"api_key": key, "csrf": csrf_of(form.text)})
    assert r.status_code == 303, r.text
    page = await client.get(r.headers["location"])
    assert page.status_code == 200, page.text
    return csrf_of(page.text)
