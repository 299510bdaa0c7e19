"""Isolated code execution (local namespaces, docker). Arrives with the sandbox issue."""
