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
