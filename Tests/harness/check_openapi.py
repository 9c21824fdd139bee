"""Checks recorded responses against openapi.yaml.

Usage: check_openapi.py openapi.yaml RESPONSES_DIR
Each response NAME is recorded as NAME.request ("METHOD PATH"), NAME.status, NAME.headers and
NAME.body. Every one must be described by the spec: its path and method (or a 404/405 problem),
its status, its content type, and its body must validate against the schema. For
application/x-ndjson, the schema describes one line, and every line must validate.
"""
import json
import pathlib
import re
import sys

import jsonschema
import yaml


def resolve(spec, node):
    while isinstance(node, dict) and "$ref" in node and len(node) == 1:
        target = spec
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def find_path(spec, path):
    for template, item in spec["paths"].items():
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
        if re.match(pattern, path):
            return item
    return None


def main():
    spec = yaml.safe_load(open(sys.argv[1]))
    try:
        from openapi_spec_validator import validate

        validate(spec)
    except ImportError:
        pass
    problem = {"$ref": "#/components/schemas/Problem"}
    failures = 0
    checked = 0
    for request in sorted(pathlib.Path(sys.argv[2]).glob("*.request")):
        name = request.stem
        method, path = request.read_text().split()
        status = request.with_suffix(".status").read_text().strip()
        headers = request.with_suffix(".headers").read_text()
        match = re.search(r"^content-type:\s*([^;\r\n]+)", headers, re.I | re.M)
        content_type = match.group(1).strip() if match else None
        text = request.with_suffix(".body").read_text()
        if content_type == "application/x-ndjson":
            bodies = [json.loads(line) for line in text.splitlines()]
        elif content_type == "text/plain":
            bodies = [text]  # /metrics: Prometheus text, described as a string
        else:
            bodies = [json.loads(text or "null")]

        item = find_path(spec, path)
        operation = item.get(method.lower()) if item else None
        if operation is None:
            expected = "404" if item is None else "405"
            schema = problem if status == expected else None
            media = "application/problem+json"
        else:
            response = resolve(spec, operation["responses"].get(status))
            content = (response or {}).get("content", {})
            media = content_type if content_type in content else None
            schema = resolve(spec, content[media].get("schema", {})) if media else None
        if schema is None or content_type != media:
            print(f"  {name}: {method} {path} -> {status} {content_type} is not described by the spec")
            failures += 1
            continue
        document = dict(schema)
        document["components"] = spec["components"]
        try:
            for body in bodies:
                jsonschema.Draft202012Validator(document).validate(body)
            checked += 1
        except jsonschema.ValidationError as error:
            print(f"  {name}: {method} {path} -> {status}: {error.message} at {list(error.absolute_path)}")
            failures += 1
    print(f"  openapi: {checked} responses valid, {failures} not")
    return 1 if failures or checked == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
