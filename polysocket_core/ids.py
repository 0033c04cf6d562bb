"""Unguessable identifiers: socket ids are capabilities, ``uniq`` labels spread browser connections."""

from __future__ import annotations

import secrets
import string

_LABEL_ALPHABET = string.ascii_lowercase + string.digits


def new_socket_id() -> str:
    """192 random bits, URL-safe base64 (32 characters)."""
    return secrets.token_urlsafe(24)


def new_uniq() -> str:
    """A fresh DNS label: a letter then 11 lowercase letters/digits (about 62 bits)."""
    return secrets.choice(string.ascii_lowercase) + "".join(
        secrets.choice(_LABEL_ALPHABET) for _ in range(11)
    )


def new_request_id() -> str:
    return secrets.token_hex(12)
