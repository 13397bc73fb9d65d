"""The console's protections, in process (no browser): sessions and cookies, CSRF, scopes, tenancy,
escaping and the Content-Security-Policy. The browser tests (tests/e2e/test_console_*.py) drive the
same things through Chromium."""

from __future__ import annotations

import hashlib
import re

import pytest
from fastapi.routing import APIRoute
from sqlalchemy import select, update

from aiaas.store import tenancy
from aiaas.ui import routers as console_routers
from aiaas.store.models import ApiKey, UiSession
from tests.helpers.datasets import toy_csv
from tests.ui.conftest import csrf_of, make_key, new_client, sign_in

PAGES = ["/ui/overview", "/ui/files", "/ui/jobs", "/ui/jobs/new", "/ui/models", "/ui/deployments", "/ui/usage",
         "/ui/keys", "/ui/audit"]
PAYLOAD = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'


async def upload(client, csrf: str, name: str = "train.csv", body: bytes | None = None) -> str:
    r = await client.post("/ui/files", files={"file": (name, body or toy_csv(30))}, data={"csrf": csrf})
    assert r.status_code == 200, r.text
    return r.json()["id"]


async def test_pages_send_strangers_to_sign_in(client):
    for path in PAGES + ["/ui/files/file-x", "/ui/jobs/ftjob-x/stream"]:
        r = await client.get(path)
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/signin?next="), path


async def test_session_cookie_is_random_httponly_strict_and_never_the_key(client, db, org_a):
    form = await client.get("/ui/signin")
    r = await client.post("/ui/signin", data={"api_key": org_a.key, "csrf": csrf_of(form.text)})
    assert r.status_code == 303
    cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith("aiaas_console="))
    token = cookie.split(";")[0].split("=", 1)[1]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert "Path=/ui" in cookie and "Secure" not in cookie  # plain HTTP here
    assert org_a.key not in cookie and len(token) >= 40
    with db.session() as s:
        rows = list(s.scalars(select(UiSession)))
        assert len(rows) == 1 and rows[0].id == hashlib.sha256(token.encode()).hexdigest()
        assert org_a.key not in repr([(r.id, r.org_id, r.key_id, r.scopes, r.csrf_token) for r in rows])
        assert rows[0].scopes == ["admin"] and rows[0].org_id == org_a.id


async def test_cookie_is_secure_over_https(app, org_a):
    async with new_client(app) as c:
        c.base_url = "https://test"
        form = await c.get("/ui/signin")
        r = await c.post("/ui/signin", data={"api_key": org_a.key, "csrf": csrf_of(form.text)})
        cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith("aiaas_console="))
        assert "Secure" in cookie


async def test_wrong_key_and_forged_signin_are_refused(client, org_a):
    form = await client.get("/ui/signin")
    r = await client.post("/ui/signin", data={"api_key": org_a.key[:-2] + "xx", "csrf": csrf_of(form.text)})
    assert r.status_code == 401 and "aiaas_console=" not in r.headers.get("set-cookie", "")
    r = await client.post("/ui/signin", data={"api_key": org_a.key, "csrf": "forged"})  # login CSRF
    assert r.status_code == 403 and "aiaas_console=" not in r.headers.get("set-cookie", "")


async def test_sign_in_never_redirects_off_site(client, org_a):
    form = await client.get("/ui/signin?next=https://evil.example/x")
    assert "evil" not in form.text
    r = await client.post("/ui/signin", data={"api_key": org_a.key, "csrf": csrf_of(form.text),
                                              "next": "//evil.example/x"})
    assert r.headers["location"] == "/ui/overview"  # the landing page, not the requested one


async def test_sign_out_ends_the_session_server_side(client, db, org_a):
    csrf = await sign_in(client, org_a.key)
    token = client.cookies.get("aiaas_console")
    r = await client.post("/ui/signout", data={"csrf": "wrong"})  # a cross-site sign-out changes nothing
    assert (await client.get("/ui/files")).status_code == 200
    r = await client.post("/ui/signout", data={"csrf": csrf})
    assert r.status_code == 303 and r.headers["location"] == "/ui/signin"
    with db.session() as s:
        assert s.scalar(select(UiSession)) is None
    client.cookies.set("aiaas_console", token, path="/ui")  # replaying the old cookie does not work
    assert (await client.get("/ui/files")).status_code == 303


async def test_expired_session_and_revoked_key_end_the_session(client, db, org_a):
    other = make_key(db, type("O", (), {"id": org_a.id})(), ["read"])
    await sign_in(client, other)
    assert (await client.get("/ui/files")).status_code == 200
    with db.session() as s:
        s.execute(update(ApiKey).where(ApiKey.prefix == tenancy.display_prefix(other)).values(revoked_at=1))
    assert (await client.get("/ui/files")).status_code == 303
    with db.session() as s:
        s.execute(update(ApiKey).values(revoked_at=None))
    assert (await client.get("/ui/files")).status_code == 200
    with db.session() as s:
        s.execute(update(UiSession).values(expires_at=1))
    assert (await client.get("/ui/files")).status_code == 303


async def test_every_state_changing_form_needs_the_csrf_token(client, db, org_a):
    csrf = await sign_in(client, org_a.key)
    file_id = await upload(client, csrf)
    posts = [
        ("/ui/files", {"files": {"file": ("a.csv", toy_csv(30))}, "data": {}}),
        ("/ui/jobs", {"data": {"training_file": file_id, "model": "tfidf-linear"}}),
        ("/ui/keys", {"data": {"name": "x", "scope": "read"}}),
        ("/ui/deployments", {"data": {"name": "d", "model": "ft:x"}}),
        ("/ui/deployments/d/delete", {"data": {}}),
        ("/ui/deployments/d/try", {"data": {"text": "hi"}}),
        ("/ui/jobs/ftjob-x/cancel", {"data": {}}),
        ("/ui/keys/key-x/revoke", {"data": {}}),
        ("/ui/deployments/d/model", {"data": {"model": "ft:x"}}),
        ("/ui/deployments/d/traffic", {"data": {"ref": "ft:x", "weight": "100", "sticky_header": "x-user"}}),
        ("/ui/deployments/d/shadow", {"data": {}}),
        ("/ui/deployments/d/rollback", {"data": {}}),
        ("/ui/registered/r/aliases", {"data": {"alias": "prod", "version": "1"}}),
        ("/ui/registered/r/aliases/prod/delete", {"data": {}}),
        ("/ui/download", {"data": {"model": "ft:x"}}),
    ]
    # Every form the console accepts is in the list (sign-in has its own pre-session token, tested above;
    # sign-out without the token ends nothing, tested below).
    forms = [r for router in console_routers() for r in router.routes if isinstance(r, APIRoute) and "POST" in r.methods]
    reached = {next(r.path for r in forms if r.path_regex.match(path)) for path, _ in posts}
    assert [r.path for r in forms if r.path not in reached] == ["/ui/signin", "/ui/signout"]
    for path, kw in posts:
        for token in (None, "forged-" + csrf[:10]):
            data = dict(kw.get("data", {}))
            if token:
                data["csrf"] = token
            r = await client.post(path, data=data, files=kw.get("files"))
            assert r.status_code == 403 and "CSRF" in r.text, (path, token, r.status_code)
    with db.session() as s:
        assert s.scalar(select(ApiKey).where(ApiKey.name == "x")) is None
    r = await client.post("/ui/signout", data={"csrf": "forged-" + csrf[:10]})
    assert r.status_code == 303 and r.headers["location"] == "/ui/overview"  # still signed in
    r = await client.post("/ui/keys", data={"name": "x", "scope": "read", "csrf": csrf})
    assert r.status_code == 201 and re.search(r"aiaas_sk_\w+", r.text)


async def test_a_read_key_sees_but_cannot_change(client, db, org_a):
    admin_csrf = None
    async with new_client(client._transport.app) as admin:
        admin_csrf = await sign_in(admin, org_a.key)
        await upload(admin, admin_csrf)
    csrf = await sign_in(client, make_key(db, org_a, ["read"]))
    for path in ["/ui/overview", "/ui/files", "/ui/jobs", "/ui/models", "/ui/deployments", "/ui/usage"]:
        r = await client.get(path)
        assert r.status_code == 200, path
        assert "upload-form" not in r.text and 'action="/ui/keys"' not in r.text
    for path in ["/ui/keys", "/ui/audit", "/ui/jobs/new"]:
        assert (await client.get(path)).status_code == 403, path
    r = await client.post("/ui/files", files={"file": ("a.csv", toy_csv(30))}, data={"csrf": csrf})
    assert r.status_code == 403 and "&#39;write&#39; scope" in r.text
    r = await client.post("/ui/keys", data={"name": "x", "scope": "admin", "csrf": csrf})
    assert r.status_code == 403


async def test_an_infer_key_sees_only_deployments(client, db, org_a):
    await sign_in(client, make_key(db, org_a, ["infer"]))
    assert (await client.get("/ui/deployments")).status_code == 200
    nav = (await client.get("/ui/deployments")).text
    for path in ["/ui/overview", "/ui/files", "/ui/jobs", "/ui/models", "/ui/usage", "/ui/keys", "/ui/audit"]:
        assert (await client.get(path)).status_code == 403, path
        assert f'href="{path}"' not in nav


async def test_foreign_ids_answer_the_same_404_as_missing_ones(app, db, org_a, org_b):
    async with new_client(app) as a, new_client(app) as b:
        csrf_b = await sign_in(b, org_b.key)
        foreign_file = await upload(b, csrf_b)
        await sign_in(a, org_a.key)
        for foreign, missing in [(f"/ui/files/{foreign_file}", "/ui/files/file-doesnotexist0000000000000"),
                                 ("/ui/deployments/theirs", "/ui/deployments/nothing")]:
            r1, r2 = await a.get(foreign), await a.get(missing)
            assert r1.status_code == r2.status_code == 404
            strip = lambda t: re.sub(r"[\w-]{6,}", "ID", re.sub(r'value="[^"]+"', "", t))
            assert strip(r1.text) == strip(r2.text)
        # A foreign file cannot be trained on either: the job form answers as for a missing file.
        r = await a.get(f"/ui/jobs/new?file={foreign_file}")
        assert r.status_code == 404


async def test_tenant_strings_are_escaped(client, org_a):
    csrf = await sign_in(client, org_a.key)
    body = ("text,label\n" + "".join(f"row number {i} is fine,{PAYLOAD if i % 2 else 'ok'}\n" for i in range(30)))
    fid = await upload(client, csrf, name=PAYLOAD + ".csv", body=body.encode())
    for path in ["/ui/files", f"/ui/files/{fid}", "/ui/audit"]:
        html = (await client.get(path)).text
        assert "window.__xss" in html or path == "/ui/audit"
        assert "<script>window" not in html and "<img src=x" not in html, path
        assert "&lt;script&gt;" in html or "&lt;img" in html or path == "/ui/audit"


async def test_pages_carry_a_strict_csp_and_no_inline_script_or_style(client, org_a):
    csrf = await sign_in(client, org_a.key)
    fid = await upload(client, csrf)
    for path in PAGES + [f"/ui/files/{fid}", "/ui/signin"]:
        r = await client.get(path)
        assert r.status_code == 200, path
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert r.headers["cache-control"] == "no-store"
        assert not re.search(r"<script(?![^>]*\bsrc=)", r.text), path  # every script is a file
        assert not re.search(r"\sstyle=|\son[a-z]+=", r.text), path     # no inline style or handler


@pytest.mark.parametrize("path", ["/ui/static/console.js", "/ui/static/vendor/uplot/uPlot.iife.min.js"])
async def test_static_assets_are_served_from_the_package(client, path):
    r = await client.get(path)
    assert r.status_code == 200 and len(r.content) > 1000
    assert r.headers["x-content-type-options"] == "nosniff" and "max-age=3600" in r.headers["cache-control"]


async def test_sign_in_attempts_are_rate_limited_per_client(client, org_a):
    form = await client.get("/ui/signin")
    token = csrf_of(form.text)
    statuses = []
    for _ in range(22):
        r = await client.post("/ui/signin", data={"api_key": "aiaas_sk_wrong", "csrf": token})
        statuses.append(r.status_code)
        token = csrf_of(r.text)  # each answer carries a fresh sign-in form
    assert statuses[:20] == [401] * 20 and statuses[-1] == 429
    r = await client.post("/ui/signin", data={"api_key": org_a.key, "csrf": token})
    assert r.status_code == 429  # even the right key waits out the minute
