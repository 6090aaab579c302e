"""mitmdump script for bench/run.py's "streaming mitmdump" column: bare mitmdump that streams
SSE replies chunk by chunk (an identity stream callable, as hydraguard must, so that the first
token is not held back) instead of buffering them. The cost of streaming itself, apart from
hydraguard's metering."""


class StreamSse:
    """Set an identity stream callable on every text/event-stream response."""

    def responseheaders(self, flow) -> None:
        if "text/event-stream" in flow.response.headers.get("content-type", ""):
            flow.response.stream = lambda chunk: chunk or []


addons = [StreamSse()]
