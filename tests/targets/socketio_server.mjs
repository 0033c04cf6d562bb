// Socket.IO 4 server, unmodified, websocket transport only, for the real-library browser tests.
// Events: "echo" (acks its arguments back, binary included), "burst" (records its argument),
// "burst-done" (acks the recorded list), "flood" (emits N "f" events), "drop" (cuts the TCP
// connection under the socket's transport, without a close frame: the client must reconnect).
import { createServer } from "node:http";
import { Server } from "socket.io";

const port = Number(process.argv[2] || 8121);
const httpServer = createServer();
const io = new Server(httpServer, { transports: ["websocket"], maxHttpBufferSize: 1e7 });
let connections = 0;

io.on("connection", (socket) => {
  const conn = ++connections;
  const received = [];
  socket.emit("hello", { conn });
  socket.on("echo", (...args) => {
    const ack = args.pop();
    ack(...args);
  });
  socket.on("burst", (i) => received.push(i));
  socket.on("burst-done", (ack) => ack(received.splice(0)));
  socket.on("flood", (n) => {
    for (let i = 0; i < n; i++) socket.emit("f", i);
  });
  socket.on("drop", () => {
    setTimeout(() => socket.conn.transport.socket.terminate(), 20);
  });
});

httpServer.listen(port, "127.0.0.1", () => console.log(`socket.io server on ws://127.0.0.1:${port}/`));
process.on("SIGTERM", () => process.exit(0));
