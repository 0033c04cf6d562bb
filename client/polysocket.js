/*!
 * polysocket.js 0.1.0 - a W3C WebSocket for every browser.
 *
 * Native WebSocket straight to the target where it works; where it does not (no WebSocket in the
 * browser, or a proxy that kills the upgrade) the same socket is carried by a polysocket relay
 * over JSONP script tags or CORS XMLHttpRequest long-polling.
 *
 * ES3 syntax on purpose (IE6 parses this file): no trailing commas, no reserved words as property
 * names, no getters; ES5 runtime APIs only behind feature tests. MIT licence.
 */
(function (root, factory) {
    var PolySocket = factory(root);
    if (typeof module === "object" && module && module.exports) {
        module.exports = PolySocket;
    }
    if (typeof define === "function" && define.amd) {
        define([], function () { return PolySocket; });
    }
    if (root) {
        root.PolySocket = PolySocket;
    }
}(typeof window !== "undefined" ? window : this, function (win) {
    "use strict";

    var VERSION = "0.1.0";
    var CALLER = "polysocketjs-" + VERSION;

    var CONNECTING = 0;
    var OPEN = 1;
    var CLOSING = 2;
    var CLOSED = 3;

    var MAX_URL = 2000;        // total URL length for GET requests (old IE: 2083)
    var URL_SLACK = 24;        // room for the longest seq number and rounding
    var MAX_SEND_ATTEMPTS = 8; // per request, then the socket fails

    // Captured at load time so that PolySocket.install() cannot make us call ourselves.
    var NativeWebSocket = win ? (win.WebSocket || win.MozWebSocket || null) : null;
    var doc = win ? win.document : null;

    var hasArrayBuffer = typeof ArrayBuffer !== "undefined" && typeof Uint8Array !== "undefined";
    var hasBlob = false;
    try {
        hasBlob = typeof Blob !== "undefined" && !!new Blob(["x"]);
    } catch (eBlob) {
        hasBlob = false;
    }
    var hasFileReader = typeof FileReader !== "undefined";

    // ES5 accessors on plain objects (not in IE8, whose defineProperty only takes DOM objects).
    var hasGetters = (function () {
        var o = {};
        try {
            Object.defineProperty(o, "x", { get: function () { return 1; } });
            return o.x === 1;
        } catch (e) {
            return false;
        }
    }());

    function defineBufferedAmount(sock) {
        Object.defineProperty(sock, "bufferedAmount", {
            get: function () {
                return sock._buffered + (sock._native ? sock._native.bufferedAmount : 0);
            },
            enumerable: true,
            configurable: true
        });
    }

    function hasCorsXhr() {
        if (!win || !win.XMLHttpRequest) {
            return false;
        }
        try {
            return "withCredentials" in new win.XMLHttpRequest();
        } catch (e) {
            return false;
        }
    }

    // ------------------------------------------------------------------ small helpers

    function isArray(x) {
        return Object.prototype.toString.call(x) === "[object Array]";
    }

    function now() {
        return new Date().getTime();
    }

    function later(fn, ms) {
        return setTimeout(fn, ms || 0);
    }

    function reportError(err) {
        // An exception in a user's handler must not break the socket: rethrow it on its own.
        setTimeout(function () { throw err; }, 0);
    }

    function makeError(name, message) {
        var err;
        if (typeof DOMException === "function") {
            try {
                err = new DOMException(message, name);
                if (err.name === name) {
                    return err;
                }
            } catch (e) {
                err = null;
            }
        }
        err = new Error(message);
        err.name = name;
        return err;
    }

    // A string's UTF-16 code units as the code points a browser would put on the wire: lone
    // surrogates become U+FFFD, as the native WebSocket does (USVString conversion).
    function toUSV(s) {
        var out = null;
        var i;
        var c;
        var d;
        for (i = 0; i < s.length; i++) {
            c = s.charCodeAt(i);
            if (c >= 0xD800 && c <= 0xDFFF) {
                if (c <= 0xDBFF && i + 1 < s.length) {
                    d = s.charCodeAt(i + 1);
                    if (d >= 0xDC00 && d <= 0xDFFF) {
                        i++;
                        continue;
                    }
                }
                if (out === null) {
                    out = [];
                }
                out.push(i);
            }
        }
        if (out === null) {
            return s;
        }
        var parts = [];
        var start = 0;
        for (i = 0; i < out.length; i++) {
            parts.push(s.substring(start, out[i]));
            parts.push("\uFFFD");
            start = out[i] + 1;
        }
        parts.push(s.substring(start));
        return parts.join("");
    }

    function utf8Length(s) {
        var n = 0;
        var i;
        var c;
        for (i = 0; i < s.length; i++) {
            c = s.charCodeAt(i);
            if (c < 0x80) {
                n += 1;
            } else if (c < 0x800) {
                n += 2;
            } else if (c >= 0xD800 && c <= 0xDBFF) {
                n += 4;
                i++;
            } else {
                n += 3;
            }
        }
        return n;
    }

    var B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    var B64_INDEX = {};
    (function () {
        var i;
        for (i = 0; i < B64.length; i++) {
            B64_INDEX[B64.charAt(i)] = i;
        }
    }());

    // bytes: Uint8Array or Array of numbers
    function base64Encode(bytes) {
        var out = [];
        var n = bytes.length;
        var i;
        var a;
        var b;
        var c;
        for (i = 0; i + 2 < n; i += 3) {
            a = bytes[i];
            b = bytes[i + 1];
            c = bytes[i + 2];
            out.push(B64.charAt(a >> 2) + B64.charAt(((a & 3) << 4) | (b >> 4)) +
                B64.charAt(((b & 15) << 2) | (c >> 6)) + B64.charAt(c & 63));
        }
        if (n - i === 1) {
            a = bytes[i];
            out.push(B64.charAt(a >> 2) + B64.charAt((a & 3) << 4) + "==");
        } else if (n - i === 2) {
            a = bytes[i];
            b = bytes[i + 1];
            out.push(B64.charAt(a >> 2) + B64.charAt(((a & 3) << 4) | (b >> 4)) +
                B64.charAt((b & 15) << 2) + "=");
        }
        return out.join("");
    }

    // Returns a Uint8Array where typed arrays exist, else an Array of numbers.
    function base64Decode(s) {
        var clean = s.replace(/[^A-Za-z0-9+\/]/g, "");
        var n = Math.floor(clean.length * 3 / 4);
        var out = hasArrayBuffer ? new Uint8Array(n) : [];
        var i;
        var j = 0;
        var buf = 0;
        var bits = 0;
        for (i = 0; i < clean.length; i++) {
            buf = (buf << 6) | B64_INDEX[clean.charAt(i)];
            bits += 6;
            if (bits >= 8) {
                bits -= 8;
                out[j++] = (buf >> bits) & 255;
                buf &= (1 << bits) - 1;
            }
        }
        return out;
    }

    function isArrayBuffer(x) {
        return hasArrayBuffer && (x instanceof ArrayBuffer ||
            Object.prototype.toString.call(x) === "[object ArrayBuffer]");
    }

    function isView(x) {
        if (!hasArrayBuffer || !x || typeof x !== "object") {
            return false;
        }
        if (typeof ArrayBuffer.isView === "function") {
            return ArrayBuffer.isView(x);
        }
        return isArrayBuffer(x.buffer) && typeof x.byteLength === "number";
    }

    function isBlob(x) {
        return hasBlob && x instanceof Blob;
    }

    // A copy of the bytes of an ArrayBuffer or view, as a Uint8Array.
    function bytesOf(x) {
        if (isArrayBuffer(x)) {
            return new Uint8Array(x.slice ? x.slice(0) : x);
        }
        var view = new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
        var copy = new Uint8Array(view.length);
        copy.set(view);
        return copy;
    }

    function extend(target, source) {
        var k;
        if (source) {
            for (k in source) {
                if (Object.prototype.hasOwnProperty.call(source, k) && source[k] !== undefined) {
                    target[k] = source[k];
                }
            }
        }
        return target;
    }

    function parseJson(text) {
        if (win && win.JSON && typeof win.JSON.parse === "function") {
            return win.JSON.parse(text);
        }
        // Only for pre-ES5 browsers with CORS XHR (none known); the relay's answers are plain JSON.
        return (new Function("return (" + text + ");"))();
    }

    function enc(v) {
        return encodeURIComponent(String(v));
    }

    function buildQuery(params) {
        var parts = [];
        var k;
        for (k in params) {
            if (Object.prototype.hasOwnProperty.call(params, k) && params[k] !== undefined &&
                    params[k] !== null) {
                parts.push(enc(k) + "=" + enc(params[k]));
            }
        }
        return parts.join("&");
    }

    // Encoded length in a URL query of one character (or surrogate pair) of s at i.
    function urlCost(s, i) {
        var c = s.charCodeAt(i);
        if ((c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) ||
                c === 45 || c === 95 || c === 46 || c === 33 || c === 126 || c === 42 ||
                c === 39 || c === 40 || c === 41) {
            return 1;
        }
        if (c < 0x80) {
            return 3;
        }
        if (c < 0x800) {
            return 6;
        }
        if (c >= 0xD800 && c <= 0xDBFF) {
            return 12;
        }
        return 9;
    }

    function byteCost(s, i) {
        var c = s.charCodeAt(i);
        if (c < 0x80) {
            return 1;
        }
        if (c < 0x800) {
            return 2;
        }
        if (c >= 0xD800 && c <= 0xDBFF) {
            return 4;
        }
        return 3;
    }

    // Split a (USV) string into pieces whose cost is at most budget, never inside a surrogate pair.
    function splitText(s, budget, cost) {
        var pieces = [];
        var start = 0;
        var used = 0;
        var i = 0;
        var step;
        var c;
        while (i < s.length) {
            c = cost(s, i);
            step = c >= 4 && s.charCodeAt(i) >= 0xD800 && s.charCodeAt(i) <= 0xDBFF ? 2 : 1;
            if (used + c > budget && i > start) {
                pieces.push(s.substring(start, i));
                start = i;
                used = 0;
            }
            used += c;
            i += step;
        }
        pieces.push(s.substring(start));
        return pieces;
    }

    // Split base64 text into pieces of whole 4-character groups whose URL-encoded length fits.
    function splitBase64(b64, budget) {
        var pieces = [];
        var start = 0;
        var used = 0;
        var i;
        var k;
        var c;
        var groupCost;
        for (i = 0; i < b64.length; i += 4) {
            groupCost = 0;
            for (k = i; k < i + 4 && k < b64.length; k++) {
                c = b64.charAt(k);
                groupCost += (c === "+" || c === "/" || c === "=") ? 3 : 1;
            }
            if (used + groupCost > budget && i > start) {
                pieces.push(b64.substring(start, i));
                start = i;
                used = 0;
            }
            used += groupCost;
        }
        pieces.push(b64.substring(start));
        return pieces;
    }

    function originOf(url) {
        var m = /^([a-z][a-z0-9+.\-]*:\/\/[^\/?#]*)/i.exec(url);
        return m ? m[1] : "";
    }

    function parseTargetUrl(url) {
        var s = String(url);
        var m = /^([a-zA-Z][a-zA-Z0-9+.\-]*):\/\/([^\/?#]+)([^#]*)(#.*)?$/.exec(s);
        if (!m) {
            throw makeError("SyntaxError", "Failed to construct 'WebSocket': The URL '" + s + "' is invalid.");
        }
        var scheme = m[1].toLowerCase();
        if (scheme === "http") {
            scheme = "ws";
        } else if (scheme === "https") {
            scheme = "wss";
        }
        if (scheme !== "ws" && scheme !== "wss") {
            throw makeError("SyntaxError", "Failed to construct 'WebSocket': The URL's scheme must be " +
                "either 'http', 'https', 'ws', or 'wss'. '" + m[1] + "' is not allowed.");
        }
        if (m[4]) {
            throw makeError("SyntaxError", "Failed to construct 'WebSocket': The URL contains a fragment " +
                "identifier ('" + m[4] + "'). Fragment identifiers are not allowed in WebSocket URLs.");
        }
        var host = m[2];
        if (host.indexOf("@") >= 0 || /[\s]/.test(host)) {
            throw makeError("SyntaxError", "Failed to construct 'WebSocket': The URL '" + s + "' is invalid.");
        }
        var lowerHost = host.toLowerCase();
        var path = m[3] || "/";
        if (path.charAt(0) !== "/") {
            path = "/" + path;
        }
        return scheme + "://" + lowerHost + path;
    }

    function parseProtocols(protocols) {
        var list;
        var seen = {};
        var i;
        var p;
        if (protocols === undefined || protocols === null) {
            return [];
        }
        list = isArray(protocols) ? protocols : [protocols];
        for (i = 0; i < list.length; i++) {
            p = String(list[i]);
            if (!/^[!#$%&'*+\-.\^_`|~0-9A-Za-z]+$/.test(p)) {
                throw makeError("SyntaxError", "Failed to construct 'WebSocket': The subprotocol '" + p +
                    "' is invalid.");
            }
            if (Object.prototype.hasOwnProperty.call(seen, p)) {
                throw makeError("SyntaxError", "Failed to construct 'WebSocket': The subprotocol '" + p +
                    "' is duplicated.");
            }
            seen[p] = true;
        }
        var copy = [];
        for (i = 0; i < list.length; i++) {
            copy.push(String(list[i]));
        }
        return copy;
    }

    // ------------------------------------------------------------------ request transports

    var cbRegistry = (win && win.PolySocket && win.PolySocket._cb) || {};
    var cbPrefix = "c" + Math.floor(Math.random() * 1e6).toString(36);
    var cbCounter = 0;

    function noop() {}

    // JSONP: one script tag per request; result(err, data). err is {error, message} for transport
    // failures (error "network" or "timeout").
    function jsonpRequest(url, params, timeoutMs, result) {
        var name = cbPrefix + "_" + (cbCounter++);
        var head = doc.getElementsByTagName("head")[0] || doc.documentElement;
        var script = doc.createElement("script");
        var done = false;
        var timer = null;
        var q = buildQuery(params);

        function forget() {
            try {
                delete cbRegistry[name];
            } catch (e) {
                cbRegistry[name] = undefined;
            }
        }

        // stub: the script may still run later (timeout, abort): leave a no-op behind for a while.
        function cleanup(stub) {
            if (timer !== null) {
                clearTimeout(timer);
                timer = null;
            }
            script.onload = script.onreadystatechange = script.onerror = null;
            if (script.parentNode) {
                script.parentNode.removeChild(script);
            }
            if (stub) {
                cbRegistry[name] = noop;
                later(forget, 120000);
            } else {
                forget();
            }
        }

        function finish(err, data, stub) {
            if (done) {
                return;
            }
            done = true;
            cleanup(stub);
            result(err, data);
        }

        cbRegistry[name] = function (data) {
            finish(null, data);
        };
        timer = later(function () {
            finish({ error: "timeout", message: "no answer from " + url + " in " + timeoutMs + " ms" }, null, true);
        }, timeoutMs);
        script.type = "text/javascript";
        script.charset = "utf-8";
        script.async = true;
        script.onerror = function () {
            finish({ error: "network", message: "request to " + url + " failed" });
        };
        script.onload = script.onreadystatechange = function () {
            var rs = script.readyState;
            if (!rs || rs === "loaded" || rs === "complete") {
                // The script has run by now: if it did not call back, it was not an answer.
                later(function () {
                    finish({ error: "network", message: "bad answer from " + url }, null, true);
                }, 0);
            }
        };
        script.src = url + "?cb=PolySocket._cb." + name + (q ? "&" + q : "");
        head.insertBefore(script, head.firstChild);
        return {
            abort: function () {
                if (!done) {
                    done = true;
                    cleanup(true);
                }
            }
        };
    }

    function jsonpUrlOverhead(url) {
        return url.length + "?cb=PolySocket._cb.".length + cbPrefix.length + 12;
    }

    // CORS XMLHttpRequest: JSON answers with real statuses.
    function xhrRequest(url, params, timeoutMs, result, body, contentType) {
        var xhr = new win.XMLHttpRequest();
        var done = false;
        var timer = null;
        var q = buildQuery(params);

        function finish(err, data) {
            if (done) {
                return;
            }
            done = true;
            if (timer !== null) {
                clearTimeout(timer);
                timer = null;
            }
            xhr.onreadystatechange = noop;
            result(err, data);
        }

        try {
            xhr.open(body === undefined ? "GET" : "POST", url + (q ? "?" + q : ""), true);
            if (body !== undefined && contentType) {
                xhr.setRequestHeader("Content-Type", contentType);
            }
        } catch (eOpen) {
            later(function () {
                finish({ error: "network", message: "cannot request " + url + ": " + eOpen.message });
            }, 0);
            return { abort: function () { done = true; } };
        }
        xhr.onreadystatechange = function () {
            var data;
            if (xhr.readyState !== 4) {
                return;
            }
            if (xhr.status === 0) {
                finish({ error: "network", message: "request to " + url + " failed" });
                return;
            }
            try {
                data = parseJson(xhr.responseText);
            } catch (e) {
                finish({ error: "network", message: "bad answer from " + url + " (HTTP " + xhr.status + ")" });
                return;
            }
            if (!data || typeof data !== "object") {
                finish({ error: "network", message: "bad answer from " + url });
                return;
            }
            finish(null, data);
        };
        timer = later(function () {
            finish({ error: "timeout", message: "no answer from " + url + " in " + timeoutMs + " ms" });
            try {
                xhr.abort();
            } catch (e) {}
        }, timeoutMs);
        try {
            xhr.send(body === undefined ? null : body);
        } catch (eSend) {
            later(function () {
                finish({ error: "network", message: "request to " + url + " failed: " + eSend.message });
            }, 0);
        }
        return {
            abort: function () {
                if (!done) {
                    done = true;
                    if (timer !== null) {
                        clearTimeout(timer);
                    }
                    xhr.onreadystatechange = noop;
                    try {
                        xhr.abort();
                    } catch (e) {}
                }
            }
        };
    }

    // ------------------------------------------------------------------ events

    function makeEvent(type, target, fields) {
        var ev = {
            type: type,
            target: target,
            currentTarget: target,
            srcElement: target,
            eventPhase: 2,
            bubbles: false,
            cancelable: false,
            defaultPrevented: false,
            isTrusted: false,
            timeStamp: now(),
            preventDefault: noop,
            stopPropagation: noop,
            stopImmediatePropagation: function () {
                ev._stopped = true;
            }
        };
        return extend(ev, fields);
    }

    // ------------------------------------------------------------------ the socket

    function PolySocket(url, protocols, options) {
        if (!(this instanceof PolySocket)) {
            throw new TypeError("Failed to construct 'WebSocket': Please use the 'new' operator.");
        }
        if (arguments.length < 1) {
            throw new TypeError("Failed to construct 'WebSocket': 1 argument required, but only 0 present.");
        }
        // new PolySocket(url, options) is accepted too.
        if (protocols && typeof protocols === "object" && !isArray(protocols)) {
            options = protocols;
            protocols = undefined;
        }
        var opts = extend(extend({}, PolySocket.defaults), options);

        this.url = parseTargetUrl(url);
        this._protocols = parseProtocols(protocols);
        this.readyState = CONNECTING;
        this.protocol = "";
        this.extensions = "";
        this._buffered = 0;        // bytes queued on the relay path (and dropped after close)
        if (hasGetters) {
            defineBufferedAmount(this);
        } else {
            this.bufferedAmount = 0;
        }
        this.binaryType = hasBlob ? "blob" : "arraybuffer";
        this.transport = "";
        this.onopen = null;
        this.onmessage = null;
        this.onerror = null;
        this.onclose = null;

        this._opts = opts;
        this._listeners = {};
        this._native = null;
        this._relay = null;
        this._closeArgs = null;

        var self = this;
        var mode = opts.transport || "auto";
        if (mode !== "auto" && mode !== "websocket" && mode !== "relay" && mode !== "xhr" &&
                mode !== "jsonp") {
            throw makeError("SyntaxError", "Failed to construct 'PolySocket': unknown transport '" + mode + "'.");
        }
        if ((mode === "auto" || mode === "websocket") && NativeWebSocket) {
            if (this._startNative(mode === "auto")) {
                return;
            }
        } else if (mode === "websocket") {
            later(function () {
                self._fail("this browser has no WebSocket");
            }, 0);
            return;
        }
        later(function () {
            if (self.readyState === CONNECTING) {
                self._startRelay();
            }
        }, 0);
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
        pollTtl: 25000,          // the relay holds a poll this long (ms)
        pollSlack: 15000,        // extra wait for a poll answer before giving up on it
        maxInflight: 4,          // concurrent send requests per socket
        maxBody: 65536,          // bytes per POST /send chunk (XHR)
        maxUrl: MAX_URL
    };

    PolySocket.supports = {
        websocket: !!NativeWebSocket,
        xhr: hasCorsXhr(),
        jsonp: !!doc,
        arraybuffer: hasArrayBuffer,
        blob: hasBlob
    };

    // Sets window.WebSocket to PolySocket where the browser has none. Returns true if it did.
    PolySocket.install = function (defaults) {
        if (defaults) {
            extend(PolySocket.defaults, defaults);
        }
        if (win && !win.WebSocket) {
            win.WebSocket = PolySocket;
            return true;
        }
        return false;
    };

    var proto = PolySocket.prototype;
    proto.CONNECTING = CONNECTING;
    proto.OPEN = OPEN;
    proto.CLOSING = CLOSING;
    proto.CLOSED = CLOSED;

    proto.addEventListener = function (type, listener) {
        var list;
        var i;
        if (!listener) {
            return;
        }
        list = this._listeners[type] || (this._listeners[type] = []);
        for (i = 0; i < list.length; i++) {
            if (list[i] === listener) {
                return;
            }
        }
        list.push(listener);
    };

    proto.removeEventListener = function (type, listener) {
        var list = this._listeners[type];
        var i;
        if (!list) {
            return;
        }
        for (i = 0; i < list.length; i++) {
            if (list[i] === listener) {
                // copy on write: a dispatch in progress keeps its own list
                list = list.slice(0, i).concat(list.slice(i + 1));
                this._listeners[type] = list;
                return;
            }
        }
    };

    proto.dispatchEvent = function (ev) {
        var handler = this["on" + ev.type];
        var list = this._listeners[ev.type];
        var i;
        var l;
        if (typeof handler === "function") {
            try {
                handler.call(this, ev);
            } catch (e1) {
                reportError(e1);
            }
        }
        if (list) {
            for (i = 0; i < list.length && !ev._stopped; i++) {
                l = list[i];
                try {
                    if (typeof l === "function") {
                        l.call(this, ev);
                    } else if (l && typeof l.handleEvent === "function") {
                        l.handleEvent(ev);
                    }
                } catch (e2) {
                    reportError(e2);
                }
            }
        }
        return !ev.defaultPrevented;
    };

    proto._emit = function (type, fields) {
        this.dispatchEvent(makeEvent(type, this, fields));
    };

    proto._emitMessage = function (data) {
        this._emit("message", {
            data: data,
            origin: originOf(this.url),
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
        if (this.binaryType === "arraybuffer" || !hasBlob) {
            return ab;
        }
        return new Blob([ab]);
    };

    proto._opened = function (transport, protocol, extensions) {
        this.transport = transport;
        this.protocol = protocol || "";
        this.extensions = extensions || "";
        this.readyState = OPEN;
        this._emit("open", {});
    };

    proto._closed = function (code, reason, wasClean, withError) {
        if (this.readyState === CLOSED) {
            return;
        }
        this.readyState = CLOSED;
        if (withError) {
            this._emit("error", { message: withError });
        }
        this._emit("close", { code: code, reason: reason || "", wasClean: !!wasClean });
    };

    // Fail before or after open: error then close 1006, like a native socket.
    proto._fail = function (message) {
        if (this._relay) {
            this._relay.stop();
        }
        this._closed(1006, "", false, message || "connection failed");
    };

    proto.send = function (data) {
        if (arguments.length < 1) {
            throw new TypeError("Failed to execute 'send' on 'WebSocket': 1 argument required, but only 0 present.");
        }
        if (this.readyState === CONNECTING) {
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
        if (this.readyState !== OPEN) {
            // CLOSING or CLOSED: the data is dropped; bufferedAmount still grows (as specified)
            this._addBuffered(item.size);
            return;
        }
        if (this._native) {
            this._native.send(data);
            this._syncBuffered();
            return;
        }
        this._relay.enqueue(item);
    };

    proto.close = function (code, reason) {
        if (code !== undefined) {
            code = Number(code);
            code = isNaN(code) ? 0 : Math.floor(code) % 65536;
            if (code !== 1000 && (code < 3000 || code > 4999)) {
                throw makeError("InvalidAccessError", "Failed to execute 'close' on 'WebSocket': The close code " +
                    "must be either 1000, or between 3000 and 4999. " + code + " is neither.");
            }
        }
        reason = reason === undefined ? "" : toUSV(String(reason));
        if (utf8Length(reason) > 123) {
            throw makeError("SyntaxError", "Failed to execute 'close' on 'WebSocket': The close reason must " +
                "not be greater than 123 UTF-8 bytes.");
        }
        if (this.readyState === CLOSING || this.readyState === CLOSED) {
            return;
        }
        if (this.readyState === CONNECTING) {
            this.readyState = CLOSING;
            this._closeArgs = { code: code, reason: reason };
            if (this._native) {
                this._dropNative();
            }
            if (this._relay) {
                this._relay.abandon();
            }
            var self = this;
            later(function () {
                self._closed(1006, "", false, "WebSocket is closed before the connection is established.");
            }, 0);
            return;
        }
        this.readyState = CLOSING;
        if (this._native) {
            if (code === undefined) {
                this._native.close();
            } else {
                this._native.close(code, reason);
            }
            return;
        }
        this._relay.close(code === undefined ? 1000 : code, reason);
    };

    // Where getters exist bufferedAmount is live; elsewhere it is refreshed at each change we see.
    proto._addBuffered = function (delta) {
        this._buffered = Math.max(0, this._buffered + delta);
        this._syncBuffered();
    };

    proto._syncBuffered = function () {
        if (!hasGetters) {
            this.bufferedAmount = this._buffered + (this._native ? this._native.bufferedAmount : 0);
        }
    };

    // ------------------------------------------------------------------ native transport

    // Returns false when the native constructor threw and the relay should be tried instead.
    proto._startNative = function (mayFallBack) {
        var self = this;
        var ws;
        var opened = false;
        var timer = null;
        try {
            ws = this._protocols.length ? new NativeWebSocket(this.url, this._protocols) :
                new NativeWebSocket(this.url);
        } catch (e) {
            if (!mayFallBack) {
                throw e;
            }
            return false;
        }
        this._native = ws;
        try {
            ws.binaryType = "arraybuffer";
        } catch (eType) {}

        function fallBack() {
            self._dropNative();
            if (self.readyState === CONNECTING) {
                self._startRelay();
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
            if (self._native !== ws || self.readyState !== OPEN) {
                return;
            }
            self._syncBuffered();
            if (typeof ev.data === "string") {
                self._emitMessage(ev.data);
            } else if (isBlob(ev.data)) {
                self._emitMessage(ev.data);
            } else {
                self._emitMessage(self._binary(ev.data));
            }
        };
        ws.onerror = function () {
            if (self._native !== ws) {
                return;
            }
            if (!opened && mayFallBack) {
                return; // the close that follows decides
            }
            self._emit("error", { message: "WebSocket error" });
        };
        ws.onclose = function (ev) {
            if (timer !== null) {
                clearTimeout(timer);
                timer = null;
            }
            if (self._native !== ws) {
                return;
            }
            if (!opened) {
                if (mayFallBack) {
                    fallBack();
                    return;
                }
                self._native = null;
                self._closed(ev.code || 1006, ev.reason, false, null);
                return;
            }
            self._syncBuffered();
            self._closed(ev.code, ev.reason, ev.wasClean, null);
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

    // ------------------------------------------------------------------ relay transport

    proto._startRelay = function () {
        var opts = this._opts;
        var mode = opts.transport || "auto";
        var kind;
        if (mode === "xhr" || mode === "jsonp") {
            kind = mode;
        } else {
            kind = PolySocket.supports.xhr ? "xhr" : "jsonp";
        }
        if (kind === "xhr" && !PolySocket.supports.xhr) {
            this._fail("this browser has no CORS XMLHttpRequest");
            return;
        }
        if (kind === "jsonp" && !doc) {
            this._fail("JSONP needs a document");
            return;
        }
        if (!opts.router) {
            this._fail("no polysocket router configured (options.router)");
            return;
        }
        this._relay = new Relay(this, kind, String(opts.router).replace(/\/+$/, ""));
        this._relay.connect();
    };

    // When the page goes away, tell the relay at once (a native socket is closed by the browser);
    // otherwise the relay would hold the target connection until its idle timeout.
    var liveRelays = {};
    var relayCounter = 0;
    var watchingUnload = false;

    function onPageHide() {
        var k;
        for (k in liveRelays) {
            if (Object.prototype.hasOwnProperty.call(liveRelays, k)) {
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

    function Relay(socket, kind, router) {
        this.key = "s" + (relayCounter++);
        this.socket = socket;
        this.kind = kind;
        this.router = router;
        this.opts = socket._opts;
        this.scheme = /^https:/i.test(router) ? "https://" : "http://";
        this.base = "";
        this.id = "";
        this.stopped = false;
        this.abandoned = false;
        this.requests = {};   // in-flight request handles, for stop()
        this.reqCounter = 0;
        // sending
        this.queue = [];      // messages not yet split into requests
        this.pending = [];    // requests (chunks) waiting for a slot, in seq order
        this.inflight = 0;
        this.nextSeq = 0;
        this.sendBroken = false;
        this.closeReq = null; // {code, reason} once close() was called
        this.closeSent = false;
        this.reading = false; // a Blob is being read
        // receiving
        this.lastSeq = -1;
        this.pollFailures = 0;
        this.pollFailSince = 0;
        this.polling = false;
    }

    Relay.prototype.request = function (url, params, timeoutMs, result, body, contentType) {
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
            result(err, data);
        }
        if (this.kind === "jsonp") {
            handle = jsonpRequest(url, params, timeoutMs, done);
        } else {
            handle = xhrRequest(url, params, timeoutMs, done, body, contentType);
        }
        if (!finished && handle) {
            this.requests[key] = handle;
        }
        return handle;
    };

    Relay.prototype.stop = function () {
        var k;
        this.stopped = true;
        unwatch(this);
        for (k in this.requests) {
            if (Object.prototype.hasOwnProperty.call(this.requests, k)) {
                try {
                    this.requests[k].abort();
                } catch (e) {}
            }
        }
        this.requests = {};
    };

    // close() while connecting: when the connect answer comes, free the relay socket.
    // A fire-and-forget /close that survives the page unloading: fetch with keepalive, or an image.
    Relay.prototype.beacon = function () {
        var url;
        var img;
        if (this.stopped || !this.id) {
            return;
        }
        unwatch(this);
        url = this.base + "/close?" + buildQuery({ socket: this.id, code: 1000, reason: "page closed" });
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

    Relay.prototype.abandon = function () {
        this.abandoned = true;
    };

    Relay.prototype.connect = function () {
        var self = this;
        var sock = this.socket;
        var params = {
            from: CALLER,
            target: sock.url
        };
        if (this.opts.token) {
            params.token = this.opts.token;
        }
        if (sock._protocols.length) {
            params.protocols = sock._protocols.join(",");
        }
        this.request(this.router + "/connect", params, this.opts.connectTimeout, function (err, data) {
            if (err || !data.ok) {
                if (self.abandoned) {
                    self.stopped = true;
                    return;
                }
                var e = err || data;
                self.socket._fail((e.error || "error") + ": " + (e.message || "connect failed"));
                return;
            }
            self.id = data.socket;
            self.base = self.scheme + data.fqdn;
            if (self.abandoned) {
                // Free the socket on the relay; nobody listens any more.
                self.request(self.base + "/close", { socket: self.id, code: 1000 }, self.opts.sendTimeout, noop);
                self.stopped = true;
                return;
            }
            if (sock.readyState !== CONNECTING) {
                return;
            }
            watch(self);
            sock._opened(self.kind, data.protocol, "");
            self.poll();
        });
    };

    // -------------- receiving

    Relay.prototype.poll = function () {
        var self = this;
        var ttl = this.opts.pollTtl;
        if (this.stopped || this.polling) {
            return;
        }
        this.polling = true;
        this.request(this.base + "/poll", { socket: this.id, ttl: ttl, ack: this.lastSeq },
            ttl + this.opts.pollSlack, function (err, data) {
                self.polling = false;
                if (err) {
                    self.pollFailed(err.error + ": " + err.message);
                    return;
                }
                if (!data.ok) {
                    if (data.error === "unknown_socket" || data.error === "bad_request") {
                        self.gone(data.error + ": " + data.message);
                    } else {
                        self.pollFailed(data.error + ": " + data.message);
                    }
                    return;
                }
                self.pollFailures = 0;
                self.deliver(data.messages || []);
                if (!self.stopped) {
                    self.poll();
                }
            });
    };

    Relay.prototype.pollFailed = function (message) {
        var self = this;
        var t = now();
        if (this.pollFailures === 0) {
            this.pollFailSince = t;
        }
        this.pollFailures++;
        // The relay forgets a socket that is not polled for its idle timeout (60 s by default).
        if (t - this.pollFailSince > 60000) {
            this.gone(message);
            return;
        }
        later(function () {
            self.poll();
        }, Math.min(100 * Math.pow(2, this.pollFailures - 1), 5000));
    };

    Relay.prototype.gone = function (message) {
        this.stop();
        var sock = this.socket;
        if (sock.readyState === CLOSING && this.closeSent && this.closeReq) {
            // We asked to close and the socket vanished before the final message came.
            sock._closed(1006, "", false, message);
            return;
        }
        sock._fail(message);
    };

    Relay.prototype.deliver = function (messages) {
        var sock = this.socket;
        var i;
        var m;
        for (i = 0; i < messages.length; i++) {
            m = messages[i];
            if (this.stopped) {
                return;
            }
            if (!m || m.type === "heartbeat" || typeof m.seq !== "number" || m.seq <= this.lastSeq) {
                continue;
            }
            this.lastSeq = m.seq;
            if (m.type === "close") {
                this.finish(m.code, m.reason);
                return;
            }
            if (sock.readyState !== OPEN) {
                continue; // CLOSING: messages are dropped, as by a native socket
            }
            if (m.type === "text") {
                sock._emitMessage(m.data);
            } else if (m.type === "binary") {
                sock._emitMessage(sock._binary(base64Decode(m.data || "")));
            }
        }
    };

    Relay.prototype.finish = function (code, reason) {
        var sock = this.socket;
        var ack = { socket: this.id, ttl: 0, ack: this.lastSeq };
        this.stop();
        // Acknowledge the close so the relay frees the socket at once; the answer does not matter.
        if (this.kind === "jsonp") {
            jsonpRequest(this.base + "/poll", ack, this.opts.sendTimeout, noop);
        } else {
            xhrRequest(this.base + "/poll", ack, this.opts.sendTimeout, noop);
        }
        sock._syncBuffered();
        code = typeof code === "number" ? code : 1005;
        sock._closed(code, reason || "", code !== 1006, code === 1006 ? "connection closed abnormally" : null);
    };

    // -------------- sending

    Relay.prototype.enqueue = function (item) {
        this.socket._addBuffered(item.size);
        this.queue.push(item);
        this.pump();
    };

    Relay.prototype.close = function (code, reason) {
        this.closeReq = { code: code, reason: reason };
        this.pump();
    };

    // Turn queued messages into chunk requests (assigning seqs in order) and start requests while
    // there are free slots. A Blob is read first; later messages wait for it to keep the order.
    Relay.prototype.pump = function () {
        var self = this;
        var item;
        if (this.stopped) {
            return;
        }
        while (this.pending.length < this.opts.maxInflight * 2 && this.queue.length && !this.reading &&
                !this.sendBroken) {
            item = this.queue[0];
            if (item.blob) {
                this.readBlob(item);
                break;
            }
            this.queue.shift();
            this.split(item);
        }
        while (this.inflight < this.opts.maxInflight && this.pending.length && !this.sendBroken) {
            this.start(this.pending.shift());
        }
        if (this.closeReq && !this.closeSent && (this.sendBroken || (!this.queue.length &&
                !this.pending.length && !this.inflight && !this.reading))) {
            this.closeSent = true;
            this.sendClose(0);
        }
    };

    Relay.prototype.readBlob = function (item) {
        var self = this;
        var reader;
        if (!hasFileReader) {
            item.blob = null;
            item.bytes = [];
            return;
        }
        this.reading = true;
        reader = new FileReader();
        reader.onload = function () {
            self.reading = false;
            item.bytes = new Uint8Array(reader.result);
            item.blob = null;
            self.pump();
        };
        reader.onerror = function () {
            self.reading = false;
            self.sendBroken = true;
            self.socket._fail("could not read a Blob to send");
        };
        reader.readAsArrayBuffer(item.blob);
    };

    Relay.prototype.split = function (item) {
        var chunks = [];
        var i;
        var budget;
        var pieces;
        var n;
        if (this.kind === "xhr") {
            if (item.kind === "t") {
                pieces = splitText(item.text, this.opts.maxBody, byteCost);
                for (i = 0; i < pieces.length; i++) {
                    chunks.push({ t: "t", body: pieces[i], type: "text/plain;charset=UTF-8" });
                }
            } else {
                n = item.bytes.length;
                for (i = 0; i < n || i === 0; i += this.opts.maxBody) {
                    chunks.push({
                        t: "b",
                        body: item.bytes.subarray ? item.bytes.subarray(i, Math.min(n, i + this.opts.maxBody)) :
                            base64Encode(item.bytes.slice(i, i + this.opts.maxBody)),
                        type: item.bytes.subarray ? "application/octet-stream" : "text/plain;charset=UTF-8"
                    });
                }
            }
        } else {
            budget = this.opts.maxUrl - jsonpUrlOverhead(this.base + "/send") - this.id.length -
                "&socket=&seq=&t=t&fin=0&d=".length - URL_SLACK;
            if (item.kind === "t") {
                pieces = splitText(item.text, budget, urlCost);
                for (i = 0; i < pieces.length; i++) {
                    chunks.push({ t: "t", d: pieces[i] });
                }
            } else {
                pieces = splitBase64(base64Encode(item.bytes), budget);
                for (i = 0; i < pieces.length; i++) {
                    chunks.push({ t: "b", d: pieces[i] });
                }
            }
        }
        for (i = 0; i < chunks.length; i++) {
            chunks[i].seq = this.nextSeq++;
            chunks[i].fin = i === chunks.length - 1 ? 1 : 0;
            chunks[i].attempts = 0;
            chunks[i].size = chunks[i].fin ? item.size : 0;
        }
        this.pending = this.pending.concat(chunks);
    };

    Relay.prototype.start = function (chunk) {
        var self = this;
        var params = { socket: this.id, seq: chunk.seq, t: chunk.t, fin: chunk.fin };
        this.inflight++;
        chunk.attempts++;
        function answered(err, data) {
            if (err) {
                if (chunk.attempts >= MAX_SEND_ATTEMPTS) {
                    self.inflight--;
                    self.gone("send failed: " + err.message);
                    return;
                }
                // Retry with the same seq: the relay drops it if the first try got through.
                later(function () {
                    if (!self.stopped) {
                        self.inflight--;
                        self.startRetry(chunk);
                    }
                }, Math.min(200 * Math.pow(2, chunk.attempts - 1), 4000));
                return;
            }
            self.inflight--;
            if (!data.ok) {
                self.sendRefused(data);
                return;
            }
            if (chunk.size) {
                self.socket._addBuffered(-chunk.size);
            }
            self.pump();
        }
        if (this.kind === "xhr") {
            this.request(this.base + "/send", params, this.opts.sendTimeout, answered, chunk.body, chunk.type);
        } else {
            params.d = chunk.d;
            this.request(this.base + "/send", params, this.opts.sendTimeout, answered);
        }
    };

    Relay.prototype.startRetry = function (chunk) {
        if (this.sendBroken) {
            return;
        }
        this.start(chunk);
    };

    // The relay refused a send: the socket is closing or failed. The final close arrives by poll.
    Relay.prototype.sendRefused = function (data) {
        this.sendBroken = true;
        this.queue = [];
        this.pending = [];
        if (data.error === "unknown_socket") {
            this.gone(data.error + ": " + data.message);
            return;
        }
        this.pump();
    };

    Relay.prototype.sendClose = function (attempt) {
        var self = this;
        var params = { socket: this.id, code: this.closeReq.code, reason: this.closeReq.reason };
        this.request(this.base + "/close", params, this.opts.sendTimeout, function (err, data) {
            if (err && attempt < 4) {
                later(function () {
                    self.sendClose(attempt + 1);
                }, 300 * (attempt + 1));
                return;
            }
            if (!err && !data.ok && data.error === "unknown_socket") {
                self.gone(data.error + ": " + data.message);
            }
            // otherwise the poll delivers the final close
        });
    };

    return PolySocket;
}));
