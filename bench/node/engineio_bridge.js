// engine.io 6.6 in front of a WebSocket target (issue 20's bridge): Engine.IO v4, the polling transport
// only, raw messages; each session opens a `ws` client to the target (bridge.js) and relays both ways.
// Usage: node engineio_bridge.js --port N --target ws://H:P/ [--heartbeat MS]   (prints "listening on N")
'use strict';
const http = require('http');
const engine = require('engine.io');
const { arg, bridge } = require('./bridge');

const target = arg('target');
const server = http.createServer();
server.keepAliveTimeout = 120000;
const eio = new engine.Server({
  transports: ['polling'],
  allowUpgrades: false,
  pingInterval: Number(arg('heartbeat', 25000)),
  pingTimeout: 20000,
});
eio.attach(server);
eio.on('connection', function (socket) {
  const up = bridge(target, function (data) { socket.send(data); }, function () { socket.close(); });
  socket.on('message', function (data) { up.send(data); });
  socket.on('close', function () { up.close(); });
});
server.listen(Number(arg('port', 0)), '127.0.0.1', function () {
  console.log('listening on ' + server.address().port);
});
process.on('SIGTERM', function () { process.exit(0); });
