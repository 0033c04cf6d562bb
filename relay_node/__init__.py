"""Relay node: holds the upstream WebSockets and serves send / poll / close to browsers."""
