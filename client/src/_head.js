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
