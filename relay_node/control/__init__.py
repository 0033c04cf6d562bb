"""The control plane: the node's Redis agent (``agent``: registration, heartbeat, establish and kill
requests, drain) and its AWS side (``aws``: DNS names, slot leases and certificates, metrics)."""
