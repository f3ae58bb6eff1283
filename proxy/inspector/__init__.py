"""The live inspector (opt-in): recent exchanges, redacted, in a page served at /_proxy/.

`observer` keeps a bounded ring of recent exchanges and publishes their changes,
throttled; `record` turns one into what the page sees (the log line's fields and
redacted headers); `feed` fans updates out to open pages without ever waiting;
`routes` serves the page, its assets, the event stream and capture files.
"""

from proxy.inspector.observer import Inspector

__all__ = ["Inspector"]
