#!/usr/bin/env python3
"""Writes the committed seed corpus of each fuzz target (Tests/Fuzz/corpus/<target>/).

Valid inputs of every feature, and the interesting invalid ones the tests refuse. Run it again
after adding a case; libFuzzer grows its own working corpus from these under .run/fuzz/.
"""
import json
import os
import shutil

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def batch(tasks, **envelope):
    return json.dumps({"tasks": tasks, **envelope})


def http(**fields):
    return {"upstream": "api", "path": "/users/1", **fields}


BATCH = {
    "echo": batch([{"id": "a", "op": "echo", "input": {"hello": "world"}}]),
    "all-ops": batch([
        {"id": "a", "op": "echo", "input": {"hello": "world"}},
        {"id": "b", "op": "sleep", "input": {"ms": 50}, "timeout_ms": 1000},
        {"id": "c", "op": "hash", "input": {"algorithm": "sha256", "data": "abc"}, "depends_on": ["a"]},
        {"id": "d", "op": "hash", "input": {"algorithm": "sha512", "data": "YWJj", "encoding": "base64"}},
        {"id": "e", "op": "fail", "input": {"code": "boom", "message": "on purpose"}},
    ], concurrency=8, timeout_ms=30000, on_error="continue"),
    "stop": batch([{"id": "a", "op": "fail", "input": {"code": "x", "message": "y"}},
                   {"id": "b", "op": "sleep", "input": {"ms": 10}}], on_error="stop"),
    "diamond": batch([
        {"id": "a", "op": "echo", "input": 1},
        {"id": "b", "op": "echo", "input": 2, "depends_on": ["a"]},
        {"id": "c", "op": "echo", "input": 3, "depends_on": ["a"]},
        {"id": "d", "op": "echo", "input": 4, "depends_on": ["b", "c"]},
    ]),
    "references": batch([
        {"id": "a", "op": "echo", "input": {"x": [1, {"y": "z"}], "a/b": {"m~n": True}}},
        {"id": "b", "op": "echo", "input": {"whole": {"$ref": "a"}, "deep": {"$ref": "a#/x/1/y"},
                                            "escaped": {"$ref": "a#/a~1b/m~0n"}, "empty": {"$ref": "a#"}}},
        {"id": "c", "op": "echo", "input": {"$literal": {"$ref": "not a reference"}}},
        {"id": "d", "op": "hash", "input": {"algorithm": "sha256", "data": {"$ref": "b#/deep"}}},
    ]),
    "http": batch([
        {"id": "user", "op": "http", "input": http(method="GET", path="/users/42")},
        {"id": "orders", "op": "http", "input": http(
            path="/customers/{cid}/orders", params={"cid": {"$ref": "user#/body/customer_id"}},
            query={"limit": 10, "tags": ["a", "b"], "all": True}, headers={"accept-language": "de"})},
        {"id": "note", "op": "http", "input": http(
            method="POST", path="/notes", body={"about": {"$ref": "user#/body/id"}, "text": "batched"},
            idempotency_key="note-81", success_status=[200, 201], retry={"max_attempts": 2}),
         "timeout_ms": 5000},
        {"id": "public", "op": "http", "input": {"upstream": "readonly", "path": "/public/x"}},
    ]),
    # Refused, each for a reason the tests check.
    "bad-not-json": '{"tasks": [',
    "bad-trailing": '{"tasks": []} x',
    "bad-empty": '{"tasks": []}',
    "bad-duplicate-id": batch([{"id": "a", "op": "echo"}, {"id": "a", "op": "echo"}]),
    "bad-cycle": batch([{"id": "a", "op": "echo", "depends_on": ["b"]},
                        {"id": "b", "op": "echo", "depends_on": ["a"]}]),
    "bad-reference-cycle": batch([{"id": "a", "op": "echo", "input": {"$ref": "b"}},
                                  {"id": "b", "op": "echo", "input": {"$ref": "a#/x"}}]),
    "bad-reference-self": batch([{"id": "a", "op": "echo", "input": {"$ref": "a"}}]),
    "bad-reference-pointer": batch([{"id": "a", "op": "echo"},
                                    {"id": "b", "op": "echo", "input": {"$ref": "a#x~2"}}]),
    "bad-reference-extra": batch([{"id": "a", "op": "echo"},
                                  {"id": "b", "op": "echo", "input": {"$ref": "a", "other": 1}}]),
    "bad-unknown-op": batch([{"id": "a", "op": "nope"}]),
    "bad-fields": batch([{"id": "", "op": "sleep", "input": {"ms": -1}, "timeout_ms": 0, "extra": 1}],
                        concurrency=0, on_error="maybe"),
    "bad-deep": '{"tasks": [{"id": "a", "op": "echo", "input": ' + "[" * 70 + "]" * 70 + "}]}",
    "bad-utf8": b'{"tasks": [{"id": "\xff\xfe", "op": "echo"}]}',
    "bad-escape": '{"tasks": [{"id": "\\ud800", "op": "echo", "input": "\\u00zz"}]}',
    "bad-http": batch([
        {"id": "a", "op": "http", "input": {"upstream": "http://127.0.0.1:9", "path": "/x"}},
        {"id": "b", "op": "http", "input": http(path="/../x")},
        {"id": "c", "op": "http", "input": http(path="/a/%2e%2e/b")},
        {"id": "d", "op": "http", "input": http(path="//evil/x")},
        {"id": "e", "op": "http", "input": http(path="/x\\y")},
        {"id": "f", "op": "http", "input": http(headers={"Authorization": "Bearer x", "host": "h"})},
        {"id": "g", "op": "http", "input": http(path="/u/{id}", params={"id": ".."})},
        {"id": "h", "op": "http", "input": {"upstream": "readonly", "path": "/private", "method": "DELETE"}},
        {"id": "i", "op": "http", "input": http(method="TRACE", url="http://evil", retry={"max_attempts": 9})},
    ]),
}

JSON = {
    "object": '{"a": [1, -2.5e+3, true, false, null, "s\\u00e9\\n"], "b": {}, "c": []}',
    "scalars": '"\\ud83d\\ude00"',
    "number": "-0.0e-0",
    "nested": "[" * 40 + "]" * 40,
    "keys": '{"a": 1, "a": 2, "\\u0061": 3}',
    "bad-number": "[01, 1., -, 1e]",
    "bad-control": '"a\tb"',
    "bad-utf8": b'"\xc3\x28"',
    "bad-surrogate": '"\\udc00\\ud800"',
    "bad-trailing": "{} {}",
}

OUTPUT = '{"status": 200, "body": {"id": 7, "items": [{"n": "a"}, {"n": "b"}], "a/b": 1, "m~n": 2}}'
REFERENCES = {
    "whole": ['{"x": {"$ref": "t"}}', OUTPUT, "/body/items/1/n"],
    "pointers": ['[{"$ref": "t#/body/items/0"}, {"$ref": "t#/body/a~1b"}, {"$ref": "t#/body/m~0n"}]', OUTPUT, "/body/a~1b"],
    "literal": ['{"$literal": {"$ref": "t#/x"}, "y": {"$ref": "t#/status"}}', OUTPUT, ""],
    "missing": ['{"a": {"$ref": "t#/nothing/here"}}', OUTPUT, "/body/items/9"],
    "bad-pointer": ['{"a": {"$ref": "t#x"}, "b": {"$ref": "t#/~2"}, "c": {"$ref": 5}}', "[]", "~"],
    "copies": ['[' + ",".join(['{"$ref": "t"}'] * 20) + ']', OUTPUT, "/-"],
}

HTTP_RULES = {
    "plain": ["/users/{id}/orders", "42", "accept-language", "de", "120"],
    "date": ["/a/b", "x y", "x-trace", "abc\tdef", "Sun, 06 Nov 1994 08:49:37 GMT"],
    "rfc850": ["/{a}/{b_c}", "..", "X-Custom", "v", "Sunday, 06-Nov-94 08:49:37 GMT"],
    "asctime": ["/p/%41", "a/b", "Authorization", "Bearer", "Sun Nov  6 08:49:37 1994"],
    "bad-path": ["/a/../b", ".", "host", "a\r\nb", "-1"],
    "bad-encoded": ["/a/%2e%2E/%2F", "%2e", "transfer-encoding", "\x00", "Thu, 01 Jan 99999 00:00:00 GMT"],
    "bad-braces": ["/{a{b}}", "", "proxy-authorization", "", "99999999999999999999999"],
}


def write(target, cases):
    folder = os.path.join(ROOT, target)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    for name, value in cases.items():
        if isinstance(value, list):
            value = b"\0".join(part.encode() for part in value)
        elif isinstance(value, str):
            value = value.encode()
        with open(os.path.join(folder, name), "wb") as file:
            file.write(value)


write("batch", BATCH)
write("json", JSON | {name: value for name, value in BATCH.items() if not name.startswith("bad")})
write("references", REFERENCES)
write("http-rules", HTTP_RULES)
