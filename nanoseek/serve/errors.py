"""OpenAI-style API errors: one exception type and the JSON body every error response carries.

    raise APIError(400, "temperature must be at most 2", param="temperature")
    # -> HTTP 400 {"error": {"message": ..., "type": "invalid_request_error", "param": "temperature", "code": null}}

`app.py` installs the handlers that turn `APIError`, FastAPI's validation errors and unexpected
exceptions into these bodies, so clients (the `openai` package included) parse every failure the
same way. `validation_param` turns a pydantic error location into OpenAI's dotted `param` spelling;
`clipped` keeps what a message quotes from the request short (a path, a model id, a value).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
}
# pydantic puts the name of the union member it tried into error locations: ("stop", "list[str]", 0)
_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "null", "literal"}


class APIError(Exception):
    """An error response: HTTP status, message, and OpenAI's type / param / code fields."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or ERROR_TYPES.get(status, "invalid_request_error")
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def clipped(text: str, limit: int = 100) -> str:
    """`text` for an error message, cut to `limit` characters: a message never echoes unbounded input."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validation_param(loc: Sequence[str | int]) -> str | None:
    """("body", "messages", 0, "content") -> "messages[0].content"; None for the body as a whole."""
    parts = list(loc[1:] if loc and loc[0] == "body" else loc)
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif "[" in part or "(" in part or part.lower() in _TYPE_TAGS or part.startswith("function-"):
            continue  # a union member's type name, not a field
        else:
            out += f".{part}" if out else part
    return out or None


def validation_error(errors: Sequence[dict[str, Any]]) -> APIError:
    """The first of FastAPI's request validation errors as a 400 that names the parameter."""
    if not errors:
        return APIError(400, "Invalid request body.")
    # a union reports one error per member; the deepest location is the most specific one
    field = tuple(errors[0].get("loc", ()))[:2]
    first = max(
        (e for e in errors if tuple(e.get("loc", ()))[:2] == field), key=lambda e: len(e.get("loc", ()))
    )
    if first.get("type") == "json_invalid":
        return APIError(400, "We could not parse the JSON body of your request: it is not valid JSON.")
    param = validation_param(first.get("loc", ()))
    if param is None:
        if first.get("type") == "missing":
            return APIError(400, "The request needs a JSON body.")
        return APIError(400, f"Invalid request body: {first.get('msg', 'invalid value')}.")
    value = first.get("input")
    shown = clipped(repr(value) if not isinstance(value, (dict, list)) else type(value).__name__, 60)
    if first.get("type") == "missing":
        return APIError(
            400, f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
        )
    return APIError(
        400,
        f"Invalid value for '{param}': {first.get('msg', 'invalid value')} (got {shown}).",
        param=param,
        code="invalid_value",
    )
