"""A lookup that read a deployment before it changed must not cache what it read after the change
(it would serve the old version for a whole TTL: seen in tests/e2e/test_rollout.py before the fix)."""

from __future__ import annotations

import asyncio
import threading

from aiaas.services.inference import targets as targets_mod
from aiaas.services.inference.targets import Split, Target, Targets


async def test_a_lookup_racing_a_change_does_not_cache_the_old_answer(settings, db, monkeypatch):
    old = Split((Target("ft:old", "uri-old", "single_label_classification", deployment="sup"),), (100,), None, "sup")
    new = Split((Target("ft:new", "uri-new", "single_label_classification", deployment="sup"),), (100,), None, "sup")
    current = [old]
    read, release = threading.Event(), threading.Event()

    def lookup(db_, org_id, name):
        answer = current[0]  # what the database said when the lookup read it
        read.set()
        release.wait(5)
        return answer

    monkeypatch.setattr(targets_mod, "deployment_target", lookup)
    t = Targets(db, settings)
    pending = asyncio.ensure_future(t.deployment("org", "sup"))
    await asyncio.to_thread(read.wait, 5)
    current[0] = new  # the change commits ...
    t.forget("org", deployment="sup")  # ... and this process drops its lookups
    release.set()
    assert (await pending).model_id == "ft:old"  # that request was already under way
    read.clear()
    release.set()
    assert (await t.deployment("org", "sup")).model_id == "ft:new"  # the next one reads afresh
