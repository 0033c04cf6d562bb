// Compiled by tests/test_es3.py (tsc --noEmit) to check polysocket.d.ts.
import PolySocket = require("../polysocket");

const opts: PolySocket.PolySocketOptions = { router: "https://relay.example.com", token: "t", transport: "auto" };
const s = new PolySocket("wss://echo.example.com/", ["chat"], opts);
const t = new PolySocket("wss://echo.example.com/", { transport: "jsonp" });
const u = new PolySocket("wss://echo.example.com/", { transport: "xhr", receive: "xhr-streaming", streamTimeout: 3000, remember: "page" });
const how: PolySocket.PolySocketReceiving = u.receiving;
console.log(how === "stream", PolySocket.supports.eventsource, PolySocket.defaults.receive);
s.binaryType = "arraybuffer";
s.onopen = function () {
    this.send("hello");
    this.send(new Uint8Array([1, 2, 3]));
    this.send(new ArrayBuffer(4));
    this.send(new Blob(["x"]));
    const tr: PolySocket.PolySocketTransport = this.transport;
    console.log(tr, this.protocol, this.extensions, this.bufferedAmount, this.url);
};
s.onmessage = (ev) => console.log(ev.data, ev.origin);
s.addEventListener("close", (ev) => console.log(ev.code, ev.reason, ev.wasClean));
s.addEventListener("error", { handleEvent: (ev) => console.log(ev.type, s.lastError) });
s.addEventListener("message", (ev) => console.log(ev.data), { once: true });
s.addEventListener("custom", () => undefined, true);
console.log(PolySocket.install({}, { replace: true }), PolySocket.installedLate, PolySocket.supports.eventtarget);
s.close(1000, "bye");
t.close();
const state: 0 | 1 | 2 | 3 = s.readyState;
console.log(state === PolySocket.OPEN, PolySocket.install({ router: "https://relay.example.com" }),
    PolySocket.supports.xhr, PolySocket.version);
PolySocket.defaults.router = "https://relay.example.com";
