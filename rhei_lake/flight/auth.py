"""Bearer-token authentication: every call carries ``Authorization: Bearer <token>`` or is refused.

The check runs in gRPC middleware before any handler, for every RPC
(``Handshake`` included), so an unauthenticated client learns nothing but
``UNAUTHENTICATED``. Tokens are compared in constant time, and never logged.
"""

from __future__ import annotations

import hashlib
import hmac

import pyarrow.flight as flight

AUTHORIZATION = "authorization"


def _digest(token: str | bytes) -> bytes:
    return hashlib.sha256(token.encode() if isinstance(token, str) else token).digest()


class BearerTokenMiddlewareFactory(flight.ServerMiddlewareFactory):
    """Admits a call only if it presents the configured bearer token."""

    def __init__(self, token: str) -> None:
        if not token or not token.strip():
            raise ValueError("the bearer token must not be empty")
        # Digests of equal length: compare_digest then leaks not even the token's length.
        self._expected = _digest(token)

    def start_call(self, info, headers):
        for value in headers.get(AUTHORIZATION, ()):
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
            scheme, _, credential = text.strip().partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(_digest(credential.strip()), self._expected):
                return None
        raise flight.FlightUnauthenticatedError(
            "rhei_lake Flight SQL needs a valid bearer token (header 'authorization: Bearer <token>')"
        )
