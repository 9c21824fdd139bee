// The peer for `make bench`: what a user might write instead of Fanout. A plain Node.js server
// (built-in http and cluster, 2 workers, no npm packages) implementing the same batch contract
// for `echo`, `sleep` and `http` (GET to a configured upstream through a keep-alive agent, JSON
// body parsed): validation, concurrency, results in request order, summary.
// UPSTREAMS="name=http://127.0.0.1:port,…" names the upstreams; MAX_SOCKETS (per upstream and
// worker) bounds each agent.
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
  const upstreams = {};
  for (const pair of (process.env.UPSTREAMS || '').split(',').filter(Boolean)) {
    const [name, url] = pair.split('=');
    const maxSockets = Number(process.env[`MAX_SOCKETS_${name.toUpperCase()}`] || process.env.MAX_SOCKETS || 32);
    upstreams[name] = { url: new URL(url), agent: new http.Agent({ keepAlive: true, maxSockets }) };
  }
  const call = (task, done) => new Promise((resolve) => {
    const upstream = upstreams[task.input.upstream];
    const request = http.request({
      host: upstream.url.hostname, port: upstream.url.port, path: upstream.url.pathname.replace(/\/$/, '') + task.input.path,
      method: task.input.method || 'GET', agent: upstream.agent,
    }, (response) => {
      const chunks = [];
      response.on('data', (chunk) => chunks.push(chunk));
      response.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        const type = response.headers['content-type'] || '';
        const output = { status: response.statusCode, headers: { 'content-type': type },
          body: type.startsWith('application/json') ? JSON.parse(text) : text, attempts: 1 };
        resolve(done(response.statusCode < 300
          ? { id: task.id, status: 'succeeded', output }
          : { id: task.id, status: 'failed', error: { code: 'upstream_status', message: `answered ${response.statusCode}` } }));
      });
    });
    request.on('error', () => resolve(done({ id: task.id, status: 'failed', error: { code: 'upstream_unreachable', message: 'failed' } })));
    request.end();
  });
  const run = (task) => {
    const start = process.hrtime.bigint();
    const done = (result) => Object.assign(result, { duration_ms: Number(process.hrtime.bigint() - start) / 1e6 });
    if (task.op === 'echo') return Promise.resolve(done({ id: task.id, status: 'succeeded', output: task.input ?? null }));
    if (task.op === 'http') return call(task, done);
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
        if (task.op === 'http' && !(upstreams[task.input?.upstream] && typeof task.input.path === 'string' && task.input.path.startsWith('/'))) return problem(res, 400, 'bad http input');
        if (task.op !== 'echo' && task.op !== 'sleep' && task.op !== 'http') return problem(res, 400, 'unknown op');
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
