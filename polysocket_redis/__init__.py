"""The control plane's Redis I/O that the router and the relay share: the pipelines of their hot
paths, written in RESP on connections of their own (``pipelines``).

It is a package of its own because it does I/O: ``polysocket_core`` does none, and neither service
imports the other.
"""
