"""`codex-path-proxy doctor`: find what keeps the clients on this machine from reaching
chatgpt.com through this proxy, name the fix for each, and (with --fix) make the config
edits, keeping every other byte of each file.

One module per area (listener, openclaw, codex, environment, wayout), each reading its
files into a state and judging it into findings; baseurl judges base URLs; json5edit and
tomledit edit without disturbing; fix writes with backups; render prints; run wires.
"""
