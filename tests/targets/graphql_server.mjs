// graphql-ws 6 server on `ws`, unmodified, with a tiny schema, for the real-library browser tests.
// count(to): the integers 0..to-1, then completes. ticks: {conn, n} every 50 ms, where conn numbers
// the WebSocket connection (so a resubscription after a reconnect is visible). drop: cuts the
// calling connection's TCP connection (no close frame) shortly after answering.
import { buildSchema } from "graphql";
import { useServer } from "graphql-ws/use/ws";
import { WebSocketServer } from "ws";

const port = Number(process.argv[2] || 8122);
const schema = buildSchema(`
  type Query { hello: String!, drop: Boolean! }
  type Tick { conn: Int!, n: Int! }
  type Subscription { count(to: Int!): Int!, ticks: Tick! }
`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const roots = {
  query: {
    hello: () => "world",
    drop: (_args, ctx) => {
      setTimeout(() => ctx.socket.terminate(), 50);
      return true;
    },
  },
  subscription: {
    count: async function* ({ to }) {
      for (let i = 0; i < to; i++) yield { count: i };
    },
    ticks: async function* (_args, ctx) {
      for (let n = 0; ; n++) {
        yield { ticks: { conn: ctx.conn, n } };
        await sleep(50);
      }
    },
  },
};

const wss = new WebSocketServer({ host: "127.0.0.1", port, perMessageDeflate: false });
let connections = 0;
wss.on("connection", (ws) => {
  ws.psConn = ++connections;
  ws.on("error", () => {});
});
useServer(
  {
    schema,
    roots,
    context: (ctx) => ({ conn: ctx.extra.socket.psConn, socket: ctx.extra.socket }),
  },
  wss,
);

wss.on("listening", () => console.log(`graphql-ws server on ws://127.0.0.1:${port}/`));
process.on("SIGTERM", () => process.exit(0));
