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
