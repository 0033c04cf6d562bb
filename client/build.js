#!/usr/bin/env node
// Builds the one delivered file, polysocket.js, from src/ and minifies it into polysocket.min.js.
//
// The parts are concatenated in PARTS order inside one closure (src/_head.js opens it, src/_tail.js
// closes it): no module loader at runtime, and each part sees the names the ones before it declare.
// Constants the relay must agree with come from src/relay-constants.json (tests/test_client_constants.py
// ties that file to polysocket_core) and are written where src/constants.js says `//@relay-constants`.
// Both outputs are committed; tests/test_es3.py rebuilds them and fails when they are stale.
// Usage: node build.js [outdir]   (default: this folder). The minified file stays ES3-parseable
// (ie8 mode keeps reserved-word properties quoted); check-es3.js checks both.
"use strict";
var fs = require("fs");
var path = require("path");
var terser = require("terser");

var dir = __dirname;
var src = path.join(dir, "src");
var outDir = process.argv[2] || dir;

// In dependency order: a part may use at load time only what an earlier part declared.
var PARTS = [
    "constants",   // version, ready states, limits (with the relay's, injected)
    "env",         // what this browser has (feature tests)
    "util",        // small helpers, UTF-8 / URL costs, base64, JSON, splitting
    "url",         // the WebSocket URL steps (WHATWG URL, by hand for IE)
    "verdict",     // what the page learned about its network: what later sockets skip, until when
    "events",      // events and listener dispatch where the browser cannot construct them
    "requests",    // one JSONP or CORS XHR request
    "streams",     // text/event-stream: parser, xhr-streaming, EventSource
    "transports",  // the ordered transport candidates: native, XHR, JSONP
    "receivers",   // the ordered receivers of a relay socket: EventSource, xhr-streaming, poll
    "socket",      // the WebSocket facade (PolySocket), install()
    "native",      // the native WebSocket candidate
    "relay",       // a socket carried by the relay: connect, lifecycle
    "receiving",   // a relay socket's receiving: streams (with their renewals and fallback) and polls
    "sending",     // a relay socket's sending: frames, batches, retries, close
    "exports"      // the helpers for the unit tests; auto-install
];

function read(name) {
    return fs.readFileSync(path.join(src, name), "utf8");
}

function relayConstants() {
    var values = JSON.parse(read("relay-constants.json"));
    return Object.keys(values).filter(function (k) { return k.charAt(0) !== "_"; }).map(function (k) {
        return "var " + k + " = " + JSON.stringify(values[k]) + ";";
    }).join("\n");
}

// A part's lines, indented one level as the closure's body (blank lines stay empty).
function indent(text) {
    return text.replace(/\n$/, "").split("\n").map(function (line) {
        return line ? "    " + line : line;
    }).join("\n") + "\n";
}

function build() {
    var body = PARTS.map(function (name) {
        var text = read(name + ".js").replace("//@relay-constants\n", function () {
            return relayConstants() + "\n";
        });
        return indent(text);
    });
    return read("_head.js") + "\n" + body.join("\n") + "\n" + read("_tail.js");
}

var code = build();
fs.writeFileSync(path.join(outDir, "polysocket.js"), code);
console.log("wrote " + path.join(outDir, "polysocket.js") + " (" + code.length + " bytes)");

terser.minify(code, {
    ecma: 5,
    ie8: true,
    compress: { passes: 2 },
    mangle: true,
    format: { comments: /^!/, ascii_only: true }
}).then(function (result) {
    var out = path.join(outDir, "polysocket.min.js");
    fs.writeFileSync(out, result.code + "\n");
    console.log("wrote " + out + " (" + result.code.length + " bytes)");
}, function (err) {
    console.error(err);
    process.exit(1);
});
