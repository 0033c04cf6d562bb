// ------------------------------------------------------------------ native transport

// The browser's own WebSocket, straight to the target: the socket's carrier (as a Relay is) from
// NATIVE.start() until it closes or hands the socket to the next candidate.
function NativeCarrier(socket, ws) {
    this.socket = socket;
    this.ws = ws;
}

NativeCarrier.prototype.buffered = function () {
    return this.ws.bufferedAmount;
};

// item: the message as the relay would carry it; the browser's socket takes the data itself.
NativeCarrier.prototype.send = function (item, data) {
    this.ws.send(data);
    this.socket._syncBuffered();
};

NativeCarrier.prototype.close = function (code, reason) {
    if (code === undefined && reason === undefined) {
        this.ws.close();
    } else {
        // (a reason without a code is sent with 1000, which Chromium would not do itself)
        this.ws.close(code === undefined ? 1000 : code, reason === undefined ? "" : reason);
    }
};

// Let go of the browser's socket: its events no longer reach ours.
NativeCarrier.prototype.stop = function () {
    var ws = this.ws;
    if (this.socket._carrier === this) {
        this.socket._carrier = null;
    }
    ws.onopen = ws.onmessage = ws.onerror = null;
    ws.onclose = null;
    try {
        ws.close();
    } catch (e) {}
};

// close() while connecting.
NativeCarrier.prototype.abandon = NativeCarrier.prototype.stop;

// Returns false when the native constructor threw and the next transport should be tried.
function startNative(sock, mayFallBack) {
    var ws;
    var carrier;
    var opened = false;
    var errored = false;
    var timer = null;
    try {
        ws = sock._protocols.length ? new NativeWebSocket(sock._url, sock._protocols) :
            new NativeWebSocket(sock._url);
    } catch (e) {
        if (!mayFallBack) {
            sock._fail("WebSocket: " + e.message);
            return true;
        }
        return false;
    }
    carrier = new NativeCarrier(sock, ws);
    sock._carrier = carrier;
    try {
        ws.binaryType = "arraybuffer";
    } catch (eType) {}

    function fallBack() {
        sock._nativeFailed = true;
        carrier.stop();
        if (sock._readyState === CONNECTING) {
            sock._tryNext(null);
        }
    }

    if (mayFallBack && sock._opts.nativeTimeout > 0) {
        timer = later(function () {
            timer = null;
            if (!opened) {
                fallBack();
            }
        }, sock._opts.nativeTimeout);
    }
    ws.onopen = function () {
        if (timer !== null) {
            clearTimeout(timer);
            timer = null;
        }
        opened = true;
        if (sock._opts.router) {
            networkVerdicts.worked(nativeVerdictKey(sock._opts.router, sock._url), rememberOf(sock._opts));
        }
        if (sock._carrier !== carrier) {
            return;
        }
        sock._opened(NATIVE.name, ws.protocol, ws.extensions);
    };
    ws.onmessage = function (ev) {
        if (sock._carrier !== carrier || sock._readyState !== OPEN) {
            return;
        }
        sock._syncBuffered();
        if (typeof ev.data === "string" || isBlob(ev.data)) {
            sock._emitMessage(ev.data, ev.origin);
        } else {
            sock._emitMessage(sock._binary(ev.data), ev.origin);
        }
    };
    ws.onerror = function () {
        if (sock._carrier !== carrier) {
            return;
        }
        // The browser fires close right after; both go out then, with readyState CLOSED as
        // the browser has it by now (unless the close hands the socket to the next transport).
        errored = true;
    };
    ws.onclose = function (ev) {
        if (timer !== null) {
            clearTimeout(timer);
            timer = null;
        }
        if (sock._carrier !== carrier) {
            return;
        }
        if (!opened && mayFallBack) {
            fallBack();
            return;
        }
        sock._syncBuffered();
        sock._carrier = null;
        sock._closed(ev.code, ev.reason, ev.wasClean, errored);
    };
    return true;
}
