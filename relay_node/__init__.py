"""Relay node: holds the upstream WebSockets and serves send / poll / stream / close to browsers.

By plane (imports only point down this list; ``tests/unit/test_relay_layout.py`` keeps it so)::

    node.py  server.py  settings.py  metrics.py     wiring: parts built and started, serving, flags, counters
    compiled.py                                     which modules the image compiles with mypyc, and whether they are
    edge/      http1.py endpoints.py logsafe.py     bytes in, typed answers out
    sockets/   table.py socket.py receivers.py      the data plane: sockets, their receivers,
               stream.py upstream.py memory.py      the WebSocket to the target, memory,
               pressure.py limits.py                the relay-wide buffer budget
    control/   agent.py fleetstats.py aws/         Redis (register, establish, kill, drain, stats), AWS

One message from the browser to the target (a ``/send``)::

    edge/http1.py        RelayHTTPProtocol.data_received: httptools parses; on_message_complete
                         runs the answer in the parser's callback (a task only if it waits)
    edge/endpoints.py    RelayEndpoints.answer -> send: wire.parse_send (polysocket_core)
    sockets/table.py     SocketTable.get(socket id)
    sockets/socket.py    RelaySocket.send: InboundSequencer.accept (polysocket_core.sequencing)
                         puts the frame in order, drops a retry
    sockets/upstream.py  Upstream.send: one masked frame, transport.write -> the target
    edge/endpoints.py    {"ok":true}, as JSONP when the request has a ``cb``
    edge/http1.py        the response is written

One message from the target to the browser::

    sockets/upstream.py  Upstream.data_received: websockets' parser yields frames, _deliver
                         assembles a message
    sockets/socket.py    RelaySocket.upstream_message: OutboundBuffer.push (kept until acked),
                         BufferBudget.took (sockets/pressure.py: the bound now in force),
                         _wake -> receiver.wake()
      a stream:
    sockets/stream.py    SocketStream.wake: sse.next_events (polysocket_core) frames what is new
    edge/http1.py        write_chunk: one chunk of the open text/event-stream answer
      or a waiting poll:
    sockets/receivers.py PollReceiver.wake: its future resolves
    sockets/socket.py    RelaySocket.poll returns poll_answer(OutboundBuffer.take(...))
    edge/endpoints.py    answer wraps it (JSONP or JSON)
    edge/http1.py        the response is written

The acknowledgement that frees a message rides on the next ``/poll``, ``/stream`` or ``/send``
(``RelaySocket.acknowledge``).
"""
