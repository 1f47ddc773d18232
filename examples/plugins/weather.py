#!/usr/bin/python3
"""A capsule plugin: JSON-RPC 2.0 on stdin/stdout, one message a line (docs/capabilities.md).

Policy (level trusted):
    [capabilities.custom.weather]
    command = ["/usr/bin/python3", "/path/to/examples/plugins/weather.py"]

Inside the sandbox:
    print(weather.forecast("Lyon", days=2))
"""
import json
import sys

DESCRIPTION = {
    "summary": "Made-up weather forecasts (an example plugin).",
    "methods": [
        {"name": "forecast", "doc": "A forecast for a city: one entry a day.", "level": "trusted",
         "params": [{"name": "city", "kind": "string"}, {"name": "days", "kind": "integer", "default": 3}]},
    ],
}


def forecast(city, days):
    if not 1 <= days <= 14:
        raise ValueError("days must be from 1 to 14")
    return [{"day": day + 1, "city": city, "sky": ["sun", "cloud", "rain"][(len(city) + day) % 3]} for day in range(days)]


def handle(request):
    if request["method"] == "describe":
        return DESCRIPTION
    if request["method"] == "call":
        params = request["params"]
        if params["method"] == "forecast":
            return forecast(**params["args"])
    raise LookupError(f"no method {request['method']}")


for line in sys.stdin:
    request = json.loads(line)
    try:
        answer = {"jsonrpc": "2.0", "id": request["id"], "result": handle(request)}
    except Exception as exc:  # the code gets the same exception type, with the message
        answer = {"jsonrpc": "2.0", "id": request["id"],
                  "error": {"code": -32000, "message": str(exc), "data": {"exception": type(exc).__name__}}}
    print(json.dumps(answer), flush=True)
