"""Schemathesis hooks for the harness (loaded through SCHEMATHESIS_HOOKS).

openapi.yaml states every rule of a single field. The few rules JSON Schema cannot state (its
TaskRequest description lists them) are applied here to generated POST /batch bodies, so that a
"schema-valid" batch is one Fanout must accept: a body that breaks one of them is dropped, never
changed, so negative cases stay negative. The schema is also fitted to the harness's stack: its
configured upstream names, and short sleeps.
"""
import os
import re

import schemathesis

UPSTREAMS = os.environ.get("FANOUT_ST_UPSTREAMS", "demo").split(",")
# The harness starts Fanout with FANOUT_MAX_TASK_TIMEOUT_MS=250, which is also the longest sleep.
LONGEST_SLEEP_MS = 250
FORBIDDEN_HEADERS = {
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "host",
    "content-length", "authorization", "cookie", "forwarded", "x-request-id", "traceparent", "tracestate", "idempotency-key",
}
PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_]+)\}")


@schemathesis.hook
def before_load_schema(ctx, raw_schema):
    schemas = raw_schema["components"]["schemas"]
    schemas["HTTPInput"]["properties"]["upstream"]["enum"] = UPSTREAMS
    schemas["SleepInput"]["properties"]["ms"]["maximum"] = LONGEST_SLEEP_MS


def has_reference(value):
    if isinstance(value, dict):
        return "$ref" in value or "$literal" in value or any(has_reference(v) for v in value.values())
    if isinstance(value, list):
        return any(has_reference(v) for v in value)
    return False


def http_input_ok(value):
    """The cross-field rules of an http input: placeholders and params match, values and
    header names are allowed."""
    if not isinstance(value, dict) or not isinstance(value.get("path"), str):
        return True  # a schema violation: left for the server to refuse
    # The upstream's slow and failing paths answer late or retry past the 250 ms task limit by
    # design: a 504 there is the limit working, not a finding.
    if value["path"].startswith(("/slow", "/events", "/drop", "/flaky")):
        return False
    names = set(PLACEHOLDER.findall(value["path"]))
    params = value.get("params", {})
    if isinstance(params, dict):
        if set(params) != names:
            return False
        for item in params.values():
            text = item if isinstance(item, str) else str(item)
            if text == "" or any(part in (".", "..") for part in re.split(r"[/\\]", text)):
                return False
    headers = value.get("headers", {})
    if isinstance(headers, dict):
        for name in headers:
            lower = name.lower()
            if lower in FORBIDDEN_HEADERS or lower.startswith(("proxy-", "x-forwarded-")):
                return False
    return True


@schemathesis.hook
def filter_body(ctx, body):
    if ctx.operation.path == "/ops/http":
        return not has_reference(body) and http_input_ok(body)
    if ctx.operation.path != "/batch" or not isinstance(body, dict) or not isinstance(body.get("tasks"), list):
        return True
    seen = set()
    for task in body["tasks"]:
        if not isinstance(task, dict):
            continue
        # Ids unique; dependencies on earlier tasks only (so they exist and form no cycle).
        depends = task.get("depends_on", [])
        if isinstance(depends, list) and any(d not in seen for d in depends if isinstance(d, str)):
            return False
        if isinstance(task.get("id"), str):
            if task["id"] in seen:
                return False
            seen.add(task["id"])
        if has_reference(task.get("input")):
            return False
        if task.get("op") == "http" and not http_input_ok(task.get("input")):
            return False
    return True
