"""Errors nobody expected answer JSON 500 with one logged traceback; a database that
cannot be used answers 503 with a sentence. Both caused by a real database here."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, closing
from pathlib import Path

import pytest

from database import Database
from tests.conftest import Running
from tests.fakes import FakeWireGuard
from unhandled import DETAIL

StartApp = Callable[..., AbstractAsyncContextManager[Running]]


async def test_a_row_the_orm_cannot_read_answers_json_500_and_logs_one_traceback(
    start_app: StartApp, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with start_app() as running:
        async with running.client() as http:
            assert (await http.post("/fleet/alpha/register")).status_code == 200
        # Damage the row behind the service's back: SQLite stores any text in the column.
        with closing(sqlite3.connect(tmp_path / "clients.db")) as db:
            db.execute("UPDATE clients SET registered_at = 'not a time'")
            db.commit()
        caplog.clear()
        async with running.client() as http:
            response = await http.get("/api/fleets/alpha/clients")
            health = await http.get("/health")

    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"detail": DETAIL}
    tracebacks = [r for r in caplog.records if r.exc_info is not None]
    assert len(tracebacks) == 1
    assert tracebacks[0].getMessage() == "unhandled error answering GET /api/fleets/alpha/clients"
    assert "Invalid isoformat string: 'not a time'" in caplog.text
    assert health.status_code == 200  # one bad row is not an unusable database


async def test_an_unusable_database_answers_503_with_a_sentence_and_adds_no_peer(
    start_app: StartApp, fake_wg: FakeWireGuard, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    unusable = tmp_path / "a-directory.db"
    unusable.mkdir()
    async with start_app() as running:
        working = running.context.database
        broken = Database(str(unusable))
        running.context.registry._database = broken  # the registry's handle on it
        try:
            async with running.client() as http:
                response = await http.post("/fleet/alpha/register")
        finally:
            running.context.registry._database = working
            broken.close()

    assert response.status_code == 503
    assert response.json() == {
        "detail": "The database is not available right now, so nothing was changed; "
        "try again later."
    }
    assert fake_wg.interfaces["wg_alpha"].peers == {}
    assert not [r for r in caplog.records if r.exc_info is not None]  # expected: no traceback
    assert any(
        r.levelno == logging.WARNING and "registration in fleet alpha failed" in r.getMessage()
        for r in caplog.records
    )
