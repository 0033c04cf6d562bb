// sockjs-node 0.3.24 in front of a WebSocket target (issue 20's bridge): the polling transports
// (websocket disabled); each session opens a `ws` client to the target (bridge.js) and relays both ways.
// Usage: node sockjs_bridge.js --port N --target ws://H:P/ [--heartbeat MS]   (prints "listening on N")
'use strict';
const http = require('http');
const sockjs = require('sockjs');
const { arg, bridge } = require('./bridge');

const target = arg('target');
const server = http.createServer();
server.keepAliveTimeout = 120000;
const relay = sockjs.createServer({
  prefix: '/echo',
  websocket: false,
  heartbeat_delay: Number(arg('heartbeat', 25000)),
  disconnect_delay: 5000,
  log: function () {},
});
relay.on('connection', function (conn) {
  const up = bridge(target, function (data) { conn.write(data); }, function () { conn.close(); });
  conn.on('data', function (message) { up.send(message); });
  conn.on('close', function () { up.close(); });
});
relay.installHandlers(server);
server.listen(Number(arg('port', 0)), '127.0.0.1', function () {
  console.log('listening on ' + server.address().port);
});
process.on('SIGTERM', function () { process.exit(0); });
