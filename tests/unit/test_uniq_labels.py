"""The per-socket ``uniq`` label (the first label of a relay host name) as filter lists see it: a DNS
label that never spells the words and sizes ad/tracker patterns match, with as much entropy as before.
The same labels through privoxy's real default action files: tests/stack/test_label_filters.py."""

from __future__ import annotations

import math
import re
from collections import Counter

from polysocket_core.ids import LABEL_ALPHABET, LABEL_LETTERS, UNIQ_LENGTH, new_uniq, uniq_bits

DNS_LABEL = re.compile(r"[a-z][a-z0-9]{0,62}")
# Words that block lists key on (privoxy default.action host and path patterns, EasyList-style
# rules): every one needs a vowel, a "y" or an "x", which the alphabet lacks.
LISTED_WORDS = ("ad", "ads", "adv", "track", "banner", "pixel", "count", "stat", "metric", "click", "promo",
                "pop", "beacon", "analytic", "tag", "log", "1x1", "468x60", "728x90", "spy", "hit", "omni")


def test_labels_are_dns_safe_and_spell_no_listed_word() -> None:
    labels = [new_uniq() for _ in range(20_000)]
    assert len(set(labels)) == len(labels)
    for label in labels:
        assert DNS_LABEL.fullmatch(label) and len(label) == UNIQ_LENGTH, label
        assert not any(word in label for word in LISTED_WORDS), label


def test_the_alphabet_cannot_spell_a_listed_word() -> None:
    """Not just unlikely: each listed word has a character the alphabet does not have."""
    for word in LISTED_WORDS:
        assert set(word) - set(LABEL_ALPHABET), word
    assert not set("aeiouyx") & set(LABEL_ALPHABET)
    assert set(LABEL_LETTERS) <= set(LABEL_ALPHABET) and LABEL_LETTERS.isalpha()


def test_every_character_is_drawn() -> None:
    """A label uses the whole alphabet (a narrowed draw would cost entropy unseen)."""
    seen = {c for _ in range(2_000) for c in new_uniq()}
    assert seen == set(LABEL_ALPHABET)
    first = {new_uniq()[0] for _ in range(2_000)}
    assert first == set(LABEL_LETTERS)


def test_each_position_is_uniform_and_independent_of_its_neighbour() -> None:
    """The characters are the digits of one draw (``new_uniq``): each position takes every character
    about equally often, and a character says nothing of the next (a digit taken twice, or a draw
    not divided down, would repeat it). Bounds of about ±8 standard deviations: never by chance."""
    labels = [new_uniq() for _ in range(20_000)]
    for position in range(UNIQ_LENGTH):
        alphabet = LABEL_LETTERS if position == 0 else LABEL_ALPHABET
        counts = Counter(label[position] for label in labels)
        expected = len(labels) / len(alphabet)
        assert set(counts) == set(alphabet), position
        assert all(0.6 * expected < n < 1.4 * expected for n in counts.values()), (position, counts)
    pairs = [(label[i], label[i + 1]) for label in labels for i in range(1, UNIQ_LENGTH - 1)]
    same = sum(a == b for a, b in pairs) / len(pairs)
    assert 0.7 / len(LABEL_ALPHABET) < same < 1.3 / len(LABEL_ALPHABET), same


def test_enough_state_bits() -> None:
    """At least the 62 bits of the old label (a letter then 11 of [a-z0-9]), so labels stay unguessable."""
    old = math.log2(26) + 11 * math.log2(36)
    assert uniq_bits() >= old > 61.5
