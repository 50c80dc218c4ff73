"""Optional API keys: `Authorization: Bearer <key>` on the /v1 routes when any key is configured.

    nanoseek serve --model PATH --api-key sk-one --api-key sk-two
    nanoseek serve --model PATH --api-key-file keys.txt          # one key per line
    NANOSEEK_API_KEY=sk-one,sk-two nanoseek serve --model PATH    # comma-separated

In a key file a line is a key, whitespace around it ignored; a line whose first non-blank character
is `#` is a comment, and a `#` anywhere else is part of the key (`sk-abc#def` is one key, not
`sk-abc`). A file with no key in it is an error, not an open server. With no key configured the API
is open (it binds to 127.0.0.1 by default; `nanoseek serve` warns when it binds another address). The chat page, /health
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
    """Keys from flags, a file and the NANOSEEK_API_KEY environment variable, without duplicates.
    ValueError (naming the file) for a key file that cannot be read or holds no key."""
    environ = os.environ if environ is None else environ
    found = list(keys or [])
    if key_file is not None:
        found += read_key_file(Path(key_file))
    found += [k.strip() for k in environ.get(ENV_VAR, "").split(",") if k.strip()]
    return list(dict.fromkeys(found))


def read_key_file(path: Path) -> list[str]:
    """The keys in a file: one per line; lines starting with `#` (after blanks) are comments."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise ValueError(f"API key file {path}: cannot be read ({reason})") from None
    lines = (line.strip() for line in text.splitlines())
    keys = [line for line in lines if line and not line.startswith("#")]
    if not keys:
        raise ValueError(f"API key file {path}: no keys in it (one key per line; # starts a comment line)")
    return keys


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
