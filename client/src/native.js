// ------------------------------------------------------------------ native transport

// Returns false when the native constructor threw and the next transport should be tried.
proto._startNative = function (mayFallBack) {
    var self = this;
    var ws;
    var opened = false;
    var errored = false;
    var timer = null;
    try {
        ws = this._protocols.length ? new NativeWebSocket(this._url, this._protocols) :
            new NativeWebSocket(this._url);
    } catch (e) {
        if (!mayFallBack) {
            this._fail("WebSocket: " + e.message);
            return true;
        }
        return false;
    }
    this._native = ws;
    try {
        ws.binaryType = "arraybuffer";
    } catch (eType) {}

    function fallBack() {
        self._dropNative();
        if (self._readyState === CONNECTING) {
            self._tryNext(null);
        }
    }

    if (mayFallBack && this._opts.nativeTimeout > 0) {
        timer = later(function () {
            timer = null;
            if (!opened) {
                fallBack();
            }
        }, this._opts.nativeTimeout);
    }
    ws.onopen = function () {
        if (timer !== null) {
            clearTimeout(timer);
            timer = null;
        }
        opened = true;
        if (self._native !== ws) {
            return;
        }
        self._opened("websocket", ws.protocol, ws.extensions);
    };
    ws.onmessage = function (ev) {
        if (self._native !== ws || self._readyState !== OPEN) {
            return;
        }
        self._syncBuffered();
        if (typeof ev.data === "string" || isBlob(ev.data)) {
            self._emitMessage(ev.data, ev.origin);
        } else {
            self._emitMessage(self._binary(ev.data), ev.origin);
        }
    };
    ws.onerror = function () {
        if (self._native !== ws) {
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
        if (self._native !== ws) {
            return;
        }
        if (!opened && mayFallBack) {
            fallBack();
            return;
        }
        self._syncBuffered();
        self._native = null;
        self._closed(ev.code, ev.reason, ev.wasClean, errored);
    };
    return true;
};

proto._dropNative = function () {
    var ws = this._native;
    this._native = null;
    if (ws) {
        ws.onopen = ws.onmessage = ws.onerror = null;
        ws.onclose = null;
        try {
            ws.close();
        } catch (e) {}
    }
};
