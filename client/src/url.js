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
