"""Errors the local Bot API answers with, shaped like Telegram's own error responses."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error response: HTTP status, Telegram-style description and optional parameters."""

    def __init__(
        self, status: int, description: str, parameters: dict[str, Any] | None = None
    ) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters

    def body(self) -> dict[str, Any]:
        """Return the JSON body Telegram sends for this error."""
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.status,
            "description": self.description,
        }
        if self.parameters:
            body["parameters"] = dict(self.parameters)
        return body


def bad_request(detail: str) -> ApiError:
    """Build a 400 ``Bad Request: <detail>`` error."""
    return ApiError(400, f"Bad Request: {detail}")


def forbidden(detail: str) -> ApiError:
    """Build a 403 ``Forbidden: <detail>`` error."""
    return ApiError(403, f"Forbidden: {detail}")


def conflict(detail: str) -> ApiError:
    """Build a 409 ``Conflict: <detail>`` error."""
    return ApiError(409, f"Conflict: {detail}")


def too_many_requests(retry_after: int) -> ApiError:
    """Build a 429 flood-control error asking the client to wait ``retry_after`` seconds."""
    return ApiError(
        429,
        f"Too Many Requests: retry after {retry_after}",
        {"retry_after": retry_after},
    )


def not_found() -> ApiError:
    """Build the 404 ``Not Found`` error Telegram returns for unknown methods."""
    return ApiError(404, "Not Found")


def unauthorized() -> ApiError:
    """Build the 401 ``Unauthorized`` error Telegram returns for a wrong token."""
    return ApiError(401, "Unauthorized")


class EntityParseError(Exception):
    """Raised by the markup parsers; the message is the part after ``can't parse entities:``."""

    def as_api_error(self) -> ApiError:
        """Convert to the 400 error Telegram answers with."""
        return bad_request(f"can't parse entities: {self}")


class SimulationError(Exception):
    """A scripted action that a real Telegram client could not perform (a bug in the test)."""
