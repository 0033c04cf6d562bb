"""The ``polysocket`` command line: run a router, a relay node, or the whole local stack."""
