// The upstream API for `make bench`'s http workloads (w6, w7): one Node.js process on 127.0.0.1.
//   GET /fast  -> 200 with a small JSON body at once
//   GET /slow  -> 200 with a small JSON body after 100 ms (SLOW_MS)
// The fast one answers what nginx's `return 200` would; both Fanout and the peer call it alike.
'use strict';
const http = require('node:http');

const port = Number(process.env.PORT || 8091);
const slowMs = Number(process.env.SLOW_MS || 100);
const body = JSON.stringify({ id: 42, name: 'User 42', team_id: 2 });

const server = http.createServer((req, res) => {
  const answer = () => {
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  };
  if (req.url.startsWith('/slow')) setTimeout(answer, slowMs);
  else answer();
});
server.keepAliveTimeout = 120000;
server.listen(port, '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));
