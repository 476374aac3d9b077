"""Optional API-key authentication (off unless keys are configured).

Keys come from API_KEYS (comma-separated) and/or API_KEYS_FILE (one per line),
never from the repository. A request authenticates with `Authorization: Bearer
<key>` or `X-API-Key: <key>`. AUTH_PROTECT chooses what needs a key: `writes`
(POSTs) or `all` (the API's GETs too). Probes, /metrics and /openapi.json stay
open for orchestrators and scrapers.
"""

from __future__ import annotations

import hmac
from pathlib import Path

OPEN_PATHS = ("/health", "/metrics", "/openapi.json")


def load_keys(inline: str, file: str) -> tuple[str, ...]:
    """Keys from the inline list and the file; raises ValueError naming a missing file."""
    keys = [k.strip() for k in inline.split(",") if k.strip()]
    if file:
        path = Path(file)
        if not path.is_file():
            raise ValueError(f"API_KEYS_FILE={file!r}: no such file")
        keys += [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return tuple(keys)


class ApiKeys:
    """The configured keys, read at worker start (`load`), never at import."""

    def __init__(self) -> None:
        self.keys: tuple[str, ...] = ()

    def load(self, inline: str, file: str) -> None:
        self.keys = load_keys(inline, file)


api_keys = ApiKeys()


def needs_key(method: str, path: str, protect: str) -> bool:
    if path.startswith(OPEN_PATHS):
        return False
    return protect == "all" or method not in ("GET", "HEAD", "OPTIONS")


def presented_key(headers) -> str | None:
    authorization = headers.get("Authorization", "")
    if authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return headers.get("X-API-Key")


def is_valid(key: str | None, keys: tuple[str, ...]) -> bool:
    """Constant-time comparison against every configured key."""
    if not key:
        return False
    matches = [hmac.compare_digest(key.encode(), k.encode()) for k in keys]
    return any(matches)
