// ------------------------------------------------------------------ the socket

function PolySocket(url, protocols, options) {
    if (!(this instanceof PolySocket)) {
        throw new TypeError("Failed to construct 'WebSocket': Please use the 'new' operator, this DOM " +
            "object constructor cannot be called as a function.");
    }
    if (arguments.length < 1) {
        throw new TypeError("Failed to construct 'WebSocket': 1 argument required, but only 0 present.");
    }
    var self = this;
    if (NativeEventTarget) {
        // The socket is a real EventTarget: listeners, options and dispatch are the browser's.
        var NewTarget = function () {};
        NewTarget.prototype = Object.getPrototypeOf(this);
        self = Reflect.construct(NativeEventTarget, [], NewTarget);
    }
    // new PolySocket(url, options) is accepted too.
    if (protocols && typeof protocols === "object" && !isArray(protocols) &&
            !(typeof Symbol === "function" && Symbol.iterator && protocols[Symbol.iterator])) {
        options = protocols;
        protocols = undefined;
    }
    var opts = extend(extend({}, PolySocket.defaults), options);
    var mode = opts.transport || "auto";
    if (!hasOwn.call(MODES, mode)) {
        throw makeError("SyntaxError", "Failed to construct 'PolySocket': unknown transport '" + mode + "'.");
    }
    if (!hasOwn.call(RECEIVE_MODES, opts.receive || "auto")) {
        throw makeError("SyntaxError", "Failed to construct 'PolySocket': unknown receive mode '" +
            opts.receive + "'.");
    }
    if (!hasOwn.call(REMEMBER, rememberOf(opts))) {
        throw makeError("SyntaxError", "Failed to construct 'PolySocket': unknown remember mode '" +
            opts.remember + "'.");
    }
    var href = parseTargetUrl(url);
    var list = parseProtocols(protocols);

    put(self, "url", href);
    put(self, "readyState", CONNECTING);
    put(self, "protocol", "");
    put(self, "extensions", "");
    put(self, "transport", "");
    put(self, "receiving", "");
    self._binaryType = hasBlob ? "blob" : "arraybuffer";
    self._buffered = 0;        // bytes queued on the relay path (and dropped after close)
    if (!hasGetters) {
        self.binaryType = self._binaryType;
        self.bufferedAmount = 0;
        self.onopen = self.onmessage = self.onerror = self.onclose = null;
    }
    self._protocols = list;
    self._opts = opts;
    self._carrier = null;      // the started candidate's connection: a NativeCarrier or a Relay
    self._candidates = MODES[mode];
    self._next = 0;
    self._nativeFailed = false; // the native try failed (a verdict once the relay opens)
    self._skipped = "";        // what a network verdict made this socket skip: "", "native"
    if (mode === "auto" && opts.router &&
            networkVerdicts.skips(nativeVerdictKey(opts.router, href), rememberOf(opts))) {
        self._candidates = MODES.relay;
        self._skipped = "native";
    }
    self.lastError = "";

    later(function () {
        if (self._readyState === CONNECTING) {
            self._tryNext(null);
        }
    }, 0);
    return self;
}

// Readable state: a prototype accessor where the browser has them (read-only, as the native
// attributes), else a plain property kept in step.
function put(sock, name, value) {
    sock["_" + name] = value;
    if (!hasGetters) {
        sock[name] = value;
    }
}

PolySocket.CONNECTING = CONNECTING;
PolySocket.OPEN = OPEN;
PolySocket.CLOSING = CLOSING;
PolySocket.CLOSED = CLOSED;
PolySocket.version = VERSION;
PolySocket.NativeWebSocket = NativeWebSocket;
PolySocket._cb = cbRegistry;

PolySocket.defaults = {
    router: null,            // e.g. "https://relay.example.com"
    token: null,
    transport: "auto",       // "auto" | "websocket" | "relay" | "xhr" | "jsonp"
    nativeTimeout: 8000,     // ms for a native WebSocket to open before falling back
    connectTimeout: 30000,
    sendTimeout: 15000,
    pollTtl: DEFAULT_POLL_TTL_MS, // the relay holds a poll this long (ms)
    pollSlack: 15000,        // extra wait for a poll answer before giving up on it
    receive: "auto",         // "auto" | "eventsource" | "xhr-streaming" | "poll" (xhr transport)
    streamTimeout: 5000,     // ms for a stream's first byte before the socket polls instead
    remember: "session",     // "session" | "page" | "none": where network verdicts are kept (verdict.js)
    maxInflight: 4,          // concurrent send requests per socket
    maxBatch: 256,           // frames per send request (1: one request per frame)
    maxBody: 65536,          // bytes per POST /send body (XHR)
    maxUrl: MAX_URL
};

PolySocket.supports = {
    websocket: !!NativeWebSocket,
    xhr: hasCorsXhr(),
    jsonp: !!doc,
    eventsource: !!NativeEventSource,
    arraybuffer: hasArrayBuffer,
    blob: hasBlob,
    eventtarget: !!NativeEventTarget,
    events: !!eventCtors.CloseEvent,
    url: !!NativeURL
};

PolySocket.installedLate = false;

// Sets window.WebSocket to PolySocket where the browser has none (or always, with
// {replace: true}). Returns true if it did. Must run before any script that keeps a reference
// to WebSocket (a library bundle): those keep what they found.
PolySocket.install = function (defaults, how) {
    if (defaults) {
        extend(PolySocket.defaults, defaults);
    }
    if (!win || (win.WebSocket === PolySocket)) {
        return false;
    }
    if (win.WebSocket && !(how && how.replace)) {
        return false;
    }
    if (doc && doc.readyState === "complete") {
        PolySocket.installedLate = true;
        warn("install() ran after the page finished loading: a library that captured " +
            "window.WebSocket before that keeps using what it found. Call PolySocket.install() " +
            "right after polysocket.js, before any other script.");
    }
    win.WebSocket = PolySocket;
    return true;
};

// <script src="polysocket.js" data-install data-router="…" data-token="…">: install() as the
// library loads, so no script after it can capture WebSocket first (data-install="replace":
// even where the browser has a WebSocket).
PolySocket._autoInstall = function () {
    var script = doc && doc.currentScript;
    var scripts;
    var how;
    var d = {};
    if (!script && doc && doc.getElementsByTagName) {
        scripts = doc.getElementsByTagName("script");  // old IE: the running script is the last
        script = scripts[scripts.length - 1];
    }
    if (!script || !script.getAttribute || script.getAttribute("data-install") === null) {
        return false;
    }
    how = script.getAttribute("data-install");
    if (script.getAttribute("data-router")) {
        d.router = script.getAttribute("data-router");
    }
    if (script.getAttribute("data-token")) {
        d.token = script.getAttribute("data-token");
    }
    return PolySocket.install(d, { replace: how === "replace" });
};

var proto;
if (NativeEventTarget) {
    proto = PolySocket.prototype = Object.create(NativeEventTarget.prototype);
    proto.constructor = PolySocket;
} else {
    proto = PolySocket.prototype;
    proto.addEventListener = function (type, callback, options) {
        if (arguments.length < 2) {
            throw new TypeError("Failed to execute 'addEventListener' on 'EventTarget': 2 arguments " +
                "required, but only " + arguments.length + " present.");
        }
        fallbackAdd(this, String(type), callback, options);
    };
    proto.removeEventListener = function (type, callback, options) {
        if (arguments.length < 2) {
            throw new TypeError("Failed to execute 'removeEventListener' on 'EventTarget': 2 arguments " +
                "required, but only " + arguments.length + " present.");
        }
        fallbackRemove(this, String(type), callback, options);
    };
    proto.dispatchEvent = function (ev) {
        if (!ev || typeof ev.type !== "string") {
            throw new TypeError("Failed to execute 'dispatchEvent' on 'EventTarget': parameter 1 is not " +
                "of type 'Event'.");
        }
        return fallbackDispatch(this, ev);
    };
}
proto.CONNECTING = CONNECTING;
proto.OPEN = OPEN;
proto.CLOSING = CLOSING;
proto.CLOSED = CLOSED;

if (hasGetters) {
    (function () {
        var readOnly = ["url", "readyState", "protocol", "extensions", "transport", "receiving"];
        var types = ["open", "message", "error", "close"];
        var i;
        function reader(name) {
            return function () { return this["_" + name]; };
        }
        function handler(type) {
            return {
                get: function () { return getHandler(this, type); },
                set: function (v) { setHandler(this, type, v); },
                enumerable: true,
                configurable: true
            };
        }
        for (i = 0; i < readOnly.length; i++) {
            Object.defineProperty(proto, readOnly[i], { get: reader(readOnly[i]), enumerable: true,
                configurable: true });
        }
        Object.defineProperty(proto, "bufferedAmount", {
            get: function () {
                return this._buffered + (this._carrier ? this._carrier.buffered() : 0);
            },
            enumerable: true,
            configurable: true
        });
        Object.defineProperty(proto, "binaryType", {
            get: function () { return this._binaryType; },
            set: function (v) {
                v = String(v);
                if (v === "blob" || v === "arraybuffer") {  // other values are ignored
                    this._binaryType = v;
                }
            },
            enumerable: true,
            configurable: true
        });
        for (i = 0; i < types.length; i++) {
            Object.defineProperty(proto, "on" + types[i], handler(types[i]));
        }
        if (typeof Symbol === "function" && Symbol.toStringTag) {
            Object.defineProperty(proto, Symbol.toStringTag, { value: "WebSocket", configurable: true });
        }
    }());
}

proto._binaryTypeNow = function () {
    return hasGetters ? this._binaryType : this.binaryType;
};

// Start the next candidate transport (after `failure`, a message, when one gave up).
proto._tryNext = function (failure) {
    var t;
    while (this._next < this._candidates.length) {
        t = this._candidates[this._next++];
        if (t.usable() && t.start(this, this._next < this._candidates.length)) {
            return;
        }
    }
    this._fail(failure || "no transport: this browser has no " +
        (this._candidates.length === 1 ? this._candidates[0].name : "usable transport"));
};

proto._fire = function (kind, type, init) {
    dispatchInternal(this, createEvent(kind, type, init));
};

proto._emitMessage = function (data, origin) {
    this._fire("MessageEvent", "message", {
        data: data,
        origin: origin || originOf(this._url),
        lastEventId: "",
        source: null,
        ports: []
    });
};

// Binary payload (Uint8Array / ArrayBuffer / Array) as the binaryType asks for.
proto._binary = function (bytes) {
    var ab;
    if (!hasArrayBuffer) {
        return bytes;
    }
    if (isArrayBuffer(bytes)) {
        ab = bytes;
    } else if (bytes.buffer && bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength) {
        ab = bytes.buffer;
    } else {
        ab = bytesOf(bytes).buffer;
    }
    if (this._binaryTypeNow() === "arraybuffer" || !hasBlob) {
        return ab;
    }
    return new Blob([ab]);
};

proto._opened = function (transport, protocol, extensions) {
    put(this, "transport", transport);
    put(this, "protocol", protocol || "");
    put(this, "extensions", extensions || "");
    put(this, "readyState", OPEN);
    this._fire("Event", "open", {});
};

// The end: `failed` (the browser's "fail the WebSocket connection") fires error first.
proto._closed = function (code, reason, wasClean, failed) {
    if (this._readyState === CLOSED) {
        return;
    }
    put(this, "readyState", CLOSED);
    if (this._carrier) {
        this._carrier.stop();
    }
    this._syncBuffered();
    if (failed) {
        this._fire("Event", "error", {});
    }
    this._fire("CloseEvent", "close", { code: code, reason: reason || "", wasClean: !!wasClean });
};

// A connection that could not be established: error, then close 1006.
proto._fail = function (message) {
    this.lastError = message || "connection failed";
    this._closed(CLOSE_ABNORMAL, "", false, true);
};

// A connection lost after it opened: close 1006 alone, as a browser reports a dropped socket.
proto._lost = function (message) {
    this.lastError = message || "connection lost";
    this._closed(CLOSE_ABNORMAL, "", false, false);
};

proto.send = function (data) {
    if (arguments.length < 1) {
        throw new TypeError("Failed to execute 'send' on 'WebSocket': 1 argument required, but only 0 present.");
    }
    if (this._readyState === CONNECTING) {
        throw makeError("InvalidStateError", "Failed to execute 'send' on 'WebSocket': Still in CONNECTING state.");
    }
    var item;
    if (isBlob(data)) {
        item = { kind: "b", blob: data, size: data.size };
    } else if (isArrayBuffer(data) || isView(data)) {
        item = { kind: "b", bytes: bytesOf(data) };
        item.size = item.bytes.length;
    } else {
        item = { kind: "t", text: toUSV(String(data)) };
        item.size = utf8Length(item.text);
    }
    if (this._readyState !== OPEN) {
        // CLOSING or CLOSED: the data is dropped; bufferedAmount still grows (as specified)
        this._addBuffered(item.size);
        return;
    }
    this._carrier.send(item, data);
};

proto.close = function (code, reason) {
    if (code !== undefined) {
        code = clampCode(code);
        if (code !== 1000 && (code < 3000 || code > 4999)) {
            throw makeError("InvalidAccessError", "Failed to execute 'close' on 'WebSocket': The close code " +
                "must be either 1000, or between 3000 and 4999. " + code + " is neither.");
        }
    }
    if (reason !== undefined) {
        reason = toUSV(String(reason));
        if (utf8Length(reason) > 123) {
            throw makeError("SyntaxError", "Failed to execute 'close' on 'WebSocket': The close reason must " +
                "not be greater than 123 UTF-8 bytes.");
        }
    }
    if (this._readyState === CLOSING || this._readyState === CLOSED) {
        return;
    }
    if (this._readyState === CONNECTING) {
        // "Fail the WebSocket connection": error, then close 1006.
        put(this, "readyState", CLOSING);
        if (this._carrier) {
            // The relay carrier outlives the socket: its connect answer frees the relay socket
            // (ABANDONED). Detached here, since failing the socket stops its carrier, and stopped,
            // it would abort the connect and the relay would hold the socket until it expired.
            this._carrier.abandon();
            this._carrier = null;
        }
        var self = this;
        later(function () {
            self._fail("WebSocket is closed before the connection is established.");
        }, 0);
        return;
    }
    put(this, "readyState", CLOSING);
    this._carrier.close(code, reason);
};

// Where getters exist bufferedAmount is live; elsewhere it is refreshed at each change we see.
proto._addBuffered = function (delta) {
    this._buffered = Math.max(0, this._buffered + delta);
    this._syncBuffered();
};

proto._syncBuffered = function () {
    if (!hasGetters) {
        this.bufferedAmount = this._buffered + (this._carrier ? this._carrier.buffered() : 0);
    }
};
