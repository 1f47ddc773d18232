"""Capsule worker: the Python side of the sandbox, see docs/protocol.md. Entry point: main.serve(fd)."""
