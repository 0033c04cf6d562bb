/*!
 * polysocket.js 0.2.0 - a W3C WebSocket for every browser.
 *
 * Native WebSocket straight to the target where it works; where it does not (no WebSocket in the
 * browser, or a proxy that kills the upgrade) the same socket is carried by a polysocket relay
 * over CORS XMLHttpRequest or JSONP script-tag long-polling.
 *
 * ES3 syntax on purpose (IE6 parses this file): no trailing commas, no reserved words as property
 * names, no getter syntax; ES5+ runtime APIs (accessors, EventTarget, Event constructors, URL,
 * Reflect) only behind feature tests. MIT licence.
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

    var VERSION = "0.2.0";
    var CALLER = "polysocketjs-" + VERSION;

    var CONNECTING = 0;
    var OPEN = 1;
    var CLOSING = 2;
    var CLOSED = 3;

    // Shared with the relay, from src/relay-constants.json (tests/unit/test_client_constants.py): sends in
    // flight span fewer seqs than the relay holds ahead of a missing one (MAX_SEQ_SPAN); the relay's
    // default poll wait and idle timeout (when its connect answer does not say); close codes.
    var MAX_SEQ_SPAN = 1000;
    var DEFAULT_POLL_TTL_MS = 25000;
    var DEFAULT_IDLE_MS = 60000;
    var CLOSE_GOING_AWAY = 1001;
    var CLOSE_NO_STATUS = 1005;
    var CLOSE_ABNORMAL = 1006;

    var MAX_URL = 2000;        // total URL length for GET requests (old IE: 2083)
    var URL_SLACK = 24;        // room for the longest seq number and rounding
    var MAX_SEND_ATTEMPTS = 8; // per request, then the socket fails
    var PRELOAD_POLL_GAP = 250; // JSONP before the page's load event: short polls this far apart
    var STREAM_ACK_CHARS = 32768; // messages a stream delivers unacknowledged before it is renewed

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

    // A real EventTarget we can construct a socket as (Chrome 64+, Firefox 59+, Safari 14+):
    // listeners, options and dispatch are then the browser's own.
    var NativeEventTarget = (function () {
        var ET = win && win.EventTarget;
        try {
            if (typeof ET === "function" && typeof Reflect === "object" && Reflect &&
                    typeof Reflect.construct === "function" && typeof Object.create === "function" &&
                    typeof Object.getPrototypeOf === "function" && hasGetters) {
                var NewTarget = function () {};
                NewTarget.prototype = ET.prototype;
                var probe = Reflect.construct(ET, [], NewTarget);
                if (typeof probe.addEventListener === "function" && probe instanceof ET) {
                    return ET;
                }
            }
        } catch (e) {}
        return null;
    }());

    // Real Event / MessageEvent / CloseEvent objects, where the browser constructs them.
    var eventCtors = (function () {
        var out = {};
        var probes = { Event: [{}, "type"], MessageEvent: [{ data: 1 }, "data"], CloseEvent: [{ code: 4000 }, "code"] };
        var k;
        var ev;
        for (k in probes) {
            if (Object.prototype.hasOwnProperty.call(probes, k)) {
                try {
                    ev = new win[k]("x", probes[k][0]);
                    if (ev.type === "x" && (k === "Event" || ev[probes[k][1]] === probes[k][0][probes[k][1]])) {
                        out[k] = win[k];
                    }
                } catch (e) {}
            }
        }
        // Without a real EventTarget we dispatch ourselves and must be able to set `target` on them.
        if (!NativeEventTarget && out.Event) {
            try {
                ev = new out.Event("x");
                Object.defineProperty(ev, "target", { value: 1, configurable: true, writable: true });
                if (ev.target !== 1) {
                    out = {};
                }
            } catch (eDef) {
                out = {};
            }
        }
        return out;
    }());

    // The browser's WHATWG URL parser, if it handles ws: as the standard says.
    var NativeURL = (function () {
        try {
            var U = win && win.URL;
            if (typeof U === "function" && new U("ws://A:80/a b?c d").href === "ws://a/a%20b?c%20d") {
                return U;
            }
        } catch (e) {}
        return null;
    }());

    // EventSource that can make cross-origin requests (those without CORS have no withCredentials).
    var NativeEventSource = (function () {
        var ES = win && win.EventSource;
        try {
            if (typeof ES === "function" && ES.prototype && "withCredentials" in ES.prototype) {
                return ES;
            }
        } catch (e) {}
        return null;
    }());

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

    var hasOwn = Object.prototype.hasOwnProperty;

    function isArray(x) {
        return Object.prototype.toString.call(x) === "[object Array]";
    }

    function now() {
        return new Date().getTime();
    }

    function later(fn, ms) {
        return setTimeout(fn, ms || 0);
    }

    function noop() {}

    function reportError(err) {
        // An exception in a user's handler must not break the socket: rethrow it on its own.
        setTimeout(function () { throw err; }, 0);
    }

    function warn(text) {
        try {
            if (win && win.console && win.console.warn) {
                win.console.warn("PolySocket: " + text);
            }
        } catch (e) {}
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

    // UTF-8 bytes of the code point at s[i] (4 for a surrogate pair; a lone surrogate counts 3, as
    // the U+FFFD it becomes). The one rule every length and URL budget below is built on.
    function charBytes(s, i) {
        var c = s.charCodeAt(i);
        if (c < 0x80) {
            return 1;
        }
        if (c < 0x800) {
            return 2;
        }
        if (c >= 0xD800 && c <= 0xDBFF && i + 1 < s.length) {
            var d = s.charCodeAt(i + 1);
            if (d >= 0xDC00 && d <= 0xDFFF) {
                return 4;
            }
        }
        return 3;
    }

    // How many UTF-16 code units the code point at s[i] spans.
    function charUnits(s, i) {
        return charBytes(s, i) === 4 ? 2 : 1;
    }

    function utf8Length(s) {
        var n = 0;
        var i = 0;
        var b;
        while (i < s.length) {
            b = charBytes(s, i);
            n += b;
            i += b === 4 ? 2 : 1;
        }
        return n;
    }

    // Encoded length in a URL query (encodeURIComponent) of the code point at s[i].
    function urlCost(s, i) {
        var c = s.charCodeAt(i);
        if ((c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) ||
                c === 45 || c === 95 || c === 46 || c === 33 || c === 126 || c === 42 ||
                c === 39 || c === 40 || c === 41) {
            return 1;
        }
        return 3 * charBytes(s, i);
    }

    // A string's UTF-16 code units as the code points a browser would put on the wire: lone
    // surrogates become U+FFFD, as the native WebSocket does (USVString conversion).
    function toUSV(s) {
        var parts = null;
        var start = 0;
        var i;
        var c;
        for (i = 0; i < s.length; i++) {
            c = s.charCodeAt(i);
            if (c >= 0xD800 && c <= 0xDFFF) {
                if (c <= 0xDBFF && charBytes(s, i) === 4) {
                    i++;
                    continue;
                }
                if (parts === null) {
                    parts = [];
                }
                parts.push(s.substring(start, i), "\uFFFD");
                start = i + 1;
            }
        }
        if (parts === null) {
            return s;
        }
        parts.push(s.substring(start));
        return parts.join("");
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
                if (hasOwn.call(source, k) && source[k] !== undefined) {
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

    // A JSON string literal (IE6-7 have no JSON): quotes, backslashes and controls escaped.
    function jsonString(s) {
        return "\"" + s.replace(/[\\"\u0000-\u001f]/g, function (c) {
            if (c === "\"" || c === "\\") {
                return "\\" + c;
            }
            var h = c.charCodeAt(0).toString(16);
            return "\\u" + "0000".substring(h.length) + h;
        }) + "\"";
    }

    function enc(v) {
        return encodeURIComponent(String(v));
    }

    function buildQuery(params) {
        var parts = [];
        var k;
        for (k in params) {
            if (hasOwn.call(params, k) && params[k] !== undefined && params[k] !== null) {
                parts.push(enc(k) + "=" + enc(params[k]));
            }
        }
        return parts.join("&");
    }

    // Split a (USV) string into pieces whose cost is at most budget, never inside a surrogate pair.
    function splitText(s, budget, cost) {
        var pieces = [];
        var start = 0;
        var used = 0;
        var i = 0;
        var c;
        while (i < s.length) {
            c = cost(s, i);
            if (used + c > budget && i > start) {
                pieces.push(s.substring(start, i));
                start = i;
                used = 0;
            }
            used += c;
            i += charUnits(s, i);
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
        var groupCost;
        for (i = 0; i < b64.length; i += 4) {
            groupCost = 0;
            for (k = i; k < i + 4 && k < b64.length; k++) {
                groupCost += urlCost(b64, k);
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

    // ------------------------------------------------------------------ URLs (WHATWG URL + WebSocket)

    function urlError(s) {
        return makeError("SyntaxError", "Failed to construct 'WebSocket': The URL '" + s + "' is invalid.");
    }

    function schemeError(scheme) {
        return makeError("SyntaxError", "Failed to construct 'WebSocket': The URL's scheme must be " +
            "either 'http', 'https', 'ws', or 'wss'. '" + scheme + "' is not allowed.");
    }

    function fragmentError(s) {
        return makeError("SyntaxError", "Failed to construct 'WebSocket': The URL contains a fragment " +
            "identifier ('" + s.substring(s.indexOf("#")) + "'). Fragment identifiers are not allowed in " +
            "WebSocket URLs.");
    }

    function baseUrl() {
        if (!doc) {
            return undefined;
        }
        return doc.baseURI || (win.location && win.location.href) || undefined;
    }

    // Percent-encode the characters of s that are in the set (tested per ASCII code) or not ASCII.
    function percentEncode(s, inSet) {
        var out = [];
        var i = 0;
        var c;
        var n;
        while (i < s.length) {
            c = s.charCodeAt(i);
            n = charUnits(s, i);
            if (c > 0x7E || c < 0x21 || inSet(c)) {
                if (c < 0x80) {
                    out.push("%" + (c < 16 ? "0" : "") + c.toString(16).toUpperCase());
                } else {
                    out.push(encodeURIComponent(toUSV(s.substring(i, i + n))));
                }
            } else {
                out.push(s.charAt(i));
            }
            i += n;
        }
        return out.join("");
    }

    // The path set as browsers apply it (Chromium also encodes | and ^).
    function inPathSet(c) {
        return c === 34 || c === 35 || c === 60 || c === 62 || c === 63 || c === 96 || c === 123 || c === 125 ||
            c === 124 || c === 94;
    }

    function inQuerySet(c) {
        return c === 34 || c === 35 || c === 60 || c === 62 || c === 39;
    }

    function inUserinfoSet(c) {
        return inPathSet(c) || c === 47 || c === 58 || c === 59 || c === 61 || c === 64 ||
            (c >= 91 && c <= 94) || c === 124;
    }

    function isDotSegment(seg, twice) {
        seg = seg.toLowerCase().replace(/%2e/g, ".");
        return twice ? seg === ".." : seg === ".";
    }

    // An absolute URL resolved by the browser's own <a> (for relative URLs, without the URL API).
    function resolveWithAnchor(s) {
        var div;
        if (!doc || !doc.createElement) {
            return s;
        }
        div = doc.createElement("div");
        div.innerHTML = "<a href=\"" + s.replace(/&/g, "&amp;").replace(/"/g, "&quot;")
            .replace(/</g, "&lt;") + "\">x</a>";
        return div.firstChild.href || s;
    }

    // The WHATWG URL parser's result for a ws:/wss:/http:/https: URL, in ES3, for browsers without
    // the URL API (IE). Hosts are lowercased but not IDNA-mapped, IPv4 shorthands are not expanded.
    function parseUrlByHand(input, resolved) {
        var s = String(input).replace(/^[\u0000-\u0020]+|[\u0000-\u0020]+$/g, "").replace(/[\t\n\r]/g, "");
        var m = /^([a-zA-Z][a-zA-Z0-9+.\-]*):(.*)$/.exec(s);
        var scheme;
        var rest;
        var auth;
        var tail;
        var k;
        if (!m) {
            if (resolved) {
                throw urlError(input);
            }
            return parseUrlByHand(resolveWithAnchor(s), true);
        }
        scheme = m[1].toLowerCase();
        if (scheme !== "ws" && scheme !== "wss" && scheme !== "http" && scheme !== "https") {
            throw schemeError(m[1]);
        }
        rest = m[2].replace(/\\/g, "/").replace(/^\/+/, "");
        k = rest.search(/[\/?#]/);
        auth = k < 0 ? rest : rest.substring(0, k);
        tail = k < 0 ? "" : rest.substring(k);
        var userinfo = "";
        var at = auth.lastIndexOf("@");
        if (at >= 0) {
            var colon = auth.substring(0, at).indexOf(":");
            var user = colon < 0 ? auth.substring(0, at) : auth.substring(0, colon);
            var pass = colon < 0 ? "" : auth.substring(colon + 1, at);
            userinfo = percentEncode(user, inUserinfoSet) + (pass ? ":" + percentEncode(pass, inUserinfoSet) : "");
            auth = auth.substring(at + 1);
        }
        var host = auth;
        var port = "";
        var pm = /^(\[[^\]]*\]|[^:]*)(?::(.*))?$/.exec(auth);
        if (pm) {
            host = pm[1];
            port = pm[2] === undefined ? "" : pm[2];
        }
        if (host.charAt(0) !== "[") {
            try {
                host = decodeURIComponent(host);  // percent-decoded, as a domain is
            } catch (eHost) {
                throw urlError(input);
            }
        }
        host = host.toLowerCase();
        if (!host || /[\u0000-\u0020#%\/:<>?@\\^|]/.test(host.replace(/^\[.*\]$/, "h")) ||
                (host.charAt(0) === "[" && !/^\[[0-9a-f:.]+\]$/.test(host))) {
            throw urlError(input);
        }
        if (port !== "") {
            if (!/^[0-9]+$/.test(port) || Number(port) > 65535) {
                throw urlError(input);
            }
            port = String(Number(port));
        }
        var hash = tail.indexOf("#");
        var path = hash >= 0 ? tail.substring(0, hash) : tail;
        var query = null;
        var q = path.indexOf("?");
        if (q >= 0) {
            query = path.substring(q + 1);
            path = path.substring(0, q);
        }
        var segs = path.split("/");
        var outSegs = [];
        var i;
        for (i = 1; i < segs.length; i++) {
            if (isDotSegment(segs[i], true)) {
                if (outSegs.length) {
                    outSegs.pop();
                }
                if (i === segs.length - 1) {
                    outSegs.push("");
                }
            } else if (isDotSegment(segs[i], false)) {
                if (i === segs.length - 1) {
                    outSegs.push("");
                }
            } else {
                outSegs.push(percentEncode(segs[i], inPathSet));
            }
        }
        if (scheme === "http") {
            scheme = "ws";
        } else if (scheme === "https") {
            scheme = "wss";
        }
        if ((scheme === "ws" && port === "80") || (scheme === "wss" && port === "443")) {
            port = "";
        }
        var href = scheme + "://" + (userinfo ? userinfo + "@" : "") + host + (port ? ":" + port : "") +
            "/" + outSegs.join("/") + (query === null ? "" : "?" + percentEncode(query, inQuerySet));
        return { href: href, fragment: hash >= 0 };
    }

    // new WebSocket(url)'s URL steps: parse against the document's base URL, http(s) -> ws(s),
    // refuse other schemes and any fragment; returns the serialised URL.
    function parseTargetUrl(url) {
        var s = String(url);
        var u;
        var href;
        if (NativeURL) {
            try {
                u = new NativeURL(s, baseUrl());
            } catch (e) {
                throw urlError(s);
            }
            var scheme = u.protocol.substring(0, u.protocol.length - 1);
            if (scheme === "http" || scheme === "https") {
                href = (scheme === "http" ? "ws" : "wss") + u.href.substring(scheme.length);
            } else if (scheme === "ws" || scheme === "wss") {
                href = u.href;
            } else {
                throw schemeError(scheme);
            }
            if (href.indexOf("#") >= 0) {
                throw fragmentError(href);
            }
            return href;
        }
        var parsed = parseUrlByHand(s, false);
        if (parsed.fragment) {
            throw fragmentError(s);
        }
        return parsed.href;
    }

    function originOf(url) {
        var m = /^([a-z][a-z0-9+.\-]*:\/\/)(?:[^\/?#@]*@)?([^\/?#]*)/i.exec(url);
        return m ? m[1] + m[2] : "";
    }

    function parseProtocols(protocols) {
        var list;
        var seen = {};
        var i;
        var p;
        var copy = [];
        if (protocols === undefined) {
            return [];
        }
        if (isArray(protocols)) {
            list = protocols;
        } else if (protocols && typeof protocols === "object" && typeof Symbol === "function" &&
                Symbol.iterator && typeof protocols[Symbol.iterator] === "function" && Array.from) {
            list = Array.from(protocols);
        } else {
            list = [protocols];
        }
        for (i = 0; i < list.length; i++) {
            p = String(list[i]);
            if (!/^[!#$%&'*+\-.\^_`|~0-9A-Za-z]+$/.test(p)) {
                throw makeError("SyntaxError", "Failed to construct 'WebSocket': The subprotocol '" + p +
                    "' is invalid.");
            }
            if (hasOwn.call(seen, "$" + p)) {
                throw makeError("SyntaxError", "Failed to construct 'WebSocket': The subprotocol '" + p +
                    "' is duplicated.");
            }
            seen["$" + p] = true;
            copy.push(p);
        }
        return copy;
    }

    // WebIDL [Clamp] unsigned short: NaN -> 0, clamped to 0..65535, rounded half to even.
    function clampCode(code) {
        var x = Number(code);
        var f;
        if (isNaN(x)) {
            return 0;
        }
        x = Math.min(Math.max(x, 0), 65535);
        f = Math.floor(x);
        if (x - f > 0.5 || (x - f === 0.5 && f % 2 === 1)) {
            f += 1;
        }
        return f;
    }

    // ------------------------------------------------------------------ network verdicts

    // What this page has learned about its network, so that a later socket does not pay again for what
    // failed: "the native upgrade to this target fails" (a proxy refuses or swallows it; the relay then
    // carried the socket) and "streams from this router's relays are buffered" (a proxy held a stream
    // back past streamTimeout). Only failures are kept: a verdict says "skip this", until it expires;
    // then the next socket tries again (one socket pays once more: a refusal costs a few ms, a
    // swallowed upgrade nativeTimeout, a buffered stream streamTimeout), and a thing that works again
    // clears its verdict, so a network that heals goes back to native and streams. A thing that fails
    // again is skipped twice as long (VERDICT_RETRY_MS, doubling up to VERDICT_MAX_MS).
    //
    // The `remember` option: "session" (default) keeps verdicts in this page and in sessionStorage (the
    // tab's later pages start with them, for at most VERDICT_MAX_MS), "page" in this page only,
    // "none" nowhere (every socket tries everything). The clock is passed in (the Node unit tests
    // drive it); the store is sessionStorage where the browser lets the page use it, else none.

    var VERDICT_RETRY_MS = 30000;    // the first skip: long enough for a page's burst of sockets
    var VERDICT_MAX_MS = 600000;     // the longest skip, and how long a stored verdict can outlive its page
    var VERDICT_STORE_KEY = "polysocket.verdicts";

    var REMEMBER = { session: { page: true, stored: true }, page: { page: true, stored: false },
        none: { page: false, stored: false } };

    // A socket's `remember` option ("session" where it is not set).
    function rememberOf(opts) {
        return opts.remember || "session";
    }

    // key: the thing judged ("native " + router + " " + target origin, "streams " + router).
    function NetworkVerdicts(clock, store) {
        this.clock = clock;
        this.store = store;
        this.failures = {};   // key -> {at: ms of the last failure, n: failures in a row}
        this.loaded = false;
    }

    // How long a verdict of n failures in a row is kept.
    NetworkVerdicts.prototype.skipFor = function (n) {
        return Math.min(VERDICT_RETRY_MS * Math.pow(2, Math.max(0, n - 1)), VERDICT_MAX_MS);
    };

    // True while `key` failed recently: the socket should not try it.
    NetworkVerdicts.prototype.skips = function (key, remember) {
        var f;
        if (!REMEMBER[remember] || !REMEMBER[remember].page) {
            return false;
        }
        if (REMEMBER[remember].stored) {
            this.load();
        }
        f = this.failures[key];
        return !!f && this.clock() - f.at < this.skipFor(f.n);
    };

    NetworkVerdicts.prototype.failed = function (key, remember) {
        var f = this.failures[key];
        if (!REMEMBER[remember] || !REMEMBER[remember].page) {
            return;
        }
        this.failures[key] = { at: this.clock(), n: f ? f.n + 1 : 1 };
        this.save(remember);
    };

    NetworkVerdicts.prototype.worked = function (key, remember) {
        if (!REMEMBER[remember] || !REMEMBER[remember].page || !hasOwn.call(this.failures, key)) {
            return;
        }
        delete this.failures[key];
        this.save(remember);
    };

    // Verdicts of earlier pages of this tab, once (a failure this page saw first wins).
    NetworkVerdicts.prototype.load = function () {
        var stored;
        var k;
        if (this.loaded || !this.store) {
            return;
        }
        this.loaded = true;
        // Another script of the page can write there: read it as data only (no eval fallback).
        if (typeof JSON === "undefined" || typeof JSON.parse !== "function") {
            return;
        }
        try {
            stored = JSON.parse(this.store.getItem(VERDICT_STORE_KEY) || "{}");
        } catch (e) {
            return;
        }
        if (!stored || typeof stored !== "object") {
            return;
        }
        for (k in stored) {
            if (hasOwn.call(stored, k) && !hasOwn.call(this.failures, k) && stored[k] &&
                    typeof stored[k].at === "number" && stored[k].at <= this.clock() &&
                    typeof stored[k].n === "number" && stored[k].n >= 1) {
                this.failures[k] = { at: stored[k].at, n: stored[k].n };
            }
        }
    };

    // Writes the verdicts still worth keeping (expired ones are dropped: their next try decides).
    NetworkVerdicts.prototype.save = function (remember) {
        var keep = [];
        var t = this.clock();
        var k;
        var f;
        if (!this.store || !REMEMBER[remember].stored) {
            return;
        }
        this.load();
        for (k in this.failures) {
            if (hasOwn.call(this.failures, k)) {
                f = this.failures[k];
                if (t - f.at < this.skipFor(f.n)) {
                    keep.push(jsonString(k) + ":{\"at\":" + f.at + ",\"n\":" + f.n + "}");
                }
            }
        }
        try {
            this.store.setItem(VERDICT_STORE_KEY, "{" + keep.join(",") + "}");
        } catch (e) {}  // full, or storage refused: the page memory still has them
    };

    // sessionStorage where the page may use it (it throws where storage is blocked; old IE has none).
    function sessionStore() {
        try {
            if (win && win.sessionStorage && typeof win.sessionStorage.getItem === "function") {
                win.sessionStorage.getItem(VERDICT_STORE_KEY);
                return win.sessionStorage;
            }
        } catch (e) {}
        return null;
    }

    function nativeVerdictKey(router, targetUrl) {
        var m = /^(wss?:\/\/[^\/?#]*)/i.exec(targetUrl);
        return "native " + routerKey(router) + " " + (m ? m[1].toLowerCase() : targetUrl);
    }

    function streamsVerdictKey(router) {
        return "streams " + routerKey(router);
    }

    function routerKey(router) {
        return String(router || "").replace(/\/+$/, "").toLowerCase();
    }

    var networkVerdicts = new NetworkVerdicts(now, sessionStore());

    // ------------------------------------------------------------------ events

    // Events for browsers that cannot construct them: the same fields and methods, and
    // `new e.constructor(e.type, e)` works as with the real ones.
    var EVENT_FIELDS = {
        Event: {},
        MessageEvent: { data: null, origin: "", lastEventId: "", source: null, ports: [] },
        CloseEvent: { wasClean: false, code: 0, reason: "" }
    };

    function makeEventClass(kind) {
        function FallbackEvent(type, init) {
            var fields = EVENT_FIELDS[kind];
            var k;
            if (arguments.length < 1) {
                throw new TypeError("Failed to construct '" + kind + "': 1 argument required, but only 0 present.");
            }
            init = init || {};
            this.type = String(type);
            this.bubbles = !!init.bubbles;
            this.cancelable = !!init.cancelable;
            this.composed = !!init.composed;
            this.defaultPrevented = false;
            this.returnValue = true;
            this.cancelBubble = false;
            this.isTrusted = false;
            this.timeStamp = now();
            this.target = null;
            this.currentTarget = null;
            this.srcElement = null;
            this.eventPhase = 0;
            for (k in fields) {
                if (hasOwn.call(fields, k)) {
                    this[k] = init[k] === undefined ? fields[k] : init[k];
                }
            }
            if (kind === "CloseEvent") {
                this.code = clampCode(this.code);
                this.wasClean = !!this.wasClean;
                this.reason = String(this.reason);
            }
        }
        var p = FallbackEvent.prototype;
        p.NONE = 0;
        p.CAPTURING_PHASE = 1;
        p.AT_TARGET = 2;
        p.BUBBLING_PHASE = 3;
        p.preventDefault = function () {
            if (this.cancelable) {
                this.defaultPrevented = true;
                this.returnValue = false;
            }
        };
        p.stopPropagation = function () {
            this.cancelBubble = true;
        };
        p.stopImmediatePropagation = function () {
            this.cancelBubble = true;
            this._psStop = true;
        };
        p.composedPath = function () {
            return this.currentTarget ? [this.currentTarget] : [];
        };
        return FallbackEvent;
    }

    var FallbackEvents = {
        Event: makeEventClass("Event"),
        MessageEvent: makeEventClass("MessageEvent"),
        CloseEvent: makeEventClass("CloseEvent")
    };

    function createEvent(kind, type, init) {
        if (eventCtors[kind]) {
            try {
                return new eventCtors[kind](type, init);
            } catch (e) {}
        }
        return new FallbackEvents[kind](type, init);
    }

    // Our own dispatch (no constructible EventTarget): the DOM's rules for one target, i.e.
    // registration order, {once}, {capture} as part of a listener's identity, {signal}, listeners
    // removed during a dispatch are not called and listeners added during it wait for the next.
    function setField(ev, k, v) {
        if (ev instanceof FallbackEvents.Event || ev instanceof FallbackEvents.MessageEvent ||
                ev instanceof FallbackEvents.CloseEvent) {
            ev[k] = v;
            return;
        }
        try {
            Object.defineProperty(ev, k, { value: v, configurable: true, writable: true });
        } catch (e) {
            ev[k] = v;
        }
    }

    function captureOf(options) {
        if (options && typeof options === "object") {
            return !!options.capture;
        }
        return !!options;
    }

    function fallbackAdd(target, type, callback, options) {
        var lists = target._psListeners || (target._psListeners = {});
        var key = "$" + type;
        var list = lists[key] || (lists[key] = []);
        var capture = captureOf(options);
        var once = !!(options && typeof options === "object" && options.once);
        var signal = options && typeof options === "object" ? options.signal : null;
        var i;
        var entry;
        if (callback === null || callback === undefined) {
            return;
        }
        if (signal && signal.aborted) {
            return;
        }
        for (i = 0; i < list.length; i++) {
            if (list[i].callback === callback && list[i].capture === capture) {
                return;
            }
        }
        entry = { callback: callback, capture: capture, once: once, removed: false };
        lists[key] = list.concat([entry]); // copy on write: a dispatch in progress keeps its list
        if (signal && typeof signal.addEventListener === "function") {
            signal.addEventListener("abort", function () {
                fallbackRemove(target, type, callback, capture);
            });
        }
    }

    function fallbackRemove(target, type, callback, options) {
        var lists = target._psListeners;
        var key = "$" + type;
        var list = lists && lists[key];
        var capture = captureOf(options);
        var i;
        if (!list) {
            return;
        }
        for (i = 0; i < list.length; i++) {
            if (list[i].callback === callback && list[i].capture === capture) {
                list[i].removed = true;
                lists[key] = list.slice(0, i).concat(list.slice(i + 1));
                return;
            }
        }
    }

    function fallbackDispatch(target, ev) {
        var lists = target._psListeners;
        var list = (lists && lists["$" + ev.type]) || [];
        var i;
        var entry;
        var cb;
        var stopped = false;
        var ownStop = ev.stopImmediatePropagation;
        if (ev._psDispatching) {
            throw makeError("InvalidStateError", "Failed to execute 'dispatchEvent' on 'EventTarget': " +
                "The event is already being dispatched.");
        }
        setField(ev, "_psDispatching", true);
        setField(ev, "target", target);
        setField(ev, "srcElement", target);
        setField(ev, "currentTarget", target);
        setField(ev, "eventPhase", 2);
        setField(ev, "stopImmediatePropagation", function () {
            stopped = true;
            if (typeof ownStop === "function") {
                ownStop.call(ev);
            }
        });
        // IE8 and older have no accessors: on<type> is a plain property, called before listeners.
        if (!hasGetters) {
            cb = target["on" + ev.type];
            if (typeof cb === "function") {
                try {
                    if (cb.call(target, ev) === false && ev.cancelable) {
                        ev.preventDefault();
                    }
                } catch (e0) {
                    reportError(e0);
                }
            }
        }
        for (i = 0; i < list.length && !stopped; i++) {
            entry = list[i];
            if (entry.removed) {
                continue;
            }
            if (entry.once) {
                fallbackRemove(target, ev.type, entry.callback, entry.capture);
            }
            cb = entry.callback;
            try {
                if (typeof cb === "function") {
                    cb.call(target, ev);
                } else if (cb && typeof cb.handleEvent === "function") {
                    cb.handleEvent(ev);
                }
            } catch (e) {
                reportError(e);
            }
        }
        setField(ev, "currentTarget", null);
        setField(ev, "eventPhase", 0);
        setField(ev, "stopImmediatePropagation", ownStop);
        setField(ev, "_psDispatching", false);
        return !ev.defaultPrevented;
    }

    var etAdd = NativeEventTarget ? NativeEventTarget.prototype.addEventListener : null;
    var etRemove = NativeEventTarget ? NativeEventTarget.prototype.removeEventListener : null;
    var etDispatch = NativeEventTarget ? NativeEventTarget.prototype.dispatchEvent : null;

    function addInternal(target, type, fn) {
        if (etAdd) {
            etAdd.call(target, type, fn);
        } else {
            fallbackAdd(target, type, fn, false);
        }
    }

    function removeInternal(target, type, fn) {
        if (etRemove) {
            etRemove.call(target, type, fn);
        } else {
            fallbackRemove(target, type, fn, false);
        }
    }

    function dispatchInternal(target, ev) {
        if (etDispatch) {
            etDispatch.call(target, ev);
        } else {
            fallbackDispatch(target, ev);
        }
    }

    // on<type> as the HTML event handler attributes: a listener registered where the handler is
    // first set, kept in place while it changes, removed when it is set to null. Non-objects
    // become null ([LegacyTreatNonObjectAsNull]); returning false cancels a cancelable event.
    function setHandler(sock, type, value) {
        var slots = sock._psHandlers || (sock._psHandlers = {});
        var slot = slots[type] || (slots[type] = { value: null, wrapper: null });
        if (value === undefined || (typeof value !== "function" && (typeof value !== "object" || value === null))) {
            value = null;
        }
        slot.value = value;
        if (value === null) {
            if (slot.wrapper) {
                removeInternal(sock, type, slot.wrapper);
                slot.wrapper = null;
            }
            return;
        }
        if (!slot.wrapper) {
            slot.wrapper = function (ev) {
                var h = slot.value;
                if (typeof h === "function" && h.call(sock, ev) === false && ev.cancelable) {
                    ev.preventDefault();
                }
            };
            addInternal(sock, type, slot.wrapper);
        }
    }

    function getHandler(sock, type) {
        var slot = sock._psHandlers && sock._psHandlers[type];
        return slot ? slot.value : null;
    }

    // ------------------------------------------------------------------ request functions

    var cbRegistry = (win && win.PolySocket && win.PolySocket._cb) || {};
    // Digits only: random letters in a URL can spell what ad filters block (docs/client.md, relay host names).
    var cbPrefix = "c" + Math.floor(Math.random() * 1e6);
    var cbCounter = 0;

    // JSONP: one script tag per request; result(err, data). err is {error, message} for transport
    // failures (error "network" or "timeout"). rawQuery: more of the query, already encoded.
    function jsonpRequest(url, params, timeoutMs, result, rawQuery) {
        var name = cbPrefix + "_" + (cbCounter++);
        var head = doc.getElementsByTagName("head")[0] || doc.documentElement;
        var script = doc.createElement("script");
        var done = false;
        var timer = null;
        var q = buildQuery(params);
        if (rawQuery) {
            q = q ? q + "&" + rawQuery : rawQuery;
        }

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

    // ------------------------------------------------------------------ streams (text/event-stream)

    // An incremental text/event-stream reader: feed() it text as it arrives, in pieces cut anywhere;
    // onEvent(data, id) runs for each complete event, onComment(text) for each comment line.
    function SseParser(onEvent, onComment) {
        this.rest = "";     // the incomplete last line
        this.data = null;   // data lines of the event being read
        this.id = "";
        this.onEvent = onEvent;
        this.onComment = onComment;
    }

    SseParser.prototype.feed = function (text) {
        var s = this.rest + text;
        var start = 0;
        var nl;
        var line;
        var colon;
        var field;
        var value;
        var data;
        while ((nl = s.indexOf("\n", start)) >= 0) {
            line = s.substring(start, nl);
            start = nl + 1;
            if (line.charAt(line.length - 1) === "\r") {
                line = line.substring(0, line.length - 1);
            }
            if (line === "") {
                data = this.data;
                this.data = null;
                if (data !== null) {
                    this.onEvent(data, this.id);
                }
                continue;
            }
            colon = line.indexOf(":");
            if (colon === 0) {
                this.onComment(line.substring(1));
                continue;
            }
            field = colon < 0 ? line : line.substring(0, colon);
            value = colon < 0 ? "" : line.substring(colon + 1);
            if (value.charAt(0) === " ") {
                value = value.substring(1);
            }
            if (field === "data") {
                this.data = this.data === null ? value : this.data + "\n" + value;
            } else if (field === "id") {
                this.id = value;
            }
        }
        this.rest = s.substring(start);
    };

    // xhr-streaming: a GET whose body is read as it arrives (readyState 3 and progress events).
    // onText(new text) for each piece of a 200 text/event-stream answer; onEnd() once, when the
    // answer ends or fails (an error answer's body is never passed on).
    function xhrStream(url, params, onText, onEnd) {
        var xhr = new win.XMLHttpRequest();
        var seen = 0;
        var done = false;
        var ok = null;

        function end() {
            if (!done) {
                done = true;
                xhr.onreadystatechange = xhr.onprogress = noop;
                onEnd();
            }
        }

        function pump() {
            var rs = xhr.readyState;
            var text;
            var from;
            if (done || rs < 2) {
                return;
            }
            if (ok === null) {
                ok = xhr.status === 200 && /^text\/event-stream/i.test(xhr.getResponseHeader("Content-Type") || "");
            }
            if (ok && rs >= 3) {
                text = xhr.responseText || "";
                if (text.length > seen) {
                    from = seen;
                    seen = text.length;
                    onText(text.substring(from));
                }
            }
            if (rs === 4 || !ok) {
                end();
                if (rs !== 4) {
                    try {
                        xhr.abort();
                    } catch (e) {}
                }
            }
        }

        try {
            xhr.open("GET", url + "?" + buildQuery(params), true);
            xhr.onreadystatechange = pump;
            xhr.onprogress = pump;
            xhr.send(null);
        } catch (eOpen) {
            later(end, 0);
        }
        return {
            abort: function () {
                if (!done) {
                    done = true;
                    xhr.onreadystatechange = xhr.onprogress = noop;
                    try {
                        xhr.abort();
                    } catch (e) {}
                }
            }
        };
    }

    // EventSource: onOpen() when the answer starts, onData(data) for each event, onEnd() once when
    // the stream ends or fails (it never reconnects by itself: the relay transport decides).
    function eventSourceStream(url, params, onOpen, onData, onEnd) {
        var es;
        var done = false;
        try {
            es = new NativeEventSource(url + "?" + buildQuery(params));
        } catch (e) {
            later(onEnd, 0);
            return { abort: noop };
        }
        es.onopen = function () {
            if (!done) {
                onOpen();
            }
        };
        es.onmessage = function (ev) {
            if (!done) {
                onData(ev.data);
            }
        };
        es.onerror = function () {
            if (!done) {
                done = true;
                es.close();
                onEnd();
            }
        };
        return {
            abort: function () {
                if (!done) {
                    done = true;
                    es.close();
                }
            }
        };
    }

    // ------------------------------------------------------------------ transports
    //
    // One object per way of reaching the target, tried in TRANSPORTS order (filtered by the
    // `transport` option): the browser's own WebSocket first, then the relay over CORS XHR, then over
    // JSONP. Each says whether this browser has it (`usable`) and starts it for a socket (`start`,
    // false: it could not, try the next); the socket then holds what it started as its carrier
    // (a NativeCarrier or a Relay: send, close, abandon, stop, buffered). A relay transport also says
    // how a request travels (`request`), how a message is cut into frames (`split`) and how many
    // pending frames the next send request carries and how it is sent (`sendFrames`). A transport can
    // hand the socket to the next one before it opens (native: the upgrade failed; XHR: CORS failed).

    // A frame: {seq, t: "t"|"b", fin: 0|1, d: text or base64 string, raw: Uint8Array (XHR binary
    // chunks), size: bytes of the message it completes (0 for fin=0)}. In a batch a frame is
    // [seq, t, fin, d] (docs/protocol.md).
    function frameJson(f) {
        var d = f.d;
        if (d === undefined) {
            f.d = d = base64Encode(f.raw);
        }
        return "[" + f.seq + "," + (f.t === "b" ? "\"b\"" : "\"t\"") + "," + f.fin + "," + jsonString(d) + "]";
    }

    var NATIVE = {
        name: "websocket",
        usable: function () {
            return !!NativeWebSocket;
        },
        start: function (sock, mayFallBack) {
            return startNative(sock, mayFallBack);
        }
    };

    var XHR = {
        name: "xhr",
        streams: true,  // can receive by /stream (EventSource or xhr-streaming): see RECEIVERS
        usable: function () {
            return PolySocket.supports.xhr;
        },
        start: function (sock) {
            return startRelay(sock, XHR);
        },
        request: function (url, params, timeoutMs, result, body, contentType) {
            return xhrRequest(url, params, timeoutMs, result, body, contentType);
        },
        pollTtl: function (relay) {
            return relay.ttl;
        },
        split: function (relay, item) {
            var chunks = [];
            var i;
            var n;
            var pieces;
            var max = relay.opts.maxBody;
            if (item.kind === "t") {
                pieces = splitText(item.text, max, charBytes);
                for (i = 0; i < pieces.length; i++) {
                    chunks.push({ t: "t", d: pieces[i] });
                }
            } else {
                n = item.bytes.length;
                for (i = 0; i < n || i === 0; i += max) {
                    if (item.bytes.subarray) {
                        chunks.push({ t: "b", raw: item.bytes.subarray(i, Math.min(n, i + max)) });
                    } else {
                        chunks.push({ t: "b", d: base64Encode(item.bytes.slice(i, i + max)) });
                    }
                }
            }
            return chunks;
        },
        // A frame with a large binary body goes alone, as raw bytes; other frames go together as
        // one JSON batch of at most maxBody bytes.
        sendFrames: function (relay, frames, answered) {
            var first = frames[0];
            var parts = [];
            var used = 2;
            var cost;
            var i;
            if (!(first.raw && first.raw.length > 1024) && relay.opts.maxBatch > 1 && frames.length > 1) {
                for (i = 0; i < frames.length && i < relay.opts.maxBatch; i++) {
                    if (frames[i].raw && frames[i].raw.length > 1024) {
                        break;
                    }
                    cost = utf8Length(frameJson(frames[i])) + 1;
                    if (i > 0 && used + cost > relay.opts.maxBody) {
                        break;
                    }
                    parts.push(frameJson(frames[i]));
                    used += cost;
                }
            }
            if (parts.length > 1) {
                relay.request(relay.base + "/send", { socket: relay.id, batch: 1, ack: relay.sendAck() },
                    relay.opts.sendTimeout,
                    answered, "[" + parts.join(",") + "]", "text/plain;charset=UTF-8");
                return parts.length;
            }
            var params = { socket: relay.id, seq: first.seq, t: first.t, fin: first.fin, ack: relay.sendAck() };
            if (first.raw) {
                relay.request(relay.base + "/send", params, relay.opts.sendTimeout, answered, first.raw,
                    "application/octet-stream");
            } else {
                relay.request(relay.base + "/send", params, relay.opts.sendTimeout, answered, first.d,
                    "text/plain;charset=UTF-8");
            }
            return 1;
        }
    };

    function jsonpUrlOverhead(relay) {
        return (relay.base + "/send").length + "?cb=PolySocket._cb.".length + cbPrefix.length + 12 +
            "&socket=".length + relay.id.length + URL_SLACK;
    }

    // Before the page's load event, a long-polling script would hold that event back for as long
    // as it waits: poll without waiting (and a little apart) until the page has loaded.
    function pageLoading() {
        return !!(doc && doc.readyState && doc.readyState !== "complete");
    }

    var JSONP = {
        name: "jsonp",
        usable: function () {
            return PolySocket.supports.jsonp;
        },
        start: function (sock) {
            return startRelay(sock, JSONP);
        },
        request: function (url, params, timeoutMs, result, body, contentType, query) {
            return jsonpRequest(url, params, timeoutMs, result, query);
        },
        pollTtl: function (relay) {
            return pageLoading() ? 0 : relay.ttl;
        },
        pollGap: function () {
            return pageLoading() ? PRELOAD_POLL_GAP : 0;
        },
        split: function (relay, item) {
            var chunks = [];
            var budget = relay.opts.maxUrl - jsonpUrlOverhead(relay) - "&seq=&t=t&fin=0&d=".length;
            var pieces;
            var i;
            if (item.kind === "t") {
                pieces = splitText(item.text, budget, urlCost);
            } else {
                pieces = splitBase64(base64Encode(item.bytes), budget);
            }
            for (i = 0; i < pieces.length; i++) {
                chunks.push({ t: item.kind, d: pieces[i] });
            }
            return chunks;
        },
        // As many frames as fit in one URL go together as a `batch` parameter; a frame that fills
        // a URL alone goes in the single-frame form.
        sendFrames: function (relay, frames, answered) {
            var budget = relay.opts.maxUrl - jsonpUrlOverhead(relay) - "&batch=%5B%5D".length;
            var parts = [];
            var used = 0;
            var part;
            var cost;
            var i;
            for (i = 0; i < frames.length && i < relay.opts.maxBatch; i++) {
                part = enc(frameJson(frames[i]));
                cost = part.length + (i > 0 ? 3 : 0);
                if (used + cost > budget) {
                    break;
                }
                parts.push(part);
                used += cost;
            }
            if (parts.length > 1) {
                // already encoded: join with an encoded comma, and skip buildQuery's encoding
                relay.request(relay.base + "/send", { socket: relay.id }, relay.opts.sendTimeout, answered,
                    undefined, undefined, "batch=%5B" + parts.join("%2C") + "%5D");
                return parts.length;
            }
            var first = frames[0];
            relay.request(relay.base + "/send", { socket: relay.id, seq: first.seq, t: first.t, fin: first.fin,
                d: first.d }, relay.opts.sendTimeout, answered);
            return 1;
        }
    };

    var TRANSPORTS = [NATIVE, XHR, JSONP];

    var MODES = {
        auto: TRANSPORTS,
        websocket: [NATIVE],
        relay: [XHR, JSONP],
        xhr: [XHR],
        jsonp: [JSONP]
    };

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

    // -------------- receiving

    // The first receiver the `receive` option lists that this transport and browser can use.
    Relay.prototype.chooseReceive = function () {
        this.receiver = chooseReceiver(this);
        if (this.receiver.kind === "stream" &&
                networkVerdicts.skips(streamsVerdictKey(this.router), rememberOf(this.opts))) {
            this.receiver = POLL_RECEIVER;  // streams were buffered on this network lately
        }
        put(this.socket, "receiving", this.receiver.kind);
    };

    // The ack a send carries (undefined: none), where the receiver wants sends to carry it.
    Relay.prototype.sendAck = function () {
        if (!this.receiver.acksBySend || this.lastSeq < 0) {
            return undefined;
        }
        this.unacked = 0;
        return this.lastSeq;
    };

    // For the rest of the socket's life: a buffering proxy (no first byte in time), or an error that
    // only a poll's answer shows (EventSource sees an error answer as a bare error event).
    Relay.prototype.fallBack = function () {
        this.dropStream();
        this.receiver = POLL_RECEIVER;
        put(this.socket, "receiving", POLL_RECEIVER.kind);
        POLL_RECEIVER.start(this);
    };

    // One GET /stream at a time. Its timer: before the first byte, streamTimeout (then fall back);
    // after it, the receiver's quiet limit. A stream that is no longer the socket's receiver (it fell
    // back to polling meanwhile) is not reopened.
    Relay.prototype.openStream = function (receiver) {
        var self = this;
        var st = { receiver: receiver, got: false, beats: 0, timer: null, handle: null, done: false, last: now() };
        var url = this.base + "/stream";
        var params = { socket: this.id, ack: this.lastSeq, ttl: this.ttl };
        if (this.state === RelayState.STOPPED || this.stream || this.receiver !== receiver) {
            return;
        }
        this.stream = st;
        this.unacked = 0;

        // One timer, not one per message: it checks the time since the stream's last byte
        // (st.last) against the limit that applies now, and re-arms itself for the rest.
        function check() {
            var limit = { why: "timeout", ms: self.opts.streamTimeout };
            var quiet = now() - st.last;
            st.timer = null;
            if (st.done) {
                return;
            }
            if (st.got) {
                limit = receiver.quiet(self);
            }
            if (quiet >= limit.ms) {
                self.endStream(st, limit.why);
            } else {
                st.timer = later(check, limit.ms - quiet);
            }
        }

        // beat: a message or a heartbeat (not the stream's opening)
        function bytes(beat) {
            if (st.done) {
                return;
            }
            st.got = true;
            self.reached = true;
            if (!self.streamWorked) {
                networkVerdicts.worked(streamsVerdictKey(self.router), rememberOf(self.opts));
            }
            self.streamWorked = true;
            self.streamFailed = 0;
            if (beat) {
                st.beats++;
                self.streamSilent = 0;
            }
            st.last = now();
            self.alive();
        }

        function message(text) {
            var m = null;
            if (st.done) {
                return;
            }
            bytes(true);
            try {
                m = parseJson(text);
            } catch (e) {}
            if (m && typeof m === "object") {
                self.deliver([m]);
            }
            // Nothing sent meanwhile carried an ack: renew the stream, whose request carries it,
            // before the relay's back-pressure bound stops the flow (--buffer-bytes, 1 MiB by default).
            self.unacked += text.length;
            if (self.unacked > STREAM_ACK_CHARS) {
                self.endStream(st, "ack");
            }
        }

        function ended() {
            self.endStream(st, "end");
        }

        st.timer = later(check, Math.min(this.opts.streamTimeout, this.ttl));
        st.handle = receiver.open(url, params, { bytes: bytes, message: message, ended: ended });
    };

    Relay.prototype.dropStream = function () {
        var st = this.stream;
        if (!st) {
            return;
        }
        this.stream = null;
        st.done = true;
        if (st.timer !== null) {
            clearTimeout(st.timer);
            st.timer = null;
        }
        if (st.handle) {
            st.handle.abort();
        }
    };

    // A stream ended (why: "end" by the relay or the network, "timeout" before its first byte,
    // "silent", "renew", "ack"). Resumed with a new stream whose ack is the highest seq processed: the relay
    // sends again every message not acknowledged, and deliver() drops those already seen.
    Relay.prototype.endStream = function (st, why) {
        var self = this;
        var delay = 0;
        if (st.done || this.stream !== st) {
            return;
        }
        this.dropStream();
        if (this.state === RelayState.STOPPED) {
            return;
        }
        if (!st.got) {
            // No first byte in time: a buffering proxy. Failed before it: no stream path (or an
            // error answer), unless streams worked before (a blip, or the relay going away: a few
            // tries, then the polls show what it is).
            if (why === "timeout" && !this.streamWorked) {
                // held back whole, if a poll gets through (else the relay host is what fails)
                this.streamHeldBack = true;
            }
            if (why === "timeout" || !this.streamWorked || ++this.streamFailed >= 3) {
                this.fallBack();
                return;
            }
            later(function () {
                self.openStream(st.receiver);
            }, 100 * Math.pow(2, this.streamFailed - 1));
            return;
        }
        if (why === "silent" && ++this.streamSilent >= 2) {
            this.fallBack();
            return;
        }
        if (why === "end" && !st.beats) {
            // ended with nothing but its opening: do not spin if that keeps happening
            this.streamEmpty++;
            delay = this.streamEmpty > 1 ? Math.min(100 * Math.pow(2, this.streamEmpty - 2), 5000) : 0;
        } else {
            this.streamEmpty = 0;
        }
        if (delay) {
            later(function () {
                self.openStream(st.receiver);
            }, delay);
        } else {
            this.openStream(st.receiver);
        }
    };

    // Until the relay host has answered once, a poll is a probe: answered at once (ttl 0) and given
    // sendTimeout, as one request; if it fails, the host is unreachable (a filter refuses its name) and
    // the socket ends.
    Relay.prototype.poll = function () {
        var self = this;
        var probe = !this.reached;
        var ttl = probe ? 0 : this.transport.pollTtl(this);
        if (this.state === RelayState.STOPPED || this.polling) {
            return;
        }
        this.polling = true;
        this.request(this.base + "/poll", { socket: this.id, ttl: ttl, ack: this.lastSeq },
            probe ? this.opts.sendTimeout : ttl + this.opts.pollSlack, function (err, data) {
                self.polling = false;
                if (err && !self.reached) {
                    self.unreachable("a poll", err);
                    return;
                }
                if (err) {
                    self.pollFailed();
                    return;
                }
                if (!data.ok) {
                    if (data.error === "unknown_socket" || data.error === "bad_request") {
                        self.gone(data.error + ": " + data.message);
                    } else {
                        self.pollFailed();
                    }
                    return;
                }
                self.pollFailures = 0;
                if (self.streamHeldBack) {
                    // a poll passes where the stream did not: later sockets of this router poll from the start
                    self.streamHeldBack = false;
                    networkVerdicts.failed(streamsVerdictKey(self.router), rememberOf(self.opts));
                }
                self.deliver(data.messages || []);
                if (self.state !== RelayState.STOPPED) {
                    var gap = self.transport.pollGap ? self.transport.pollGap() : 0;
                    if (gap) {
                        later(function () { self.poll(); }, gap);
                    } else {
                        self.poll();
                    }
                }
            });
    };

    // Retried with backoff until the relay answers again or the idle watchdog gives up.
    Relay.prototype.pollFailed = function () {
        var self = this;
        this.pollFailures++;
        later(function () {
            self.poll();
        }, Math.min(100 * Math.pow(2, this.pollFailures - 1), 5000));
    };

    // The relay host never answered and a request there failed: the network refuses that name (a
    // filter) or cannot reach it. Nothing comes of retrying: the socket is lost at once (close 1006)
    // instead of after the idle timeout, and a close() waiting on it ends with it.
    Relay.prototype.unreachable = function (what, err) {
        this.gone("the relay host " + this.base + " did not answer " + what + " (" +
            (err ? err.error + ": " + err.message : "no answer") + ")");
    };

    // The relay no longer has the socket (or cannot be reached): the connection is lost.
    Relay.prototype.gone = function (message) {
        this.stop();
        this.socket._lost(message);
    };

    Relay.prototype.deliver = function (messages) {
        var sock = this.socket;
        var i;
        var m;
        for (i = 0; i < messages.length; i++) {
            m = messages[i];
            if (this.state === RelayState.STOPPED) {
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
            if (sock._readyState !== OPEN) {
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
        var ack = { socket: this.id, ttl: 0, ack: this.lastSeq };
        this.stop();
        // Acknowledge the close so the relay frees the socket at once; the answer does not matter.
        this.transport.request(this.base + "/poll", ack, this.opts.sendTimeout, noop);
        code = typeof code === "number" ? code : CLOSE_NO_STATUS;
        // 1006: the target's connection ended without a closing handshake; a browser fires close alone.
        this.socket._closed(code, reason || "", code !== CLOSE_ABNORMAL, false);
    };

    // -------------- sending

    // OPEN and CLOSING send; other states send nothing (more).
    Relay.prototype.sending = function () {
        return this.state === RelayState.OPEN || this.state === RelayState.CLOSING;
    };

    Relay.prototype.send = function (item) {
        this.socket._addBuffered(item.size);
        this.queue.push(item);
        this.pump();
    };

    // A reason without a code is sent with 1000; neither: a close frame with no status.
    Relay.prototype.close = function (code, reason) {
        this.closeReq = { code: code === undefined && reason !== undefined ? 1000 : code, reason: reason || "" };
        this.enter(RelayState.CLOSING);
        this.pump();
    };

    // Cut queued messages into frames (assigning seqs in order) and start send requests while there
    // are free slots. While requests are in flight, what queues up leaves together in the next
    // one. A Blob is read first; later messages wait for it, to keep the order.
    Relay.prototype.pump = function () {
        var item;
        var frames;
        var n;
        var oldest;
        if (this.state === RelayState.STOPPED) {
            return;
        }
        while (this.inflight.length < this.opts.maxInflight && this.sending()) {
            while (this.queue.length && !this.reading && this.pending.length < this.opts.maxBatch) {
                item = this.queue[0];
                if (item.blob) {
                    this.readBlob(item);
                    break;
                }
                this.queue.shift();
                this.cut(item);
            }
            if (!this.pending.length) {
                break;
            }
            // Keep the seqs in flight within what the relay holds ahead of a missing one.
            oldest = this.pending[0].seq;
            for (n = 0; n < this.inflight.length; n++) {
                oldest = Math.min(oldest, this.inflight[n].frames[0].seq);
            }
            frames = [];
            for (n = 0; n < this.pending.length && this.pending[n].seq - oldest < MAX_SEQ_SPAN; n++) {
                frames.push(this.pending[n]);
            }
            if (!frames.length) {
                break;
            }
            this.start({ frames: frames, attempts: 0, count: 0 });
        }
        if (this.closeReq && (this.state === RelayState.REFUSED || (this.state === RelayState.CLOSING &&
                !this.queue.length && !this.pending.length && !this.inflight.length && !this.reading))) {
            this.enter(RelayState.CLOSE_SENT);
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
            self.stop();
            // As a browser that cannot read a Blob it was given: fail the connection.
            self.socket._fail("could not read a Blob to send");
        };
        reader.readAsArrayBuffer(item.blob);
    };

    Relay.prototype.cut = function (item) {
        var chunks = this.transport.split(this, item);
        var i;
        for (i = 0; i < chunks.length; i++) {
            chunks[i].seq = this.nextSeq++;
            chunks[i].fin = i === chunks.length - 1 ? 1 : 0;
            chunks[i].size = chunks[i].fin ? item.size : 0;
            this.pending.push(chunks[i]);
        }
    };

    // One send request: req.frames are candidates; the transport takes the first req.count of
    // them (decided once: a retry carries exactly the same frames, so the relay drops what it
    // already has).
    Relay.prototype.start = function (req) {
        var self = this;
        var i;
        var k;
        this.inflight.push(req);
        req.attempts++;
        function answered(err, data) {
            if (err && !self.reached) {
                self.unreachable("a send", err);
                return;
            }
            if (err) {
                if (req.attempts >= MAX_SEND_ATTEMPTS) {
                    self.gone("send failed: " + err.message);
                    return;
                }
                // Retry with the same seqs: the relay drops what got through the first time.
                later(function () {
                    if (self.sending()) {
                        self.removeInflight(req);
                        self.start(req);
                    }
                }, Math.min(200 * Math.pow(2, req.attempts - 1), 4000));
                return;
            }
            self.removeInflight(req);
            if (!data.ok) {
                self.sendRefused(data);
                return;
            }
            for (k = 0; k < req.count; k++) {
                if (req.frames[k].size) {
                    self.socket._addBuffered(-req.frames[k].size);
                }
            }
            self.pump();
        }
        if (req.attempts === 1) {
            req.count = this.transport.sendFrames(this, req.frames, answered);
            req.frames = req.frames.slice(0, req.count);
            for (i = 0; i < req.count; i++) {
                this.pending.shift();
            }
        } else {
            this.transport.sendFrames(this, req.frames, answered);
        }
    };

    Relay.prototype.removeInflight = function (req) {
        var i;
        for (i = 0; i < this.inflight.length; i++) {
            if (this.inflight[i] === req) {
                this.inflight.splice(i, 1);
                return;
            }
        }
    };

    // The relay refused a send: the socket is closing or failed. The final close arrives by the receiver.
    Relay.prototype.sendRefused = function (data) {
        this.enter(RelayState.REFUSED);
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
        var params = { socket: this.id };
        if (this.closeReq.code !== undefined) {
            params.code = this.closeReq.code;
            params.reason = this.closeReq.reason;
        }
        this.request(this.base + "/close", params, this.opts.sendTimeout, function (err, data) {
            if (err && !self.reached) {
                self.unreachable("a close", err);
                return;
            }
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

    // The pure helpers, for the unit tests under Node (tests/client_units/, run by test_es3.py); not an API.
    PolySocket._util = {
        charBytes: charBytes, utf8Length: utf8Length, urlCost: urlCost, toUSV: toUSV,
        splitText: splitText, splitBase64: splitBase64, base64Encode: base64Encode,
        base64Decode: base64Decode, jsonString: jsonString, parseUrlByHand: parseUrlByHand,
        clampCode: clampCode, frameJson: frameJson, SseParser: SseParser
    };

    // The choices and the relay socket's lifecycle, for the unit tests under Node; not an API.
    PolySocket._internals = {
        TRANSPORTS: TRANSPORTS, RECEIVERS: RECEIVERS, RECEIVE_MODES: RECEIVE_MODES, chooseReceiver: chooseReceiver,
        RelayState: RelayState, RELAY_TRANSITIONS: RELAY_TRANSITIONS, Relay: Relay,
        NetworkVerdicts: NetworkVerdicts, networkVerdicts: networkVerdicts, nativeVerdictKey: nativeVerdictKey,
        streamsVerdictKey: streamsVerdictKey, VERDICT_RETRY_MS: VERDICT_RETRY_MS, VERDICT_MAX_MS: VERDICT_MAX_MS
    };

    PolySocket._autoInstall();

    return PolySocket;
}));
