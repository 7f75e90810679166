// The Node.js peer of bench/run.sh: the broadcast server a user would write with npm `ws`.
// Every text message from a client goes to every other open client; the sender gets a
// short acknowledgement so that the load generator's publisher can keep a bounded window.
'use strict';
const { WebSocketServer, WebSocket } = require('ws');

const port = Number(process.argv[2] || 8090);
const wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false });
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => {
    for (const c of wss.clients) {
      if (c !== ws && c.readyState === WebSocket.OPEN) c.send(data, { binary: isBinary });
    }
    ws.send('{"ok":true}');
  });
  ws.on('error', () => {});
});
wss.on('listening', () => console.log('listening ' + port));
