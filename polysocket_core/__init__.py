"""Pure core shared by the router and the relay: wire protocol, the HTTP edge (JSON/JSONP answers),
sequencing, control-plane schema.

Nothing in this package performs I/O, so all of it is unit-tested without servers.
"""
