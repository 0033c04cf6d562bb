"""Redis Cluster's key slot (CRC16/XMODEM of the hash tag, or of the key, mod 16384), in pure Python."""

from __future__ import annotations

SLOTS = 16384


def crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def key_slot(key: bytes) -> int:
    """The slot of ``key``: only the part between the first ``{`` and the next ``}`` counts, if not empty."""
    start = key.find(b"{")
    if start != -1:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1:end]
    return crc16(key) % SLOTS
