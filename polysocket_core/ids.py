"""Unguessable identifiers: socket ids are capabilities, ``uniq`` labels spread browser connections.

A ``uniq`` label is the first label of a relay socket's host name (``{uniq}.{node fqdn}``), so ad and
tracker filters (privoxy's default.action, browser block lists) see it. Their host patterns are words
and word starts (``ad*.``, ``.*ads.``, ``count*.``, ``*banner*.``, ``metrics.``, ``tracking.``) and banner
sizes (``468x60``): a label drawn from consonants without ``y`` and ``x`` (they make words and sizes)
and digits never spells one. With a mixed alphabet, about 1 label in 1,100 began with ``ad`` and
privoxy refused every request to that socket (issue 17).
"""

from __future__ import annotations

import math
import secrets

# No vowels, no "y" (a vowel in "gym", "tyk"), no "x" (banner sizes "468x60", "1x1").
LABEL_LETTERS = "bcdfghjklmnpqrstvwz"
LABEL_ALPHABET = LABEL_LETTERS + "0123456789"
UNIQ_LENGTH = 13  # 1 letter + 12 of LABEL_ALPHABET: about 62.5 bits, as many as the old mixed 12


def uniq_bits(length: int = UNIQ_LENGTH) -> float:
    """The entropy of a ``uniq`` label: its first character is a letter (a label reads as a name)."""
    return math.log2(len(LABEL_LETTERS)) + (length - 1) * math.log2(len(LABEL_ALPHABET))


def new_socket_id() -> str:
    """192 random bits, URL-safe base64 (32 characters)."""
    return secrets.token_urlsafe(24)


def new_uniq() -> str:
    """A fresh DNS label that no filter list reads as a word: a consonant, then consonants and digits.

    Its characters are the digits of one 128-bit draw in the label's mixed radix: one read of the
    system's randomness per label instead of one per character (17 against 2 µs, once per connect
    on the router). The draw covers the 19 x 29^12 (about 2^62.5) labels about 2^65 times over, so
    every label is as likely as with a draw per character, to within 2^-65."""
    n = secrets.randbits(128)  # perf: uniq-one-draw
    n, first = divmod(n, len(LABEL_LETTERS))
    chars = [LABEL_LETTERS[first]]
    for _ in range(UNIQ_LENGTH - 1):
        n, digit = divmod(n, len(LABEL_ALPHABET))
        chars.append(LABEL_ALPHABET[digit])
    return "".join(chars)


def new_request_id() -> str:
    return secrets.token_hex(12)
