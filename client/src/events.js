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
