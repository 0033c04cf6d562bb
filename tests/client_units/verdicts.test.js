// Unit tests under Node of the network verdict memory (client/src/verdict.js) with a clock and a
// store the test drives, and of a relay socket whose host never answers (run by test_es3.py). The
// browser tests (tests/browser/test_network_verdicts.py) run the same code behind a real squid.
"use strict";
const assert = require("assert");
const path = require("path");
const PS = require(path.join(__dirname, "..", "..", "client", "polysocket.js"));
const I = PS._internals;
let checks = 0;

function memoryStore() {
  const items = {};
  return {
    items,
    getItem(k) { return Object.prototype.hasOwnProperty.call(items, k) ? items[k] : null; },
    setItem(k, v) { items[k] = String(v); }
  };
}

const RETRY = I.VERDICT_RETRY_MS;
const MAX = I.VERDICT_MAX_MS;
const key = I.nativeVerdictKey("HTTP://Router.test/", "ws://Target.test:8080/chat?x=1");
assert.strictEqual(key, "native http://router.test ws://target.test:8080");
assert.strictEqual(I.streamsVerdictKey("http://router.test//"), "streams http://router.test");
checks++;

{
  // a failure is skipped for RETRY, then tried again; failing again doubles the skip, up to MAX
  let t = 1000;
  const v = new I.NetworkVerdicts(() => t, null);
  assert.strictEqual(v.skips(key, "page"), false);
  v.failed(key, "page");
  assert.strictEqual(v.skips(key, "page"), true);
  t += RETRY - 1;
  assert.strictEqual(v.skips(key, "page"), true);
  t += 1;
  assert.strictEqual(v.skips(key, "page"), false);  // expired: the next socket tries again
  v.failed(key, "page");
  t += 2 * RETRY - 1;
  assert.strictEqual(v.skips(key, "page"), true);
  t += 1;
  assert.strictEqual(v.skips(key, "page"), false);
  for (let i = 0; i < 20; i++) v.failed(key, "page");
  t += MAX - 1;
  assert.strictEqual(v.skips(key, "page"), true);
  t += 1;
  assert.strictEqual(v.skips(key, "page"), false);  // never longer than MAX
  // it works again: the verdict is gone, and a later failure starts from RETRY
  v.worked(key, "page");
  v.failed(key, "page");
  t += RETRY;
  assert.strictEqual(v.skips(key, "page"), false);
  checks++;
}
{
  // "none" neither records nor skips; "page" does not touch the store; other keys are separate
  let t = 0;
  const store = memoryStore();
  const v = new I.NetworkVerdicts(() => t, store);
  v.failed(key, "none");
  assert.strictEqual(v.skips(key, "none"), false);
  assert.strictEqual(v.skips(key, "page"), false);
  v.failed(key, "page");
  assert.strictEqual(v.skips(key, "page"), true);
  assert.strictEqual(v.skips(key, "none"), false);
  assert.deepStrictEqual(store.items, {});
  assert.strictEqual(v.skips(I.nativeVerdictKey("http://router.test", "wss://target.test/"), "page"), false);
  checks++;
}
{
  // "session": a later page (a new memory on the same store) starts with the verdict, until it expires
  let t = 5000;
  const store = memoryStore();
  const first = new I.NetworkVerdicts(() => t, store);
  first.failed(key, "session");
  const streams = I.streamsVerdictKey("http://router.test");
  first.failed(streams, "session");
  const second = new I.NetworkVerdicts(() => t, store);
  assert.strictEqual(second.skips(key, "session"), true);
  assert.strictEqual(second.skips(streams, "session"), true);
  assert.strictEqual(second.skips(key, "page"), true);  // loaded once, now in the page memory
  second.worked(streams, "session");
  t += RETRY;
  const third = new I.NetworkVerdicts(() => t, store);
  assert.strictEqual(third.skips(key, "session"), false);
  assert.strictEqual(third.skips(streams, "session"), false);
  third.failed(streams, "session");  // a write drops what expired
  assert.deepStrictEqual(Object.keys(JSON.parse(store.items["polysocket.verdicts"])), [streams]);
  checks++;
}
{
  // what another script wrote there is data, never trusted blindly: junk, future times, code
  const t = 100000;
  for (const junk of ["not json", "[1,2]", "null", '{"k":{"at":"1","n":1}}',
      JSON.stringify({ [key]: { at: t + 1, n: 1 } }), JSON.stringify({ [key]: { at: t, n: 0 } }),
      "(function(){globalThis.pwned=1})()"]) {
    const store = memoryStore();
    store.items["polysocket.verdicts"] = junk;
    const v = new I.NetworkVerdicts(() => t, store);
    assert.strictEqual(v.skips(key, "session"), false, junk);
    assert.strictEqual(globalThis.pwned, undefined);
  }
  // a store that throws (storage blocked) leaves the page memory working
  const broken = { getItem() { throw new Error("denied"); }, setItem() { throw new Error("denied"); } };
  const v = new I.NetworkVerdicts(() => t, broken);
  v.failed(key, "session");
  assert.strictEqual(v.skips(key, "session"), true);
  checks++;
}
{
  // an unknown `remember` is refused as an unknown transport is
  assert.throws(() => new PS("ws://target.test/", { remember: "forever" }), /remember/);
  checks++;
}

// A relay socket whose host never answered: a failed request there ends it at once (close 1006),
// and its polls are probes (ttl 0) until the host answers.
const XHR = I.TRANSPORTS[1];
function openRelay(router) {
  router = router || "http://router.test";
  const sent = [];
  const transport = Object.assign({}, XHR, {
    request(url, params, timeoutMs, done, body) {
      sent.push({ url, params, timeoutMs, body, done });
      return { abort() {} };
    }
  });
  const sock = {
    _opts: Object.assign({}, PS.defaults, { router }), _url: "ws://target.test/",
    _protocols: [], _addBuffered() {}, _fail(m) { this.failed = m; }, _lost(m) { this.lost = m; },
    _closed() {}
  };
  const relay = new I.Relay(sock, transport, router);
  relay.id = "s".repeat(22);
  relay.base = "http://bcd12.node.test";
  assert.ok(relay.enter(I.RelayState.OPEN));
  return { relay, sent, sock };
}
const refused = { error: "network", message: "HTTP 403" };
{
  const { relay, sent, sock } = openRelay();
  relay.poll();
  assert.strictEqual(sent[0].params.ttl, 0);
  assert.strictEqual(sent[0].timeoutMs, PS.defaults.sendTimeout);
  sent[0].done(refused);
  assert.match(sock.lost, /relay host http:\/\/bcd12\.node\.test did not answer a poll/);
  assert.strictEqual(relay.state, I.RelayState.STOPPED);
  checks++;
}
{
  // once the host answered, a failed poll is retried as before, and polls wait again
  const { relay, sent, sock } = openRelay();
  relay.poll();
  sent[0].done(null, { ok: true, messages: [] });
  assert.strictEqual(sent[1].params.ttl, relay.ttl);
  sent[1].done(refused);
  assert.strictEqual(sock.lost, undefined);
  relay.stop();
  checks++;
}
{
  // close() on a socket whose host never answered ends at once
  const { relay, sent, sock } = openRelay();
  relay.close(1000, "");
  assert.ok(sent[0].url.endsWith("/close"));
  sent[0].done(refused);
  assert.match(sock.lost, /did not answer a close/);
  assert.strictEqual(relay.state, I.RelayState.STOPPED);
  checks++;
}
{
  // a send too
  const { relay, sent, sock } = openRelay();
  relay.send({ kind: "t", text: "a", size: 1 });
  sent[0].done(refused);
  assert.match(sock.lost, /did not answer a send/);
  checks++;
}
// A stream that shows nothing within streamTimeout: "streams buffered" is recorded (in the page's
// memory) only once a poll passes; if the probe fails, it is the relay host, not streams.
function heldBackStream(router) {
  const r = openRelay(router);
  const fake = { name: "fake", kind: "stream", acksBySend: true, quiet: () => ({ why: "renew", ms: 1e9 }),
    open() { return { abort() {} }; } };
  r.relay.receiver = fake;
  r.relay.openStream(fake);
  r.relay.endStream(r.relay.stream, "timeout");
  assert.strictEqual(r.relay.receiver.name, "poll");
  assert.ok(r.sent[0].url.endsWith("/poll"));
  return r;
}
{
  const router = "http://buffering.test";
  const { relay, sent } = heldBackStream(router);
  assert.strictEqual(I.networkVerdicts.skips(I.streamsVerdictKey(router), "page"), false);
  sent[0].done(null, { ok: true, messages: [] });
  assert.strictEqual(I.networkVerdicts.skips(I.streamsVerdictKey(router), "page"), true);
  relay.stop();
  checks++;
}
{
  const router = "http://deadhost.test";
  const { sent, sock } = heldBackStream(router);
  sent[0].done({ error: "timeout", message: "no answer" });
  assert.match(sock.lost, /did not answer a poll/);
  assert.strictEqual(I.networkVerdicts.skips(I.streamsVerdictKey(router), "page"), false);
  checks++;
}
console.log("ok " + checks + " checks");
