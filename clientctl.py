"""`python3 main.py clients …`: list and remove clients through a running server's API.

Credentials come from WG_FLEET_USER and WG_FLEET_PASSWORD (never from argv, where
other users could read them); output is a table or, with --json, JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
COLUMNS = ("fleet", "address", "hostname", "online", "last_handshake", "source_ip")


class Failure(Exception):
    """One sentence for stderr."""


def parse_arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="main.py clients",
        description="List or remove the clients of a running wg-fleet server. "
        "Admin credentials are read from WG_FLEET_USER and WG_FLEET_PASSWORD.",
    )
    parser.add_argument("--url", default=DEFAULT_URL, help=f"the server (default {DEFAULT_URL})")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="list clients")
    listing.add_argument("--fleet", help="only this fleet")
    listing.add_argument("--offline", action="store_true", help="only offline clients")
    listing.add_argument("--url", default=argparse.SUPPRESS)
    listing.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    removal = commands.add_parser("remove", help="remove a client now")
    removal.add_argument("fleet")
    removal.add_argument("address")
    removal.add_argument("--ban", action="store_true", help="also ban its key")
    removal.add_argument("--url", default=argparse.SUPPRESS)
    removal.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    return parser.parse_args(argv)


def make_client(url: str) -> httpx.Client:
    user, password = os.environ.get("WG_FLEET_USER"), os.environ.get("WG_FLEET_PASSWORD")
    auth = (user, password) if user and password is not None else None
    return httpx.Client(base_url=url.rstrip("/"), auth=auth, timeout=30)


def answer(response: httpx.Response) -> Any:
    if response.is_success:
        return response.json()
    try:
        detail = response.json()["detail"]
    except (ValueError, KeyError, TypeError):
        detail = response.reason_phrase
    hint = ""
    if response.status_code == 401:
        hint = "; set WG_FLEET_USER and WG_FLEET_PASSWORD"
    raise Failure(f"the server answered {response.status_code}: {str(detail).rstrip('.')}{hint}")


def clients_of(http: httpx.Client, fleet: str) -> Iterator[dict[str, Any]]:
    cursor: str | None = None
    while True:
        params = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
        page = answer(http.get(f"/api/fleets/{fleet}/clients", params=params))
        for client in page["clients"]:
            yield {"fleet": fleet, **client}
        cursor = page["next_cursor"]
        if not cursor:
            return


def list_clients(http: httpx.Client, fleet: str | None, offline: bool) -> list[dict[str, Any]]:
    fleets = [fleet] if fleet else [f["name"] for f in answer(http.get("/api/fleets"))["fleets"]]
    return [
        client
        for name in fleets
        for client in clients_of(http, name)
        if not (offline and client["online"])
    ]


def render_table(rows: list[dict[str, Any]]) -> str:
    cells = [[("-" if row.get(c) is None else str(row[c])) for c in COLUMNS] for row in rows]
    header = [c.upper() for c in COLUMNS]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(text.ljust(w) for text, w in zip(line, widths, strict=True)).rstrip()
        for line in [header, *cells]
    ]
    return "\n".join(lines)


def run(arguments: argparse.Namespace) -> str:
    with make_client(arguments.url) as http:
        if arguments.command == "list":
            rows = list_clients(http, arguments.fleet, arguments.offline)
            return json.dumps(rows, indent=2) if arguments.json else render_table(rows)
        params = {"ban": "true"} if arguments.ban else {}
        result = answer(
            http.delete(f"/api/fleets/{arguments.fleet}/clients/{arguments.address}", params=params)
        )
        if arguments.json:
            return json.dumps(result)
        return f"removed {arguments.address} from fleet {arguments.fleet}" + (
            " and banned its key" if arguments.ban else ""
        )


def main(argv: Sequence[str]) -> int:
    arguments = parse_arguments(argv)
    try:
        output = run(arguments)
    except Failure as error:
        print(f"clients: {error}.", file=sys.stderr)  # noqa: T201 - the command's output
        return 1
    except httpx.HTTPError as error:
        print(f"clients: cannot reach {arguments.url}: {error}", file=sys.stderr)  # noqa: T201
        return 1
    print(output)  # noqa: T201 - the command's output
    return 0
