// The peer for `make bench`: what a user might write instead of Fanout. A plain Node.js server
// (built-in http and cluster, 2 workers, no npm packages) implementing the same batch contract
// for `echo` and `sleep`: validation, concurrency, results in request order, summary.
'use strict';
const cluster = require('node:cluster');
const http = require('node:http');

const port = Number(process.env.PORT || 8090);
const workers = Number(process.env.WORKERS || 2);

if (cluster.isPrimary) {
  for (let i = 0; i < workers; i++) cluster.fork();
  process.on('SIGTERM', () => { for (const id in cluster.workers) cluster.workers[id].kill(); process.exit(0); });
} else {
  const problem = (res, status, detail) => {
    res.writeHead(status, { 'Content-Type': 'application/problem+json' });
    res.end(JSON.stringify({ type: '/problems/invalid-request', title: 'Invalid request', status, detail }));
  };
  const run = (task) => {
    const start = process.hrtime.bigint();
    const done = (result) => Object.assign(result, { duration_ms: Number(process.hrtime.bigint() - start) / 1e6 });
    if (task.op === 'echo') return Promise.resolve(done({ id: task.id, status: 'succeeded', output: task.input ?? null }));
    return new Promise((resolve) => setTimeout(
      () => resolve(done({ id: task.id, status: 'succeeded', output: { slept_ms: task.input.ms } })), task.input.ms));
  };
  http.createServer((req, res) => {
    if (req.method !== 'POST' || req.url !== '/batch') return problem(res, 404, 'not found');
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', async () => {
      const started = process.hrtime.bigint();
      let batch;
      try { batch = JSON.parse(Buffer.concat(chunks).toString('utf8')); } catch { return problem(res, 400, 'malformed JSON'); }
      if (!batch || !Array.isArray(batch.tasks) || batch.tasks.length === 0) return problem(res, 400, 'tasks required');
      const ids = new Set();
      for (const task of batch.tasks) {
        if (typeof task.id !== 'string' || ids.has(task.id)) return problem(res, 400, 'bad id');
        ids.add(task.id);
        if (task.op === 'sleep' && !(Number.isInteger(task.input?.ms) && task.input.ms >= 0)) return problem(res, 400, 'bad ms');
        if (task.op !== 'echo' && task.op !== 'sleep') return problem(res, 400, 'unknown op');
      }
      const results = await Promise.all(batch.tasks.map(run));
      const body = JSON.stringify({
        status: 'succeeded', results,
        summary: { total: results.length, succeeded: results.length, failed: 0, skipped: 0, cancelled: 0,
          duration_ms: Number(process.hrtime.bigint() - started) / 1e6 },
      });
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(body);
    });
  }).listen(port, '127.0.0.1');
}
