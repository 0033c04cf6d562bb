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
