// Echo target on Node's `ws`: the same scripted commands as `polysocket echo`
// (close:CODE:REASON, flood:N, abort), so tests run against two implementations.
"use strict";
const { WebSocketServer } = require("ws");

const port = Number(process.argv[2] || 8110);
const wss = new WebSocketServer({
  host: "127.0.0.1",
  port,
  maxPayload: 16 * 1024 * 1024,
  perMessageDeflate: false,
  handleProtocols: (protocols) => (protocols.size ? protocols.values().next().value : false),
});

wss.on("connection", (ws) => {
  ws.on("message", (data, isBinary) => {
    if (!isBinary) {
      const text = data.toString("utf8");
      if (text.startsWith("close:")) {
        const [, code, ...rest] = text.split(":");
        ws.close(Number(code), rest.join(":"));
        return;
      }
      if (text.startsWith("flood:")) {
        const n = Number(text.slice(6));
        for (let i = 0; i < n; i++) ws.send(String(i));
        return;
      }
      if (text === "abort") {
        ws.terminate();
        return;
      }
      ws.send(text);
      return;
    }
    ws.send(data, { binary: true });
  });
  ws.on("error", () => {});
});

wss.on("listening", () => console.log(`ws echo target on ws://127.0.0.1:${port}/`));
process.on("SIGTERM", () => process.exit(0));
