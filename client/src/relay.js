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

function Relay(socket, transport, router) {
    this.key = "s" + (relayCounter++);
    this.socket = socket;
    this.transport = transport;
    this.router = router;
    this.opts = socket._opts;
    this.scheme = /^https:/i.test(router) ? "https://" : "http://";
    this.base = "";
    this.id = "";
    this.stopped = false;
    this.abandoned = false;
    this.requests = {};   // in-flight request handles, for stop()
    this.reqCounter = 0;
    this.idle = DEFAULT_IDLE_MS;
    this.ttl = this.opts.pollTtl;
    this.lastAlive = 0;   // when the relay last answered
    this.aliveTimer = null;
    // sending
    this.queue = [];      // messages not yet cut into frames
    this.pending = [];    // frames waiting for a request, in seq order
    this.inflight = [];   // requests under way: {frames, attempts}
    this.nextSeq = 0;
    this.sendBroken = false;
    this.closeReq = null; // {code, reason} once close() was called
    this.closeSent = false;
    this.reading = false; // a Blob is being read
    // receiving
    this.lastSeq = -1;
    this.pollFailures = 0;
    this.polling = false;
    this.streamKind = ""; // "eventsource" | "xhr" while receiving by stream, "" when polling
    this.stream = null;   // the open stream's state
    this.streamSilent = 0; // streams in a row that fell silent (no heartbeat in time)
    this.streamEmpty = 0;  // streams in a row that ended with nothing but their opening
    this.streamFailed = 0; // streams in a row that failed before their first byte
    this.streamWorked = false; // a stream of this socket got a byte
    this.unacked = 0;     // characters of messages processed since the relay was last told
}

// query: an already encoded query string to append (a JSONP batch)
Relay.prototype.request = function (url, params, timeoutMs, result, body, contentType, query) {
    var self = this;
    var key = "r" + (this.reqCounter++);
    var handle;
    var finished = false;
    function done(err, data) {
        finished = true;
        delete self.requests[key];
        if (self.stopped) {
            return;
        }
        if (!err && (!data || typeof data !== "object")) {
            err = { error: "network", message: "bad answer" };
        }
        if (!err) {
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
    this.stopped = true;
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
        if (self.stopped) {
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
    if (this.stopped || !this.id) {
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
    this.abandoned = true;
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
        if (self.abandoned && (err || !data.ok)) {
            self.stopped = true;
            return;
        }
        if (err && err.error === "network" && self.transport === XHR && !self.abandoned &&
                sock._readyState === CONNECTING) {
            // CORS refused (a proxy stripping headers...) or the request failed: JSONP may get through.
            self.stop();
            sock._relay = null;
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
        if (self.abandoned) {
            // Free the socket on the relay; nobody listens any more.
            self.request(self.base + "/close", { socket: self.id, code: 1000 }, self.opts.sendTimeout, noop);
            self.stopped = true;
            return;
        }
        if (sock._readyState !== CONNECTING) {
            return;
        }
        watch(self);
        self.alive();
        self.chooseReceive();
        sock._opened(self.transport.name, data.protocol, "");
        if (self.streamKind) {
            self.openStream();
        } else {
            self.poll();
        }
    });
};
