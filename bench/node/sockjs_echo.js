// sockjs-node 0.3.24 echo server for `python -m bench` (issue 12's peer).
// Every message a session sends comes back to it. The bench drives the xhr-polling
// (POST /xhr, POST /xhr_send) and jsonp-polling (GET /jsonp, POST /jsonp_send) transports;
// websocket is disabled so a session can only poll.
// Usage: node sockjs_echo.js --port N [--heartbeat MS]   (prints "listening on N" when ready)
'use strict';
const http = require('http');
const sockjs = require('sockjs');

function arg(name, dflt) {
  const i = process.argv.indexOf('--' + name);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
}

const port = arg('port', 0);
const echo = sockjs.createServer({
  prefix: '/echo',
  websocket: false,
  heartbeat_delay: arg('heartbeat', 25000),
  disconnect_delay: 5000,
  log: function () {},
});
echo.on('connection', function (conn) {
  conn.on('data', function (message) { conn.write(message); });
});

const server = http.createServer();
server.keepAliveTimeout = 120000;
echo.installHandlers(server);
server.listen(port, '127.0.0.1', function () {
  console.log('listening on ' + server.address().port);
});
process.on('SIGTERM', function () { process.exit(0); });
