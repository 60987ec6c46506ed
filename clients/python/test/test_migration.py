"""docs/MIGRATING.md's promise, executed: the seed's call site, with only
its import changed, works against the real gateway and delivers what the
FastAPI module's helpers sent."""

from __future__ import annotations

import ast
import difflib
import re

from conftest import REPO
from test_seed import (
    assert_seed_message,
    seed_file_processing_status,
    seed_review_updated,
    seed_system_notification,
)

import wsgate

GUIDE = REPO / "docs" / "MIGRATING.md"


def call_site(which: str) -> str:
    text = GUIDE.read_text()
    found = re.search(rf"<!-- seed call site: {which} -->\n```python\n(.*?)```", text, re.S)
    assert found, f"MIGRATING.md has no '{which}' seed call site block"
    return found.group(1)


def test_the_two_call_sites_differ_only_in_the_import():
    before, after = call_site("before").splitlines(), call_site("after").splitlines()
    changed = [
        line
        for line in difflib.unified_diff(before, after, lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert changed == ["-from src.api.v1.websocket import (", "+from wsgate import ("]


async def test_the_migrated_call_site_runs_unchanged(server_factory, clients, monkeypatch):
    server = server_factory()
    monkeypatch.setenv("WSGATE_URL", server.url)
    monkeypatch.setenv("WSGATE_API_KEY", server.api_key)
    u123 = await clients(server, "123")
    u456 = await clients(server, "456")
    other = await clients(server, "789")

    code = compile(call_site("after"), str(GUIDE), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    try:
        result = eval(code, {"__name__": "seed_call_site"})  # noqa: S307 (our own doc)
        await result
    finally:
        await wsgate.aclose_default_client()

    notification = seed_system_notification("System maintenance starting in 5 minutes", "warning")
    review = seed_review_updated("review_789", {"status": "approved", "updated_by": "admin"})
    assert_seed_message(await u123.recv(), notification)
    assert_seed_message(await u123.recv(), seed_file_processing_status("file_456", "processing", 75))
    assert_seed_message(await u123.recv(), review)
    assert_seed_message(await u456.recv(), notification)
    assert_seed_message(await u456.recv(), review)
    assert_seed_message(await other.recv(), notification)
    for ws in (u123, u456, other):
        await ws.assert_nothing_pending()
