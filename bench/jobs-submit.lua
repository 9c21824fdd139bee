-- wrk: one asynchronous job of one echo task per request (bench/jobs.py).
wrk.method = "POST"
wrk.body = '{"tasks":[{"id":"a","op":"echo","input":1}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Prefer"] = "respond-async"
