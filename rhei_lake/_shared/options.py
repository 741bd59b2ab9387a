"""Storage options that hold secrets, and copies of them safe to show."""

from __future__ import annotations

from collections.abc import Mapping

_SECRET_WORDS = ("secret", "password", "token", "session", "credential", "key_id", "access_key")


def is_secret_key(key: str) -> bool:
    """Whether an option name holds a secret whose value must never be shown."""
    low = key.lower()
    return any(word in low for word in _SECRET_WORDS) and "region" not in low


def mask_options(options: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``options`` with secret values replaced by ``'***'``."""
    return {k: ("***" if is_secret_key(k) else v) for k, v in options.items()}
