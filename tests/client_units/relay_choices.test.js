// Unit tests under Node of the choices a socket makes and of a relay socket's named lifecycle
// (run by test_es3.py). Node has no EventSource, XMLHttpRequest or script tags: the relay
// socket here is given the real XHR transport with its request recorded instead of sent (the
// browser tests in tests/browser/ run the same code against a real relay).
"use strict";
const assert = require("assert");
const path = require("path");
const PS = require(path.join(__dirname, "..", "..", "client", "polysocket.js"));
const I = PS._internals;
let checks = 0;

// Transports: one ordered list, the native WebSocket first, each a candidate with usable() and start().
assert.deepStrictEqual(I.TRANSPORTS.map((t) => t.name), ["websocket", "xhr", "jsonp"]);
for (const t of I.TRANSPORTS) {
  assert.strictEqual(typeof t.usable, "function", t.name);
  assert.strictEqual(typeof t.start, "function", t.name);
  checks++;
}

// Receivers: one ordered list; every `receive` mode ends with polling, which always works.
assert.deepStrictEqual(I.RECEIVERS.map((r) => r.name), ["eventsource", "xhr-streaming", "poll"]);
for (const mode of Object.keys(I.RECEIVE_MODES)) {
  const list = I.RECEIVE_MODES[mode];
  assert.strictEqual(list[list.length - 1].name, "poll", mode);
  checks++;
}
// Node has no EventSource: "auto" streams by xhr where the transport can and the relay may wait.
const expected = {
  auto: ["xhr-streaming", "poll", "poll"],
  eventsource: ["poll", "poll", "poll"],
  "xhr-streaming": ["xhr-streaming", "poll", "poll"],
  poll: ["poll", "poll", "poll"]
};
for (const mode of Object.keys(expected)) {
  const cases = [[true, 25000], [false, 25000], [true, 0]];
  cases.forEach(([streams, ttl], k) => {
    const relay = { transport: { streams }, ttl, opts: { receive: mode } };
    const r = I.chooseReceiver(relay);
    assert.strictEqual(r.name, expected[mode][k], mode + " " + streams + " " + ttl);
    assert.strictEqual(r.kind, r.name === "poll" ? "poll" : "stream");
    assert.strictEqual(r.acksBySend, r.kind === "stream");
    checks++;
  });
}

// The lifecycle table: every state has its moves, every move leads to a state, and every state
// can stop (the socket closed, failed or moved on).
const states = Object.keys(I.RelayState).map((k) => I.RelayState[k]);
assert.deepStrictEqual(Object.keys(I.RELAY_TRANSITIONS).sort(), states.slice().sort());
for (const s of states) {
  for (const next of Object.keys(I.RELAY_TRANSITIONS[s])) {
    assert.ok(states.includes(next), s + " -> " + next);
  }
  assert.ok(I.RELAY_TRANSITIONS[s].stopped, s + " cannot stop");
  checks++;
}

// A relay socket driven through its states, with the XHR transport's requests recorded.
const XHR = I.TRANSPORTS[1];
function openRelay() {
  const sent = [];
  const transport = Object.assign({}, XHR, {
    request(url, params, timeoutMs, done, body) {
      sent.push({ url, params, body, done });
      return { abort() {} };
    }
  });
  const sock = {
    _opts: Object.assign({}, PS.defaults, { router: "http://router.test" }), _url: "ws://target.test/",
    _protocols: [], _addBuffered() {}, _fail(m) { this.failed = m; }, _lost(m) { this.lost = m; },
    _closed() {}
  };
  const relay = new I.Relay(sock, transport, "http://router.test");
  relay.id = "s".repeat(22);
  relay.base = "http://node.test";
  assert.strictEqual(relay.state, I.RelayState.CONNECTING);
  assert.ok(relay.enter(I.RelayState.OPEN));
  return { relay, sent };
}
const S = I.RelayState;
{
  // close() with nothing in flight: the /close goes at once, with the code and reason
  const { relay, sent } = openRelay();
  relay.close(3001, "bye");
  assert.strictEqual(relay.state, S.CLOSE_SENT);
  assert.strictEqual(sent.length, 1);
  assert.ok(sent[0].url.endsWith("/close"));
  assert.deepStrictEqual([sent[0].params.code, sent[0].params.reason], [3001, "bye"]);
  assert.strictEqual(relay.enter(S.OPEN), false);  // no way back
  relay.stop();  // its idle watchdog would keep Node running
  checks++;
}
{
  // close() with a send in flight: CLOSING until it is answered, then the /close
  const { relay, sent } = openRelay();
  relay.send({ kind: "t", text: "hi", size: 2 });
  assert.strictEqual(sent.length, 1);
  assert.ok(sent[0].url.endsWith("/send"));
  relay.close(undefined, "why");  // a reason without a code goes with 1000
  assert.strictEqual(relay.state, S.CLOSING);
  assert.strictEqual(sent.length, 1);
  sent[0].done(null, { ok: true });
  assert.strictEqual(relay.state, S.CLOSE_SENT);
  assert.deepStrictEqual([sent[1].params.code, sent[1].params.reason], [1000, "why"]);
  relay.stop();  // its idle watchdog would keep Node running
  checks++;
}
{
  // a refused send: nothing more is sent, but a later close() still reaches the relay at once
  const { relay, sent } = openRelay();
  relay.send({ kind: "t", text: "a", size: 1 });
  sent[0].done(null, { ok: false, error: "closing", message: "the target is closing" });
  assert.strictEqual(relay.state, S.REFUSED);
  relay.send({ kind: "t", text: "b", size: 1 });
  assert.strictEqual(sent.length, 1);
  relay.close(3000, "");
  assert.strictEqual(relay.state, S.CLOSE_SENT);
  assert.ok(sent[1].url.endsWith("/close"));
  relay.stop();  // its idle watchdog would keep Node running
  checks++;
}
{
  // refused while closing with another send in flight: the /close goes without waiting for it
  const { relay, sent } = openRelay();
  relay.opts.maxBatch = 1;
  relay.send({ kind: "t", text: "a", size: 1 });
  relay.send({ kind: "t", text: "b", size: 1 });
  assert.strictEqual(sent.length, 2);
  relay.close(3000, "");
  assert.strictEqual(relay.state, S.CLOSING);
  sent[0].done(null, { ok: false, error: "closing", message: "" });
  assert.strictEqual(relay.state, S.CLOSE_SENT);
  assert.ok(sent[2].url.endsWith("/close"));
  relay.stop();  // its idle watchdog would keep Node running
  checks++;
}
{
  // a poll answered: the next poll goes at once; stopped: no more polls
  const { relay, sent } = openRelay();
  relay.poll();
  assert.ok(sent[0].url.endsWith("/poll"));
  sent[0].done(null, { ok: true, messages: [] });
  assert.strictEqual(sent.length, 2);
  assert.ok(sent[1].url.endsWith("/poll"));
  relay.stop();
  sent[1].done(null, { ok: true, messages: [] });
  assert.strictEqual(sent.length, 2);
  checks++;
}
{
  // stop() from any state, and requests answered afterwards are ignored
  const { relay, sent } = openRelay();
  relay.send({ kind: "t", text: "a", size: 1 });
  relay.stop();
  assert.strictEqual(relay.state, S.STOPPED);
  sent[0].done(null, { ok: false, error: "unknown_socket", message: "" });
  assert.strictEqual(relay.socket.lost, undefined);
  checks++;
}
{
  // close() while connecting: the socket fails at once (error, close 1006) but its relay carrier
  // lives on, so the connect answer frees the relay socket with a /close (else the relay held it,
  // claimed by nobody, until its claim deadline).
  const sent = [];
  const transport = Object.assign({}, XHR, {
    request(url, params, timeoutMs, done) {
      const req = { url, params, done, aborted: false };
      sent.push(req);
      return { abort() { req.aborted = true; } };
    }
  });
  const sock = Object.create(PS.prototype);
  const events = [];
  Object.assign(sock, {
    _readyState: 0, _url: "ws://target.test/", _protocols: [], _buffered: 0,
    _opts: Object.assign({}, PS.defaults, { router: "http://router.test" }),
    _fire(kind, type) { events.push(type); }
  });
  sock._carrier = new I.Relay(sock, transport, "http://router.test");
  const relay = sock._carrier;
  relay.connect();
  assert.ok(sent[0].url.endsWith("/connect"));
  sock.close();
  assert.strictEqual(relay.state, S.ABANDONED);
  setTimeout(() => {
    assert.deepStrictEqual(events, ["error", "close"]);  // the page learns at once, as a browser's close()
    assert.strictEqual(sent[0].aborted, false, "the connect must not be aborted");
    sent[0].done(null, { ok: true, socket: "s".repeat(22), fqdn: "u.node.test", protocol: "" });
    assert.strictEqual(sent.length, 2);
    assert.strictEqual(sent[1].url, "http://u.node.test/close");
    assert.deepStrictEqual([sent[1].params.socket, sent[1].params.code], ["s".repeat(22), 1000]);
    assert.strictEqual(relay.state, S.STOPPED);
    checks++;
    console.log("ok " + checks + " checks");
  }, 5);
}
