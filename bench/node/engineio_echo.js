// engine.io 6.6 echo server for `python -m bench` (issue 12's peer): Engine.IO v4, the polling
// transport only, raw messages (no socket.io layer), every message sent back to its session.
// Usage: node engineio_echo.js --port N [--heartbeat MS]   (prints "listening on N" when ready)
'use strict';
const http = require('http');
const engine = require('engine.io');

function arg(name, dflt) {
  const i = process.argv.indexOf('--' + name);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
}

const port = arg('port', 0);
const server = http.createServer();
server.keepAliveTimeout = 120000;
const eio = new engine.Server({
  transports: ['polling'],
  allowUpgrades: false,
  pingInterval: arg('heartbeat', 25000),
  pingTimeout: 20000,
});
eio.attach(server);
eio.on('connection', function (socket) {
  socket.on('message', function (data) { socket.send(data); });
});
server.listen(port, '127.0.0.1', function () {
  console.log('listening on ' + server.address().port);
});
process.on('SIGTERM', function () { process.exit(0); });
