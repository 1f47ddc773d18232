#!/usr/bin/python3
"""A plugin for the tests: it answers, crashes or hangs on request, and counts its starts."""
import json
import os
import sys
import time

starts = os.environ.get("CAPSULE_TEST_PLUGIN_STARTS")
if starts:
    with open(starts, "a") as f:
        f.write("start\n")

METHODS = [{"name": n, "doc": d, "params": p} for n, d, p in [
    ("echo", "Return the value.", [{"name": "value", "kind": "any"}]),
    ("crash", "Exit at once.", []),
    ("hang", "Never answer.", []),
    ("fail", "Raise ValueError.", []),
]]

for line in sys.stdin:
    request = json.loads(line)
    if request["method"] == "describe":
        result = {"summary": "A plugin that misbehaves on request.", "methods": METHODS + [{"name": "__bad", "params": []}]}
    else:
        method, args = request["params"]["method"], request["params"]["args"]
        if method == "crash":
            os._exit(3)
        if method == "hang":
            time.sleep(3600)
        if method == "fail":
            print(json.dumps({"jsonrpc": "2.0", "id": request["id"],
                              "error": {"code": -32000, "message": "it failed", "data": {"exception": "ValueError"}}}), flush=True)
            continue
        result = args["value"]
    print(json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": result}), flush=True)
