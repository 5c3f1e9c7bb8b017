"""The hello-world baseline: wg-fleet's two hot endpoints, doing nothing but answer.

Served by the plain `uvicorn` command with its default settings, one listener per
address family (uvicorn given `::` listens on IPv6 only):

    cd bench && uvicorn baseline:app --host 0.0.0.0 --port 8001
    cd bench && uvicorn baseline:app --host :: --port 8001

It imports nothing of wg-fleet: no socket, setting or line of code is shared with the
service it is compared with, so a defect in wg-fleet's serving path cannot hide in both.
"""

from __future__ import annotations

from fastapi import FastAPI

app = FastAPI(title="wg-fleet benchmark baseline")


@app.post("/fleet/{fleet}/register")
async def register(fleet: str) -> dict[str, str]:
    return {"status": "success", "fleet": fleet}


@app.post("/fleet/{fleet}/ping")
async def ping(fleet: str) -> dict[str, str]:
    return {"status": "ok", "fleet": fleet}
