#!/usr/bin/env python3
"""Replaces one section of RELIABILITY.md, between <!-- NAME --> and <!-- /NAME -->, with the
text of a file. Used by `make fuzz` and `make soak` to record their latest full run.

Usage: reliability.py NAME FILE
"""
import pathlib
import sys

name, source = sys.argv[1], pathlib.Path(sys.argv[2])
target = pathlib.Path(__file__).resolve().parent.parent / "RELIABILITY.md"
text = target.read_text()
start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
before, found, rest = text.partition(start)
if not found or end not in rest:
    sys.exit(f"RELIABILITY.md has no {start} ... {end} section")
target.write_text(before + start + "\n" + source.read_text().strip() + "\n" + end + rest.split(end, 1)[1])
