"""The data plane: the sockets a node holds (``table``), one socket (``socket``), its receivers
(``receivers``: a waiting poll, ``stream``: an open ``/stream``), the WebSocket to the target
(``upstream``), the memory it gives back (``memory``) and the bound on what all sockets hold for
their clients together (``pressure``). Nothing here knows HTTP or Redis."""
