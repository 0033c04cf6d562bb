// ------------------------------------------------------------------ receivers

// One object per way a relay socket receives, the first usable one in the `receive` option's list
// chosen when the socket opens (RECEIVE_MODES; "auto": RECEIVERS order). A stream receiver holds
// one GET /stream open (`open`: it reports to `sink` as the stream's bytes arrive) and says how
// long an open stream may stay quiet and what that means (`quiet`); the poll receiver, last, works
// everywhere and is where a socket falls back to for the rest of its life. `kind` is what the
// socket's `receiving` attribute shows; `acksBySend`: sends carry the highest seq processed, so
// that a long stream frees the relay's buffer (and its back-pressure bound) without reconnecting.

// A stream is usable where the relay transport can make the cross-origin GET it needs and the
// relay may hold it (a ttl of 0 means "do not wait": polls only).
function streamUsable(relay) {
    return !!relay.transport.streams && relay.ttl > 0;
}

var EVENTSOURCE_RECEIVER = {
    name: "eventsource",
    kind: "stream",
    acksBySend: true,
    usable: function (relay) {
        return streamUsable(relay) && !!NativeEventSource;
    },
    // EventSource does not show the heartbeat comments: a stream quiet for ttl is renewed, as a
    // poll would be.
    quiet: function (relay) {
        return { why: "renew", ms: relay.ttl };
    },
    open: function (url, params, sink) {
        return eventSourceStream(url, params, function () { sink.bytes(false); }, sink.message, sink.ended);
    },
    start: function (relay) {
        relay.openStream(this);
    }
};

var XHR_STREAMING_RECEIVER = {
    name: "xhr-streaming",
    kind: "stream",
    acksBySend: true,
    usable: streamUsable,
    // Heartbeats show: without one for ttl + pollSlack, the stream is dead.
    quiet: function (relay) {
        return { why: "silent", ms: relay.ttl + relay.opts.pollSlack };
    },
    open: function (url, params, sink) {
        var parser = new SseParser(sink.message, function (text) {
            sink.bytes(text === "hb");
        });
        params.pad = 1;
        return xhrStream(url, params, function (text) {
            sink.bytes(false);
            parser.feed(text);
        }, sink.ended);
    },
    start: function (relay) {
        relay.openStream(this);
    }
};

var POLL_RECEIVER = {
    name: "poll",
    kind: "poll",
    acksBySend: false,
    usable: function () {
        return true;
    },
    start: function (relay) {
        relay.poll();
    }
};

var RECEIVERS = [EVENTSOURCE_RECEIVER, XHR_STREAMING_RECEIVER, POLL_RECEIVER];

// The `receive` option: the receivers a relay socket may use, in order.
var RECEIVE_MODES = {
    auto: RECEIVERS,
    eventsource: [EVENTSOURCE_RECEIVER, POLL_RECEIVER],
    "xhr-streaming": [XHR_STREAMING_RECEIVER, POLL_RECEIVER],
    poll: [POLL_RECEIVER]
};

function chooseReceiver(relay) {
    var list = RECEIVE_MODES[relay.opts.receive || "auto"];
    var i;
    for (i = 0; i < list.length; i++) {
        if (list[i].usable(relay)) {
            return list[i];
        }
    }
    return POLL_RECEIVER;
}
