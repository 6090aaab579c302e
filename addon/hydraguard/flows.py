"""From a mitmproxy flow to what the pipeline reads, and back: the RequestView of a flow, a
proxy-made response, the stream callable of a metered response, credential header edits."""

from __future__ import annotations

from collections.abc import Callable

from mitmproxy import http

from .pipeline import Exchange, RequestView

ARRIVED = "hydraguard_arrived"  # flow.metadata: when the request began to arrive (epoch s)


def request_id(flow: http.HTTPFlow) -> str:
    return "req_hg" + flow.id.replace("-", "")[:22]


def view(flow: http.HTTPFlow, request_id: str) -> RequestView:
    req = flow.request
    joined: dict[str, str] = {}  # one pass over the raw fields; lookups are then O(1)
    repeated: dict[str, list[str]] = {}  # every line of the headers sent more than once
    for k, v in req.headers.fields:
        name = k.decode("latin-1").lower()
        value = v.decode("utf-8", "surrogateescape")
        if name in joined:
            if name not in repeated:
                repeated[name] = [joined[name]]
            repeated[name].append(value)
            joined[name] = f"{joined[name]}, {value}"
        else:
            joined[name] = value

    def values(name: str) -> list[str]:
        got = repeated.get(name)
        if got is not None:
            return got
        return [joined[name]] if name in joined else []

    peer = flow.client_conn.peername[0] if flow.client_conn.peername else None
    return RequestView(
        method=req.method, path=req.path, peer=peer, headers=joined.get,
        body=req.raw_content or b"", content_encoding=joined.get("content-encoding", ""),
        request_id=request_id, header_names=frozenset(joined),
        arrived=flow.metadata.get(ARRIVED) or req.timestamp_start, header_values=values,
    )


def respond(flow: http.HTTPFlow, code: int, body: bytes, headers: dict[str, str]) -> None:
    flow.response = http.Response.make(code, body, headers)
    flow.metadata["hydraguard_answered"] = True


def metered(feed: Callable[[bytes], bytes | None], progress: Callable[[], None] | None
             ) -> Callable[[bytes], bytes | list]:
    """The stream callable of a metered response. mitmproxy sends a b"" data chunk as
    "0\r\n\r\n" (the chunked terminator) to an HTTP/1.1 client; an empty list sends nothing."""
    if progress is None:
        return lambda chunk: feed(chunk) or []

    def stream(chunk: bytes) -> bytes | list:
        progress()  # the upstream is not silent (read timeout)
        return feed(chunk) or []
    return stream


def edit_credentials(flow: http.HTTPFlow, ex: Exchange) -> None:
    """settings.extra_credentials: strip: keep only the credential the upstream reads."""
    for name, how in ex.header_edits:
        lines = flow.request.headers.get_all(name)
        flow.request.headers.set_all(name, lines[:1] if how == "first" else [])


def hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
