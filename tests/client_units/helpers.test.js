// Unit tests of polysocket.js's pure helpers under Node (run by tests/test_client_units.py):
// properties checked on seeded random inputs against Node's own Buffer, JSON and WHATWG URL.
"use strict";
const assert = require("assert");
const path = require("path");
const PS = require(path.join(__dirname, "..", "..", "client", "polysocket.js"));
const u = PS._util;

let seed = 12345;
function rand(n) { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; }
function pick(a) { return a[rand(a.length)]; }
const UNITS = ["a", "Z", "0", " ", "+", "/", "=", "&", "%", "~", "'", "\"", "\\", "\u0001", "\u007f", "é", "ß",
  "\u0800", "€", "日", "\uffff", "\ud83c\udf89", "\ud834\udd1e", "\ud800", "\udc00", "\u2028"];
function randomString(max) {
  let s = "";
  const n = rand(max);
  for (let i = 0; i < n; i++) s += pick(UNITS);
  return s;
}
let checks = 0;

// UTF-8 lengths: one rule, as Node encodes the USV string (lone surrogates as U+FFFD)
for (let k = 0; k < 3000; k++) {
  const s = randomString(40);
  const usv = u.toUSV(s);
  assert.strictEqual(usv, Buffer.from(s, "utf8").toString("utf8"), JSON.stringify(s));
  assert.strictEqual(u.utf8Length(usv), Buffer.byteLength(usv, "utf8"), JSON.stringify(s));
  assert.strictEqual(u.utf8Length(s), Buffer.byteLength(s, "utf8"), JSON.stringify(s));
  checks++;
}

// Splitting text for a URL budget or a body budget: the pieces join back, each fits, no pair split
for (let k = 0; k < 2000; k++) {
  const s = u.toUSV(randomString(200));
  const budget = 12 + rand(60);
  for (const [cost, size] of [[u.urlCost, (p) => encodeURIComponent(p).length], [u.charBytes, (p) => Buffer.byteLength(p)]]) {
    const pieces = u.splitText(s, budget, cost);
    assert.strictEqual(pieces.join(""), s);
    for (const p of pieces) {
      assert.ok(size(p) <= budget, JSON.stringify([p, budget]));
      assert.ok(!/^[\udc00-\udfff]|[\ud800-\udbff]$/.test(p), "a surrogate pair was split");
    }
    checks++;
  }
}

// base64 both ways, and splitting it on 4-character groups within a URL budget
for (let k = 0; k < 1000; k++) {
  const bytes = new Uint8Array(rand(300));
  for (let i = 0; i < bytes.length; i++) bytes[i] = rand(256);
  const b64 = u.base64Encode(bytes);
  assert.strictEqual(b64, Buffer.from(bytes).toString("base64"));
  assert.deepStrictEqual(Buffer.from(u.base64Decode(b64)), Buffer.from(bytes));
  const budget = 12 + rand(40);
  const pieces = u.splitBase64(b64, budget);
  assert.strictEqual(pieces.join(""), b64);
  pieces.slice(0, -1).forEach((p) => assert.strictEqual(p.length % 4, 0));
  pieces.forEach((p) => assert.ok(encodeURIComponent(p).length <= budget));
  checks++;
}

// JSON string literals (a batch frame's data) parse back to the string; frames are JSON arrays
for (let k = 0; k < 2000; k++) {
  const s = u.toUSV(randomString(50));
  assert.strictEqual(JSON.parse(u.jsonString(s)), s);
  const f = { seq: k, t: "t", fin: 1, d: s };
  assert.deepStrictEqual(JSON.parse(u.frameJson(f)), [k, "t", 1, s]);
  checks++;
}
assert.deepStrictEqual(JSON.parse(u.frameJson({ seq: 3, t: "b", fin: 0, raw: new Uint8Array([0, 1, 2]) })),
  [3, "b", 0, "AAEC"]);

// close codes: WebIDL [Clamp] unsigned short
assert.deepStrictEqual([NaN, -5, 0.5, 1.5, 2999.5, 3000.5, 4999.4, 70000, "3000", "x"].map(u.clampCode),
  [0, 0, 0, 2, 3000, 3000, 4999, 65535, 3000, 0]);

// The ES3 URL parser (for browsers without the URL API) against Node's WHATWG URL, on generated URLs
// with ASCII hosts that are not IPv4 shorthands nor compressible IPv6 (the documented exceptions).
const schemes = ["ws", "wss", "http", "https", "WS", "Https", "ftp"];
const seps = ["://", ":/", ":", ":///", ":\\\\", "://\\"];
const users = ["", "", "u@", "u:p@", "a b@", "x:@"];
const hosts = ["localhost", "LocalHost", "127.0.0.1", "[::1]", "ex-ample.com", "a.b.c", "", "a<b", "a%41"];
const ports = ["", "", ":80", ":443", ":0099", ":65535", ":65536", ":x", ":"];
const paths = ["", "/", "/a b", "/ü", "/a/../b", "/./c", "/%2e%2E/d", "/'\"<>`{}|^", "/a\\b", "/😀", "/..", "/a/.", "/%zz"];
const queries = ["", "", "?", "?x=1", "?'\"<>`{} ü", "?a?b"];
const frags = ["", "", "", "#", "#f"];
function whatwg(s) {
  let url;
  try { url = new URL(s); } catch (e) { return "SyntaxError"; }
  const scheme = url.protocol.slice(0, -1);
  if (!["ws", "wss", "http", "https"].includes(scheme)) return "SyntaxError";
  if (url.href.includes("#")) return "SyntaxError";
  // browsers (Chromium) also percent-encode | and ^ in paths, and so does polysocket.js
  url.pathname = url.pathname.replace(/\|/g, "%7C").replace(/\^/g, "%5E");
  return scheme.startsWith("http") ? (scheme === "http" ? "ws" : "wss") + url.href.slice(scheme.length) : url.href;
}
function ours(s) {
  try {
    const r = u.parseUrlByHand(s, true);
    return r.fragment ? "SyntaxError" : r.href;
  } catch (e) { return e.name; }
}
const mismatches = [];
for (let k = 0; k < 4000; k++) {
  const s = pick(schemes) + pick(seps) + pick(users) + pick(hosts) + pick(ports) + pick(paths) + pick(queries) + pick(frags);
  const want = whatwg(s);
  const got = ours(s);
  if (/^wss?:\/\/([^/]*@)?[^/]*xn--/.test(want)) continue;  // IDNA: documented, the browser's URL does it
  if (want !== got) mismatches.push({ s, want, got });
  checks++;
}
assert.deepStrictEqual(mismatches.slice(0, 10), []);

// The text/event-stream reader: a relay stream body cut into random pieces (anywhere, even inside
// a CRLF or a multi-byte character's UTF-16 pair) gives the same events and comments as read whole.
function sseRead(pieces) {
  const out = [];
  const p = new u.SseParser((data, id) => out.push(["event", data, id]), (text) => out.push(["comment", text]));
  for (const piece of pieces) p.feed(piece);
  return out;
}
for (let k = 0; k < 1500; k++) {
  const expected = [];
  let body = "";
  const eol = rand(4) === 0 ? "\r\n" : "\n";
  if (rand(2)) { body += ":" + " ".repeat(2048) + eol + eol; expected.push(["comment", " ".repeat(2048)]); }
  else { body += ":ok" + eol + eol; expected.push(["comment", "ok"]); }
  const n = rand(12);
  for (let seq = 0; seq < n; seq++) {
    if (rand(3) === 0) { body += ":hb" + eol + eol; expected.push(["comment", "hb"]); }
    const data = JSON.stringify({ seq, type: "text", data: u.toUSV(randomString(30)) });
    const lines = rand(5) === 0 ? [data.slice(0, 5), data.slice(5)] : [data];  // several data lines join with LF
    body += "id: " + seq + eol + lines.map((l) => "data: " + l + eol).join("") + eol;
    expected.push(["event", lines.join("\n"), String(seq)]);
  }
  const unfinished = rand(2) ? "id: 99" + eol + "data: {\"seq\":99" : "";  // cut off: never an event
  body += unfinished;
  const pieces = [];
  let i = 0;
  while (i < body.length) { const len = 1 + rand(rand(2) ? 8 : 400); pieces.push(body.slice(i, i + len)); i += len; }
  assert.deepStrictEqual(sseRead(pieces), expected);
  assert.deepStrictEqual(sseRead([body]), expected);
  checks++;
}
// fields: no space after the colon, a field without a colon, unknown fields ignored, an event with
// no data line not dispatched (a bare "data" line is an empty message; the relay never sends one)
assert.deepStrictEqual(sseRead(["data:x\nretry: 5\nfoo\n\nid\nevent: y\n\ndata\n\n"]),
  [["event", "x", ""], ["event", "", ""]]);
checks++;
console.log("ok " + checks + " checks");
