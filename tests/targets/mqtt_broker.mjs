// MQTT broker for the real-library browser tests: aedes, unmodified, over WebSocket (`ws` +
// createWebSocketStream, as aedes' own docs show). One test hook, outside MQTT: a client that
// publishes to "ctl/drop" has its TCP connection cut (no close frame), to test reconnection.
import { Aedes } from "aedes";
import { WebSocketServer, createWebSocketStream } from "ws";

const port = Number(process.argv[2] || 8120);
const aedes = await Aedes.createBroker();
const wss = new WebSocketServer({
  host: "127.0.0.1",
  port,
  perMessageDeflate: false,
  handleProtocols: (protocols) => (protocols.has("mqtt") ? "mqtt" : false),
});

wss.on("connection", (ws, req) => {
  const stream = createWebSocketStream(ws);
  stream.on("error", () => {});
  ws.on("error", () => {});
  stream.psWs = ws;
  aedes.handle(stream, req);
});

aedes.on("publish", (packet, client) => {
  if (client && packet.topic === "ctl/drop") {
    setTimeout(() => client.conn.psWs && client.conn.psWs.terminate(), 20);
  }
});

wss.on("listening", () => console.log(`aedes broker on ws://127.0.0.1:${port}/`));
process.on("SIGTERM", () => process.exit(0));
