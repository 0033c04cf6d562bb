"""The data plane: the sockets a node holds (``table``), one socket (``socket``), its receivers
(``receivers``: a waiting poll, ``stream``: an open ``/stream``), the WebSocket to the target
(``upstream``) and the memory it gives back (``memory``). Nothing here knows HTTP or Redis."""
