"""Optional API keys: `Authorization: Bearer <key>` on the /v1 routes when any key is configured.

    nanoseek serve --model PATH --api-key sk-one --api-key sk-two
    nanoseek serve --model PATH --api-key-file keys.txt          # one key per line, # comments
    NANOSEEK_API_KEY=sk-one,sk-two nanoseek serve --model PATH    # comma-separated

With no key configured the API is open (it binds to 127.0.0.1 by default). The chat page, /health
and /metrics stay open; the page asks for a key when the API answers 401. Keys are compared in
constant time.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from fastapi import Request

from nanoseek.serve.errors import APIError

ENV_VAR = "NANOSEEK_API_KEY"


def load_api_keys(
    keys: list[str] | None = None, key_file: str | Path | None = None, environ=None
) -> list[str]:
    """Keys from flags, a file and the NANOSEEK_API_KEY environment variable, without duplicates."""
    environ = os.environ if environ is None else environ
    found = list(keys or [])
    if key_file is not None:
        for line in Path(key_file).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                found.append(line)
    found += [k.strip() for k in environ.get(ENV_VAR, "").split(",") if k.strip()]
    return list(dict.fromkeys(found))


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def require_api_key(request: Request) -> None:
    """FastAPI dependency: 401 unless the request carries one of the configured keys."""
    keys: list[str] = request.app.state.config.api_keys
    if not keys:
        return
    token = bearer_token(request)
    if token is None:
        raise unauthorized("You didn't provide an API key: send it as 'Authorization: Bearer <key>'.")
    presented = token.encode()
    if not any(hmac.compare_digest(presented, key.encode()) for key in keys):
        raise unauthorized("Incorrect API key provided.")


def unauthorized(message: str) -> APIError:
    return APIError(401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
