"""Console pages over the model lifecycle, in process: registered models with versions, aliases and metric
deltas; alias set/move/delete through the same service as the API (audited, scope-checked); the download
button; a deployment's traffic split, rollback, revisions, request rate / latency and shadow agreement;
sign-in and sign-out audited."""

from __future__ import annotations

import io
import tarfile

import pytest
from sqlalchemy import select, update

from aiaas.store.models import AuditLog, ModelVersion
from tests.helpers.deployed import export_tiny_classifier, register
from tests.ui.conftest import csrf_of, make_key, new_client, sign_in

V1 = "ft:tiny-bert:org-a:toy:ftjob-1"
V2 = "ft:tiny-bert:org-a:toy:ftjob-2"
LABELS = ["negative", "positive"]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return export_tiny_classifier(tmp_path_factory.mktemp("art"))


@pytest.fixture
def toy(settings, db, org_a, artifact):
    for model_id in (V1, V2):
        register(settings, db, org_a.id, artifact, model_id=model_id, task="single_label_classification",
                 labels=LABELS)
    with db.session() as s:
        for version, metrics in ((1, {"accuracy": 0.80, "eval_loss": 0.50, "note": "first"}),
                                 (2, {"accuracy": 0.85, "eval_loss": 0.55})):
            s.execute(update(ModelVersion).where(ModelVersion.model_id == (V1 if version == 1 else V2))
                      .values(metrics=metrics))
    return "toy"


def actions(db, org_id: str) -> list[str]:
    with db.session() as s:
        return list(s.scalars(select(AuditLog.action).where(AuditLog.org_id == org_id).order_by(AuditLog.id)))


async def test_versions_side_by_side_and_alias_forms(app, db, org_a, org_b, toy):
    read_key = make_key(db, org_a, ["read"])
    async with new_client(app) as admin, new_client(app) as reader, new_client(app) as other:
        csrf = await sign_in(admin, org_a.key)
        listing = (await admin.get("/ui/models")).text
        assert 'href="/ui/registered/toy"' in listing
        page = (await admin.get("/ui/registered/toy")).text
        # Version 2 beside version 1 with its changes: accuracy up (better), eval loss up (worse).
        assert 'id="v2"' in page and 'id="v1"' in page
        assert 'class="delta better"' in page and "+0.05" in page
        assert 'class="delta worse"' in page
        assert "from v1" in page and "first version" in page
        assert 'id="alias-form"' in page and 'id="download-2"' in page

        r = await admin.post("/ui/registered/toy/aliases", data={"alias": "prod", "version": "1", "csrf": csrf})
        assert r.status_code == 303 and r.headers["location"] == "/ui/registered/toy"
        api = (await admin.get("/v1/registered_models/toy", headers={"Authorization": f"Bearer {org_a.key}"})).json()
        assert api["aliases"] == {"prod": 1}
        r = await admin.post("/ui/registered/toy/aliases", data={"alias": "prod", "version": "2", "csrf": csrf})
        assert r.status_code == 303
        page = (await admin.get("/ui/registered/toy")).text
        assert 'id="alias-prod"' in page and '<td class="alias-version">2</td>' in page
        # A bad alias: the error page says what to fix, naming the field; nothing changes.
        r = await admin.post("/ui/registered/toy/aliases", data={"alias": "latest", "version": "1", "csrf": csrf})
        assert r.status_code == 400 and "reserved" in r.text and "alias" in r.text
        # Without the CSRF token: refused.
        r = await admin.post("/ui/registered/toy/aliases", data={"alias": "x", "version": "1"})
        assert r.status_code == 403 and "CSRF" in r.text

        # A read key sees the versions, no form, and a posted form is refused as the API's PUT would be.
        read_csrf = await sign_in(reader, read_key)
        page = (await reader.get("/ui/registered/toy")).text
        assert 'id="v2"' in page and 'id="alias-form"' not in page and "move-alias" not in page
        for path, data in (("/ui/registered/toy/aliases", {"alias": "prod", "version": "1"}),
                           ("/ui/registered/toy/aliases/prod/delete", {})):
            r = await reader.post(path, data=data | {"csrf": read_csrf})
            assert r.status_code == 403 and "Not allowed" in r.text and "write" in r.text

        # Another organisation: the same 404 page as a name that does not exist.
        other_csrf = await sign_in(other, org_b.key)
        theirs, missing = await other.get("/ui/registered/toy"), await other.get("/ui/registered/nothing")
        assert theirs.status_code == missing.status_code == 404
        r = await other.post("/ui/registered/toy/aliases", data={"alias": "prod", "version": "1", "csrf": other_csrf})
        assert r.status_code == 404

        r = await admin.post("/ui/registered/toy/aliases/prod/delete", data={"csrf": csrf})
        assert r.status_code == 303
        assert (await admin.get("/v1/registered_models/toy",
                                headers={"Authorization": f"Bearer {org_a.key}"})).json()["aliases"] == {}
    done = actions(db, org_a.id)
    assert done.count("model.alias.set") == 2 and done.count("model.alias.deleted") == 1


async def test_download_button_streams_the_archive(app, db, org_a, toy):
    async with new_client(app) as admin:
        csrf = await sign_in(admin, org_a.key)
        page = (await admin.get(f"/ui/models/{V2}")).text
        assert 'id="download-model"' in page and 'href="/ui/registered/toy#v2"' in page
        r = await admin.post("/ui/download", data={"model": "toy/2", "format": "onnx", "archive": "tar.gz",
                                                   "csrf": csrf})
        assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
        with tarfile.open(fileobj=io.BytesIO(r.content), mode="r:gz") as t:
            names = t.getnames()
        assert any(n.endswith("labels.json") for n in names) and any(n.endswith(".onnx") for n in names)
        r = await admin.post("/ui/download", data={"model": "toy/2", "format": "pickle", "csrf": csrf})
        assert r.status_code == 400 and "format" in r.text
    assert "model.downloaded" in actions(db, org_a.id)


async def test_split_rollback_revisions_charts_and_shadow(app, db, org_a, toy):
    h = {"Authorization": f"Bearer {org_a.key}"}
    read_key = make_key(db, org_a, ["read"])
    async with new_client(app) as admin, new_client(app) as reader:
        assert (await admin.post("/v1/deployments", json={"name": "sup", "model": "toy/1"}, headers=h)).status_code == 201
        csrf = await sign_in(admin, org_a.key)
        r = await admin.post("/ui/deployments/sup/traffic", data={"ref": ["toy/1", "toy/2", "", "", ""],
                                                                   "weight": ["90", "10", "", "", ""], "csrf": csrf})
        assert r.status_code == 303, r.text
        dep = (await admin.get("/v1/deployments/sup", headers=h)).json()
        assert dep["traffic"] == [{"model": "toy/1", "weight": 90}, {"model": "toy/2", "weight": 10}]
        assert dep["revision"] == 2
        # Weights that do not add up: the service's message on the error page; nothing changes.
        r = await admin.post("/ui/deployments/sup/traffic", data={"ref": ["toy/1", "toy/2"], "weight": ["90", "20"],
                                                                   "csrf": csrf})
        assert r.status_code == 400 and "add up to 100" in r.text
        r = await admin.post("/ui/deployments/sup/shadow", data={"model": "toy/2", "percent": "100", "csrf": csrf})
        assert r.status_code == 303
        for _ in range(6):
            r = await admin.post("/v1/deployments/sup/predict", json={"inputs": ["great service"]}, headers=h)
            assert r.status_code == 200
        page = (await admin.get("/ui/deployments/sup")).text
        assert 'id="rate-chart"' in page and 'class="line p50"' in page
        assert 'id="rate-hour">6<' in page
        assert 'id="shadow-agreement"' in page  # the mirror runs after the answer: agreement or "nothing yet"

        r = await admin.post("/ui/deployments/sup/rollback", data={"revision": "1", "csrf": csrf})
        assert r.status_code == 303
        dep = (await admin.get("/v1/deployments/sup", headers=h)).json()
        assert dep["traffic"] == [{"model": "toy/1", "weight": 100}] and dep["revision"] == 4
        page = (await admin.get("/ui/deployments/sup")).text
        assert all(f'id="rev-{n}"' in page for n in (1, 2, 3, 4)) and ">rollback<" in page

        read_csrf = await sign_in(reader, read_key)
        page = (await reader.get("/ui/deployments/sup")).text
        assert 'id="rev-4"' in page and 'id="split-form"' not in page and 'id="rollback"' not in page
        r = await reader.post("/ui/deployments/sup/rollback", data={"csrf": read_csrf})
        assert r.status_code == 403 and "Not allowed" in r.text
        r = await reader.post("/ui/deployments/sup/model", data={"model": "toy/2", "csrf": read_csrf})
        assert r.status_code == 403
    assert (await_count := actions(db, org_a.id).count("deployment.updated")) == 3, await_count


async def test_sticky_header_is_set_and_cleared_through_the_split_form(app, db, org_a, toy):
    h = {"Authorization": f"Bearer {org_a.key}"}
    read_key = make_key(db, org_a, ["read"])
    async with new_client(app) as admin, new_client(app) as reader:
        assert (await admin.post("/v1/deployments", json={"name": "sup", "model": "toy/1"}, headers=h)).status_code == 201
        csrf = await sign_in(admin, org_a.key)
        page = (await admin.get("/ui/deployments/sup")).text
        assert 'name="sticky_header"' in page and 'id="sticky"' not in page
        split = {"ref": ["toy/1", "toy/2"], "weight": ["50", "50"], "csrf": csrf}
        r = await admin.post("/ui/deployments/sup/traffic", data=split | {"sticky_header": "X-User-Id"})
        assert r.status_code == 303, r.text
        assert (await admin.get("/v1/deployments/sup", headers=h)).json()["sticky_header"] == "x-user-id"
        page = (await admin.get("/ui/deployments/sup")).text
        assert 'value="x-user-id"' in page and "Sticky by header <code>x-user-id</code>" in page
        # The same user always reaches the same model of the split.
        seen = set()
        for _ in range(8):
            r = await admin.post("/v1/deployments/sup/predict", json={"inputs": ["fine"]},
                                 headers=h | {"X-User-Id": "user-42"})
            seen.add(r.json()["model"])
        assert len(seen) == 1
        # Too long a header name: the API's own limit, on the error page; nothing changes.
        r = await admin.post("/ui/deployments/sup/traffic", data=split | {"sticky_header": "x" * 65})
        assert r.status_code in (400, 422) and (await admin.get("/v1/deployments/sup", headers=h)).json()["revision"] == 2
        # Saved with the field empty: cleared, as a new revision.
        r = await admin.post("/ui/deployments/sup/traffic", data=split | {"sticky_header": "  "})
        assert r.status_code == 303
        dep = (await admin.get("/v1/deployments/sup", headers=h)).json()
        assert dep["sticky_header"] is None and dep["revision"] == 3
        # Without the form's token, or with a read key: refused before anything changes.
        r = await admin.post("/ui/deployments/sup/traffic", data={"ref": ["toy/1"], "weight": ["100"],
                                                                   "sticky_header": "x-a"})
        assert r.status_code == 403 and "CSRF" in r.text
        read_csrf = await sign_in(reader, read_key)
        r = await reader.post("/ui/deployments/sup/traffic", data=split | {"csrf": read_csrf, "sticky_header": "x-a"})
        assert r.status_code == 403 and "Not allowed" in r.text
        assert (await admin.get("/v1/deployments/sup", headers=h)).json()["sticky_header"] is None


def served(page: str, version: int) -> str:
    """The Deployments cell of one version's row on the registered model page."""
    row = page.split(f'<tr id="v{version}">', 1)[1].split("</tr>", 1)[0]
    return row.split('class="wrap serving-cell">', 1)[1].split("</td>", 1)[0]


async def test_each_version_lists_the_deployments_that_serve_it(app, db, org_a, org_b, toy):
    h = {"Authorization": f"Bearer {org_a.key}"}
    read_key = make_key(db, org_a, ["read"])
    async with new_client(app) as admin, new_client(app) as reader:
        csrf = await sign_in(admin, org_a.key)
        assert (await admin.post("/ui/registered/toy/aliases", data={"alias": "prod", "version": "2",
                                                                      "csrf": csrf})).status_code == 303
        for name, model in (("direct", V1), ("by-number", "toy/1"), ("canary", "toy/1"), ("idle", "toy/1")):
            assert (await admin.post("/v1/deployments", json={"name": name, "model": model}, headers=h)).status_code == 201
        patch = {"traffic": [{"model": "toy/1", "weight": 80}, {"model": "toy@prod", "weight": 20}],
                 "shadow": {"model": "toy/2", "percent": 15}}
        assert (await admin.patch("/v1/deployments/canary", json=patch, headers=h)).status_code == 200
        assert (await admin.delete("/v1/deployments/idle", headers=h)).status_code in (200, 204)
        page = (await admin.get("/ui/registered/toy")).text
        v1, v2 = served(page, 1), served(page, 2)
        assert [n for n in ("by-number", "canary", "direct", "idle") if f'data-deployment="{n}"' in v1] == \
            ["by-number", "canary", "direct"]
        assert '<span class="share">80%</span>' in v1 and '<span class="share">100%</span>' in v1
        assert 'data-deployment="canary"' in v2 and '<span class="share">20%</span>' in v2 and "@prod" in v2
        assert "shadow, 15% mirrored" in v2 and v2.count("served-by") == 2
        # Moving the alias moves what the page says (the deployment follows it).
        assert (await admin.post("/ui/registered/toy/aliases", data={"alias": "prod", "version": "1",
                                                                      "csrf": csrf})).status_code == 303
        page = (await admin.get("/ui/registered/toy")).text
        assert "@prod" in served(page, 1) and "@prod" not in served(page, 2)
        # The model page says the same for its one version.
        model_page = (await admin.get(f"/ui/models/{V2}")).text
        box = model_page.split('id="served-by"', 1)[1].split("</section>", 1)[0]
        assert box.count("served-by") == 1 and "shadow, 15% mirrored" in box
        box = (await admin.get(f"/ui/models/{V1}")).text.split('id="served-by"', 1)[1].split("</section>", 1)[0]
        assert box.count("served-by") == 4  # direct, by number, and canary twice (80% and the alias's 20%)
        # A read key may list deployments: it sees the same column.
        await sign_in(reader, read_key)
        assert 'data-deployment="canary"' in served((await reader.get("/ui/registered/toy")).text, 1)
    # Another organisation's deployment naming the same reference never shows up here.
    with db.session() as s:
        from aiaas.store import deployments as dep_store

        dep_store.create_deployment(s, org_b.id, name="theirs", model="toy/1", min_replicas=0)
    async with new_client(app) as admin:
        await sign_in(admin, org_a.key)
        assert "theirs" not in (await admin.get("/ui/registered/toy")).text


async def test_live_charts_fragment(app, db, org_a, org_b, toy):
    h = {"Authorization": f"Bearer {org_a.key}"}
    async with new_client(app) as admin, new_client(app) as other, new_client(app) as anonymous:
        assert (await admin.post("/v1/deployments", json={"name": "sup", "model": "toy/1"}, headers=h)).status_code == 201
        await sign_in(admin, org_a.key)
        page = (await admin.get("/ui/deployments/sup?refresh=2")).text
        assert 'data-refresh="/ui/deployments/sup/charts?refresh=2"' in page and 'data-every="2"' in page
        first = await admin.get("/ui/deployments/sup/charts")
        assert first.status_code == 200 and 'id="rate-hour">0<' in first.text
        assert first.headers["content-security-policy"].startswith("default-src 'self'")
        assert "<html" not in first.text and 'id="traffic-live"' in first.text  # the fragment alone
        for _ in range(3):
            assert (await admin.post("/v1/deployments/sup/predict", json={"inputs": ["ok"]}, headers=h)).status_code == 200
        fresh = (await admin.get("/ui/deployments/sup/charts")).text
        assert 'id="rate-hour">3<' in fresh and 'class="bar"' in fresh
        await sign_in(other, org_b.key)
        assert (await other.get("/ui/deployments/sup/charts")).status_code == 404
        r = await anonymous.get("/ui/deployments/sup/charts")
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/signin")


async def test_sign_in_and_sign_out_are_audited(app, db, org_a):
    async with new_client(app) as c:
        csrf = await sign_in(c, org_a.key)
        r = await c.post("/ui/signout", data={"csrf": csrf})
        assert r.status_code == 303
        assert csrf_of((await c.get("/ui/signin")).text)
    done = actions(db, org_a.id)
    assert done.count("console.signed_in") == 1 and done.count("console.signed_out") == 1
