// ------------------------------------------------------------------ relay transport

// When the page goes away, tell the relay at once (a native socket is closed by the browser,
// with 1001); otherwise the relay would hold the target connection until its idle timeout.
var liveRelays = {};
var relayCounter = 0;
var watchingUnload = false;

function onPageHide() {
    var k;
    for (k in liveRelays) {
        if (hasOwn.call(liveRelays, k)) {
            liveRelays[k].beacon();
        }
    }
}

function watch(relay) {
    liveRelays[relay.key] = relay;
    if (watchingUnload || !win) {
        return;
    }
    watchingUnload = true;
    if (win.addEventListener) {
        win.addEventListener("onpagehide" in win ? "pagehide" : "unload", onPageHide, false);
    } else if (win.attachEvent) {
        win.attachEvent("onunload", onPageHide);
    }
}

function unwatch(relay) {
    try {
        delete liveRelays[relay.key];
    } catch (e) {
        liveRelays[relay.key] = undefined;
    }
}

// A relay transport's start: the socket is carried by a relay socket that the router admits. Fails the
// socket (and returns true: no other candidate is tried) where the relay cannot carry it.
function startRelay(sock, transport) {
    var router = sock._opts.router;
    if (!router) {
        sock._fail("no polysocket router configured (options.router)");
        return true;
    }
    if (/^[a-z]+:\/\/[^\/?#]*@/i.test(sock._url)) {
        sock._fail("a URL with credentials cannot be carried by the relay");
        return true;
    }
    sock._carrier = new Relay(sock, transport, String(router).replace(/\/+$/, ""));
    sock._carrier.connect();
    return true;
}

// A relay socket's lifecycle, one named state that moves only along RELAY_TRANSITIONS, through
// Relay.prototype.enter:
//
//   CONNECTING ──connect answer──▶ OPEN ──close()──▶ CLOSING ──sends drained──▶ CLOSE_SENT
//       │                            │                  │                          ▲
//       │                            └──send refused──▶ REFUSED ──close()─────────┘
//       └──close()──▶ ABANDONED                 (CLOSING ──send refused──▶ REFUSED: /close at once)
//   any ──stop()──▶ STOPPED: the socket closed or failed, or the next transport has it.
//
// OPEN and CLOSING send; REFUSED sends nothing more (the relay refused a send: the socket is closing
// or failed there) but a close() still reaches the relay; after CLOSE_SENT the final close arrives
// by the receiver. ABANDONED: close() before the connect answer, which then frees the relay socket.
var RelayState = {
    CONNECTING: "connecting",
    ABANDONED: "abandoned",
    OPEN: "open",
    CLOSING: "closing",
    REFUSED: "refused",
    CLOSE_SENT: "close-sent",
    STOPPED: "stopped"
};

var RELAY_TRANSITIONS = {
    connecting: { open: 1, abandoned: 1, stopped: 1 },
    abandoned: { stopped: 1 },
    open: { closing: 1, refused: 1, stopped: 1 },
    closing: { refused: 1, "close-sent": 1, stopped: 1 },
    refused: { "close-sent": 1, stopped: 1 },
    "close-sent": { stopped: 1 },
    stopped: { stopped: 1 }
};

function Relay(socket, transport, router) {
    this.key = "s" + (relayCounter++);
    this.socket = socket;
    this.transport = transport;
    this.router = router;
    this.opts = socket._opts;
    this.scheme = /^https:/i.test(router) ? "https://" : "http://";
    this.base = "";
    this.id = "";
    this.state = RelayState.CONNECTING;
    this.requests = {};   // in-flight request handles, for stop()
    this.reqCounter = 0;
    this.idle = DEFAULT_IDLE_MS;
    this.ttl = this.opts.pollTtl;
    this.lastAlive = 0;   // when the relay last answered
    this.reached = false; // the relay host answered once: until then a failure there is final
    this.aliveTimer = null;
    // sending
    this.queue = [];      // messages not yet cut into frames
    this.pending = [];    // frames waiting for a request, in seq order
    this.inflight = [];   // requests under way: {frames, attempts}
    this.nextSeq = 0;
    this.closeReq = null; // {code, reason} once close() was called
    this.reading = false; // a Blob is being read
    // receiving
    this.lastSeq = -1;
    this.pollFailures = 0;
    this.polling = false;
    this.receiver = POLL_RECEIVER; // chosen from RECEIVE_MODES when the socket opens
    this.stream = null;   // the open stream's state
    this.streamSilent = 0; // streams in a row that fell silent (no heartbeat in time)
    this.streamEmpty = 0;  // streams in a row that ended with nothing but their opening
    this.streamFailed = 0; // streams in a row that failed before their first byte
    this.streamWorked = false; // a stream of this socket got a byte
    this.streamHeldBack = false; // a stream showed nothing in streamTimeout (a verdict once a poll passes)
    this.unacked = 0;     // characters of messages processed since the relay was last told
}

// The one door for state changes: false (and no change) where RELAY_TRANSITIONS has no such move.
Relay.prototype.enter = function (next) {
    if (!hasOwn.call(RELAY_TRANSITIONS[this.state], next)) {
        return false;
    }
    this.state = next;
    return true;
};

// The socket has it: as the native WebSocket, a carrier buffers nothing of its own.
Relay.prototype.buffered = function () {
    return 0;
};

// query: an already encoded query string to append (a JSONP batch)
Relay.prototype.request = function (url, params, timeoutMs, result, body, contentType, query) {
    var self = this;
    var key = "r" + (this.reqCounter++);
    var handle;
    var finished = false;
    function done(err, data) {
        finished = true;
        delete self.requests[key];
        if (self.state === RelayState.STOPPED) {
            return;
        }
        if (!err && (!data || typeof data !== "object")) {
            err = { error: "network", message: "bad answer" };
        }
        if (!err) {
            if (self.id) {
                self.reached = true;
            }
            self.alive();
        }
        result(err, data);
    }
    handle = this.transport.request(url, params, timeoutMs, done, body, contentType, query);
    if (!finished && handle) {
        this.requests[key] = handle;
    }
    return handle;
};

Relay.prototype.stop = function () {
    var k;
    this.enter(RelayState.STOPPED);
    unwatch(this);
    if (this.aliveTimer !== null) {
        clearTimeout(this.aliveTimer);
        this.aliveTimer = null;
    }
    this.dropStream();
    for (k in this.requests) {
        if (hasOwn.call(this.requests, k)) {
            try {
                this.requests[k].abort();
            } catch (e) {}
        }
    }
    this.requests = {};
};

// The relay answered: it is alive. If it stays silent for its idle timeout (it then has freed
// the socket anyway, or is gone), the socket is lost: close 1006.
Relay.prototype.alive = function () {
    var self = this;
    this.lastAlive = now();
    if (this.aliveTimer !== null || !this.id) {
        return;
    }
    function check() {
        var quiet = now() - self.lastAlive;
        self.aliveTimer = null;
        if (self.state === RelayState.STOPPED) {
            return;
        }
        if (quiet >= self.idle) {
            self.gone("no answer from the relay for " + quiet + " ms");
            return;
        }
        self.aliveTimer = later(check, self.idle - quiet);
    }
    this.aliveTimer = later(check, this.idle);
};

// A fire-and-forget /close that survives the page unloading: fetch with keepalive, or an image.
Relay.prototype.beacon = function () {
    var url;
    var img;
    if (this.state === RelayState.STOPPED || !this.id) {
        return;
    }
    unwatch(this);
    url = this.base + "/close?" + buildQuery({ socket: this.id, code: CLOSE_GOING_AWAY });
    try {
        if (typeof win.fetch === "function") {
            var pending = win.fetch(url, { keepalive: true, mode: "no-cors", credentials: "omit" });
            if (pending && typeof pending.then === "function") {
                pending.then(noop, noop);
            }
            return;
        }
    } catch (e) {}
    img = new Image();
    img.src = url;
};

// close() while connecting: when the connect answer comes, free the relay socket.
Relay.prototype.abandon = function () {
    this.enter(RelayState.ABANDONED);
};

Relay.prototype.connect = function () {
    var self = this;
    var sock = this.socket;
    var params = {
        from: CALLER,
        target: sock._url
    };
    if (this.opts.token) {
        params.token = this.opts.token;
    }
    if (sock._protocols.length) {
        params.protocols = sock._protocols.join(",");
    }
    this.request(this.router + "/connect", params, this.opts.connectTimeout, function (err, data) {
        if (self.state === RelayState.ABANDONED && (err || !data.ok)) {
            self.enter(RelayState.STOPPED);
            return;
        }
        if (err && err.error === "network" && self.transport === XHR &&
                self.state === RelayState.CONNECTING &&
                sock._readyState === CONNECTING) {
            // CORS refused (a proxy stripping headers...) or the request failed: JSONP may get through.
            self.stop();
            sock._carrier = null;
            sock._tryNext(err.error + ": " + err.message);
            return;
        }
        if (err || !data.ok) {
            var e = err || data;
            sock._fail((e.error || "error") + ": " + (e.message || "connect failed"));
            return;
        }
        self.id = data.socket;
        self.base = self.scheme + data.fqdn;
        if (typeof data.idle === "number" && data.idle > 0) {
            self.idle = data.idle;
        }
        // A waiting poll must be answered before the idle watchdog gives up on the relay.
        self.ttl = Math.max(0, Math.min(self.opts.pollTtl, Math.floor(self.idle / 2)));
        if (self.state === RelayState.ABANDONED) {
            // Free the socket on the relay; nobody listens any more.
            self.request(self.base + "/close", { socket: self.id, code: 1000 }, self.opts.sendTimeout, noop);
            self.enter(RelayState.STOPPED);
            return;
        }
        if (sock._readyState !== CONNECTING || !self.enter(RelayState.OPEN)) {
            return;
        }
        if (sock._nativeFailed) {
            // The target is reachable, only not natively: later sockets skip the native try.
            networkVerdicts.failed(nativeVerdictKey(self.router, sock._url), rememberOf(self.opts));
        }
        watch(self);
        self.alive();
        self.chooseReceive();
        sock._opened(self.transport.name, data.protocol, "");
        self.receiver.start(self);
    });
};
