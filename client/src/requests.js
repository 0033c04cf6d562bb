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
