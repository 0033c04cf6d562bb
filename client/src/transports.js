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
