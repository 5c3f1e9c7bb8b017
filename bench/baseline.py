"""The hello-world baseline: wg-fleet's two hot endpoints, doing nothing but answer.

Served through `serving.serve` on a socket from `serving.bind_socket`, so uvicorn runs with
exactly wg-fleet's settings; every throughput figure of the benchmark is a ratio to this.

    python bench/baseline.py PORT     (listens on `::`, dual stack)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastapi import FastAPI

from config import ListenConfig
from serving import bind_socket, serve

app = FastAPI(title="wg-fleet benchmark baseline")


@app.post("/fleet/{fleet}/register")
async def register(fleet: str) -> dict[str, str]:
    return {"status": "success", "fleet": fleet}


@app.post("/fleet/{fleet}/ping")
async def ping(fleet: str) -> dict[str, str]:
    return {"status": "ok", "fleet": fleet}


def main() -> int:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8001
    return serve(app, bind_socket(ListenConfig(host="::", port=port)), "info")


if __name__ == "__main__":
    sys.exit(main())
