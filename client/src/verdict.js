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
