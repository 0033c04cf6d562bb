// What a user builds instead of polysocket for a WebSocket server they do not own (issue 20): a
// polling server in front of it that opens one `ws` client per session to the target and copies
// messages both ways. Shared by engineio_bridge.js and sockjs_bridge.js; the target is the same
// unmodified echo the relay uses, and, like the relay's upstream, no compression is negotiated.
'use strict';
const WebSocket = require('ws');

function arg(name, dflt) {
  const i = process.argv.indexOf('--' + name);
  return i >= 0 ? process.argv[i + 1] : dflt;
}

// One session's upstream: messages sent before the WebSocket is open wait in order; whichever side
// ends first ends the other.
function bridge(target, deliver, end) {
  const ws = new WebSocket(target, { perMessageDeflate: false });
  let queued = [];
  ws.on('open', function () {
    for (const m of queued) ws.send(m);
    queued = null;
  });
  ws.on('message', function (data, isBinary) { deliver(isBinary ? data : data.toString()); });
  ws.on('close', end);
  ws.on('error', end);  // 'close' follows; `end` is idempotent on both servers
  return {
    send: function (m) { if (queued) queued.push(m); else if (ws.readyState === WebSocket.OPEN) ws.send(m); },
    close: function () { queued = null; ws.terminate(); },
  };
}

module.exports = { arg: arg, bridge: bridge };
