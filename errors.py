"""Domain errors. Each carries the HTTP status it maps to; its text is the user's sentence.
(`StartupError`, at the end, is the one error that is not an answer to a request.)

Error tree::

    WgFleetError
    ├── BadRequest             400  a request the server cannot interpret
    ├── Unauthorized           401  the fleet's registration token is missing or wrong
    ├── Forbidden              403  registration from outside the fleet's register_from
    ├── TooManyRequests        429  the registration rate limit (carries Retry-After)
    ├── FleetNotFound          404  no such fleet in the configuration
    ├── ClientNotFound         404  the caller's address belongs to no registered client
    ├── NotInFleet             403  a ping from outside the fleet's tunnel
    ├── KeyInOtherFleet        409  the public key is registered in another fleet
    ├── ServedElsewhere        421  another wg-fleet node runs this fleet
    ├── FleetExpired           410  the fleet's expires_at has passed
    ├── PoolExhausted          503  no free address left in the fleet's subnet
    ├── FleetFull              503  the fleet has max_clients clients
    ├── WireGuardUnavailable   503  `wg` failed; nothing was changed
    ├── DatabaseUnavailable    503  the database does not answer or cannot write
    └── Busy                   503  concurrent writers kept colliding; try again
"""

from __future__ import annotations


class WgFleetError(Exception):
    status_code = 500

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequest(WgFleetError):
    status_code = 400


class Unauthorized(WgFleetError):
    status_code = 401


class Forbidden(WgFleetError):
    status_code = 403


class TooManyRequests(WgFleetError):
    status_code = 429

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class FleetNotFound(WgFleetError):
    status_code = 404

    def __init__(self, fleet: str) -> None:
        super().__init__(f"There is no fleet named {fleet!r}.")


class ClientNotFound(WgFleetError):
    status_code = 404


class NotInFleet(WgFleetError):
    status_code = 403


class KeyInOtherFleet(WgFleetError):
    status_code = 409


class ServedElsewhere(WgFleetError):
    status_code = 421

    def __init__(self, fleet: str, node: str) -> None:
        super().__init__(f"Fleet {fleet} is run by the wg-fleet node {node!r}; ask that node.")


class FleetExpired(WgFleetError):
    status_code = 410


class PoolExhausted(WgFleetError):
    status_code = 503


class FleetFull(WgFleetError):
    status_code = 503


class WireGuardUnavailable(WgFleetError):
    status_code = 503


class DatabaseUnavailable(WgFleetError):
    status_code = 503

    def __init__(self, cause: str = "", *, full: bool = False) -> None:
        super().__init__(
            "The database has no room left (its disk is full), so nothing was changed; "
            "try again later."
            if full
            else "The database is not available right now, so nothing was changed; try again later."
        )
        self.cause = cause


class Busy(WgFleetError):
    status_code = 503


class StartupError(Exception):
    """Start-up cannot complete; `str()` is the sentence for the operator."""
