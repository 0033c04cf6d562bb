"""The edge: bytes in, typed answers out. The HTTP/1.1 protocol (``http1``), the endpoints behind
its one ``answer`` seam (``endpoints``) and logging that never lets a client's bytes run unbounded
into the logs (``logsafe``)."""
