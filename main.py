"""wg-fleet: the command line, the app factory and the lifespan that owns every resource."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import getpass
import logging
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import prometheus_client
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

import clientctl
import orphans as orphans_module
import uapi
from access import RateLimiter, is_loopback, is_unprotected
from actions import router as actions_router
from admin import router as admin_router
from admin_auth import AdminAuth, hash_password
from command import CommandError, CommandRunner, ReportingRunner, Runner
from config import DEFAULT_IPV6_PREFIX, Config, ConfigError, load_config
from context import AppContext, utc_now
from database import Client, Database
from display import relative_time, short_key, utc_text
from errors import StartupError, TooManyRequests, Unauthorized, WgFleetError
from events import note_server_key
from groups import router as groups_router
from history import router as history_router
from hostcheck import AllowedHosts, default_allowed_hosts
from inventory import router as inventory_router
from limits import BodySizeLimit
from metrics import Metrics
from pruning import Pruner, sweep_all
from reconcile import find_orphans
from registry import Clock
from routes import router
from serving import QuietStartupFailure, bind_socket, serve
from unhandled import JSONErrors
from webhooks import Deliverer, cursor_key, start_cursors
from wireguard import WireGuard

logger = logging.getLogger("wg_fleet")

HERE = Path(__file__).resolve().parent
CAP_NET_ADMIN = 12
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


async def start(context: AppContext) -> None:
    """Schema, server keys and configs, interfaces up and matching, peers reconciled.

    Raises `StartupError` when clients lie outside an edited subnet: nothing is deleted
    because of a config edit (see `main.py orphans`).
    """
    config = context.config
    await context.database.write(lambda session: context.database.migrate())
    keys = [cursor_key(config.node, hook.url) for hook in config.webhooks]
    await context.database.write(partial(start_cursors, keys=keys))
    known = await context.database.read(lambda s: set(s.scalars(select(Client.fleet).distinct())))
    for fleet in sorted(known - set(config.fleets)):
        logger.warning("fleet %s is in the database but not in the config: ignored", fleet)
    subnets = {fleet: settings.subnet for fleet, settings in config.local_fleets.items()}
    outside = await context.database.read(partial(find_orphans, subnets=subnets))
    if outside:
        raise StartupError(orphans_module.refusal(config, outside, "PATH"))
    for fleet, settings in config.local_fleets.items():
        context.server_keys[fleet] = await context.wireguard.ensure_server_config(
            fleet, settings, has_clients=fleet in known
        )
        await context.database.write(
            partial(
                note_server_key,
                fleet=fleet,
                public_key=context.server_keys[fleet],
                node=config.node,
                time=context.clock(),
            )
        )
    for report in await sweep_all(context, at_startup=True):
        logger.info(
            "wg_%s: up; %d peer(s) restored, %d unknown removed, %d pruned",
            report.fleet,
            report.restored,
            report.removed_unknown,
            report.pruned,
        )


def create_app(
    config: Config,
    *,
    runner: Runner | None = None,
    clock: Clock = utc_now,
    webhook_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """Build the app; nothing touches the database or WireGuard until the lifespan runs."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = Database(config.database)
        metrics = Metrics(config.node_of)
        observed = ReportingRunner(runner or CommandRunner(), metrics.command_failed)
        context = AppContext(
            config=config,
            runner=observed,
            clock=clock,
            database=database,
            wireguard=WireGuard(
                observed,
                config.wireguard_dir,
                own_scope=under_systemd(),
                # The daemon's socket only with the real `wg`: fakes stand in for both.
                uapi_dir=uapi.SOCKET_DIR if runner is None else None,
            ),
            server_keys={},
            started_at=clock(),
            metrics=metrics,
            limiter=RateLimiter(config.register_rate_limit) if config.register_rate_limit else None,
        )
        app.state.context = context
        try:
            try:
                await start(context)
            except (CommandError, OSError, RuntimeError, WgFleetError) as error:
                cause = getattr(error, "cause", "")  # the database's own words, if any
                raise StartupError(
                    f"wg-fleet could not start: {error}" + (f" ({cause})" if cause else "")
                ) from None
            pruner = Pruner(context)
            pruner.start()
            deliverer = Deliverer(config, database, metrics, clock, webhook_transport)
            deliverer.start()
            context.activity.start()
            context.publisher.start()
            app.state.pruner = pruner
            reload_on_hangup(pruner)
            remote = sorted(set(config.fleets) - set(config.local_fleets))
            logger.info(
                "node %s runs %d fleet(s)%s",
                config.node,
                len(config.local_fleets),
                f"; shows {', '.join(remote)} run by other nodes" if remote else "",
            )
            if is_unprotected(config) and not is_loopback(config.listen.host):
                logger.warning(
                    "no access control is configured and wg-fleet listens on %s: anyone "
                    "who reaches it can register clients and read the dashboard "
                    "(see the README's Security section)",
                    config.listen.host,
                )
            # What start-up built lives as long as the process: moved out of the collector's
            # sight, so a full collection, which runs about once a second while clients
            # register, walks thousands of objects instead of 130,000 (80 ms pauses).
            gc.collect()
            gc.freeze()
            try:
                yield
            finally:
                gc.unfreeze()  # a process that runs apps one after another gets them back
                # Every task the app started is ended here, in reverse order of need.
                stop_reloading_on_hangup()
                await pruner.stop()
                await deliverer.stop()
                await context.registry.close()
                await context.publisher.stop()
                await context.status.close()
                try:
                    await context.activity.stop()
                except WgFleetError as error:
                    logger.error("could not store the last ping times: %s", error)
        finally:
            context.wireguard.close()
            database.close()

    app = FastAPI(
        title="wg-fleet",
        summary="Registration, hostnames and monitoring for fleets of WireGuard clients.",
        lifespan=lifespan,
        # Swagger UI and ReDoc load their JavaScript from a CDN: not from a service that
        # hands out keys (and an isolated network has no CDN). /openapi.json stays.
        docs_url=None,
        redoc_url=None,
    )
    templates = make_templates()
    app.state.templates = templates
    app.include_router(router)
    app.include_router(admin_router)
    app.include_router(groups_router)
    app.include_router(inventory_router)
    app.include_router(history_router)
    app.include_router(actions_router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.add_middleware(BodySizeLimit)
    if config.admin is not None:
        app.add_middleware(
            AdminAuth,
            admin=config.admin,
            trusted_proxies=config.trusted_proxies,
            ipv6_prefix=config.register_rate_limit.ipv6_prefix
            if config.register_rate_limit
            else DEFAULT_IPV6_PREFIX,
        )
    # Outermost: a request for another host costs nothing further, not even a log-in.
    app.add_middleware(
        AllowedHosts, allowed_hosts=config.allowed_hosts or default_allowed_hosts(config)
    )
    app.add_middleware(JSONErrors)  # outermost of ours: covers the middlewares above too

    @app.exception_handler(WgFleetError)
    async def domain_error(request: Request, error: WgFleetError) -> Response:
        if wants_html(request):
            return templates.TemplateResponse(
                request, "error.html", {"error": error}, status_code=error.status_code
            )
        headers = {}
        if isinstance(error, TooManyRequests):
            headers["Retry-After"] = str(error.retry_after)
        elif isinstance(error, Unauthorized):
            headers["WWW-Authenticate"] = 'Bearer realm="wg-fleet"'
        return JSONResponse(
            {"detail": error.detail}, status_code=error.status_code, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": describe_validation(error)}, status_code=422)

    return app


def reload_on_hangup(pruner: Pruner) -> None:
    """SIGHUP (systemd's `reload`) runs a reconcile pass and rewrites the published files
    at once. The configuration itself is read only at start-up."""

    def hangup() -> None:
        logger.info("SIGHUP: reconciling every fleet now")
        pruner.wake()

    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, hangup)


def stop_reloading_on_hangup() -> None:
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)


def under_systemd() -> bool:
    """Whether systemd started this process and can give wg-quick a scope of its own."""
    return bool(os.environ.get("INVOCATION_ID")) and shutil.which("systemd-run") is not None


def make_templates() -> Jinja2Templates:
    """Autoescaped templates, with the formatting filters they use."""
    environment = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True)
    environment.filters.update(ago=relative_time, utc=utc_text, short_key=short_key)
    return Jinja2Templates(env=environment)


def wants_html(request: Request) -> bool:
    """Dashboard pages answer errors with a page; everything else with JSON."""
    path = request.url.path
    return request.method == "GET" and (path == "/" or path.startswith("/fleet/"))


def describe_validation(error: RequestValidationError) -> str:
    """One sentence for the first problem in a request, naming where it is."""
    first: dict[str, Any] = error.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    message = str(first.get("msg", "is invalid")).removeprefix("Value error, ")
    if first.get("type") == "extra_forbidden":
        message = "is not a known field"
    return f"Invalid request: {where or 'body'}: {message}."


def has_net_admin() -> bool:
    """Whether this process holds CAP_NET_ADMIN in its effective set."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
    except OSError:
        pass
    return False


def check_prerequisites() -> str | None:
    """A sentence saying what is missing to manage WireGuard, or None."""
    missing = [name for name in ("wg", "wg-quick", "ip") if shutil.which(name) is None]
    if missing:
        return (
            f"{', '.join(missing)} not found on PATH: install the wireguard-tools and iproute2 "
            "packages (and wireguard-go where the kernel has no WireGuard module)."
        )
    if not has_net_admin():
        return (
            "wg-fleet manages network interfaces and needs root (CAP_NET_ADMIN); "
            "run it as root or grant it CAP_NET_ADMIN."
        )
    return None


def parse_arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="main.py",
        description="Run the wg-fleet server for the fleets in a YAML config. "
        "`main.py migrate --config PATH` only upgrades the database; "
        "`main.py orphans --config PATH [--remove]` lists (and removes) the clients "
        "left outside an edited subnet; "
        "`main.py hash-password` prints a hash for the config's admin password; "
        "`main.py clients list|remove` lists or removes clients through a running server.",
    )
    parser.add_argument("--config", required=True, type=Path, help="the YAML config file")
    parser.add_argument("--host", help="listen address (default ::, dual stack)")
    parser.add_argument("--port", type=int, help="listen port (default 8000)")
    parser.add_argument("--database", help="SQLite file or SQLAlchemy URL")
    parser.add_argument("--hosts-file", type=Path, help="where the hosts file is written")
    parser.add_argument("--wireguard-dir", type=Path, help="where wg_<fleet>.conf files live")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        type=str.lower,
    )
    return parser.parse_args(argv)


def overrides_from(arguments: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line, which win over the config file."""
    names = ("host", "port", "database", "hosts_file", "wireguard_dir")
    return {
        name: str(value) if isinstance(value, Path) else value
        for name in names
        if (value := getattr(arguments, name)) is not None
    }


def read_password() -> str:
    """From a prompt on a terminal (asked twice), else the first line of standard input."""
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise ValueError("the two passwords differ")
        return password
    return sys.stdin.readline().rstrip("\r\n")


def print_password_hash() -> int:
    """`main.py hash-password`: print only the argon2 hash for the config's `admin`."""
    try:
        password = read_password()
    except ValueError as error:
        print(f"hash-password: {error}.", file=sys.stderr)  # noqa: T201
        return 2
    if not password:
        print("hash-password: the password is empty.", file=sys.stderr)  # noqa: T201
        return 2
    print(hash_password(password))  # noqa: T201 - the command's output
    return 0


def migrate(config: Config) -> int:
    """`main.py migrate --config PATH`: create or upgrade the database's schema, then exit."""
    database = Database(config.database)
    try:
        database.migrate()
    except SQLAlchemyError as error:
        print(f"cannot migrate the database: {error}", file=sys.stderr)  # noqa: T201
        return 1
    finally:
        database.close()
    logger.info("the database is at the newest schema")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["hash-password"]:
        return print_password_hash()
    if argv[:1] == ["clients"]:
        return clientctl.main(argv[1:])
    command = argv.pop(0) if argv[:1] in (["migrate"], ["orphans"]) else "serve"
    remove = command == "orphans" and "--remove" in argv
    if remove:
        argv.remove("--remove")
    arguments = parse_arguments(argv)
    try:
        config = load_config(arguments.config, overrides_from(arguments))
    except ConfigError as error:
        print(error, file=sys.stderr)  # noqa: T201 - the one sentence the CLI promises
        return 2
    logging.basicConfig(level=arguments.log_level.upper(), format=LOG_FORMAT)
    if command == "migrate":
        return migrate(config)
    if command == "orphans":
        return orphans_module.run(config, remove)
    refusal = orphans_module.check_before_serving(config, arguments.config)
    if refusal:
        print(refusal, file=sys.stderr)  # noqa: T201 - exit 2: the config needs a decision
        return 2
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    problem = check_prerequisites()
    if problem:
        print(problem, file=sys.stderr)  # noqa: T201
        return 1
    try:
        sock = bind_socket(config.listen)
    except OSError as error:
        where = f"[{config.listen.host}]:{config.listen.port}"
        print(f"cannot listen on {where}: {error.strerror}", file=sys.stderr)  # noqa: T201
        return 1
    return serve(QuietStartupFailure(create_app(config)), sock, arguments.log_level)


if __name__ == "__main__":
    sys.exit(main())
