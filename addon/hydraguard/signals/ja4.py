"""JA4 TLS client fingerprint (FoxIO spec, technical_details/JA4.md) and SDK runtime claims.

`ja4_from_raw` parses a ClientHello itself (TLS record, handshake message or bare body);
`ja4` reads mitmproxy's `ClientHello`. Both share `ja4_from_fields`. Nothing here raises on
malformed input: unparseable data gives "".
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ClientHelloFields",
    "alpn_chars",
    "is_grease",
    "ja4",
    "ja4_from_fields",
    "ja4_from_raw",
    "ja4_r_from_raw",
    "parse_client_hello",
    "sdk_runtime_claim",
]

_VERSIONS = {
    0x0304: "13",
    0x0303: "12",
    0x0302: "11",
    0x0301: "10",
    0x0300: "s3",
    0x0002: "s2",
    0xFEFF: "d1",
    0xFEFD: "d2",
    0xFEFC: "d3",
}
_EXT_SNI = 0x0000
_EXT_ALPN = 0x0010
_EXT_SIGALGS = 0x000D
_EXT_VERSIONS = 0x002B
_EMPTY_HASH = "000000000000"
_GREASE = frozenset(0x0A0A + 0x1010 * i for i in range(16))
_HEX4 = "{:04x}".format


def is_grease(value: int) -> bool:
    """True for the 16 GREASE values 0x0a0a, 0x1a1a, ... 0xfafa (RFC 8701)."""
    return (value & 0x0F0F) == 0x0A0A and (value >> 8) == (value & 0xFF)


@dataclass(frozen=True, slots=True)
class ClientHelloFields:
    """The ClientHello fields JA4 needs, GREASE still included, in wire order."""

    legacy_version: int
    ciphers: tuple[int, ...]
    extensions: tuple[int, ...]
    supported_versions: tuple[int, ...]
    signature_algorithms: tuple[int, ...]
    alpn_first: bytes | None  # first ALPN protocol, None when there is no ALPN value


def _u16_list(data: bytes, start: int, end: int) -> tuple[int, ...]:
    n = (min(end, len(data)) - start) // 2
    return struct.unpack_from(f">{n}H", data, start) if n > 0 else ()


def _parse_ext_body(ext_type: int, body: bytes) -> Any:
    """Decode the extension bodies JA4 looks into; tolerate truncation."""
    if ext_type == _EXT_VERSIONS:  # u8 length, then u16 versions
        if not body:
            return ()
        return _u16_list(body, 1, 1 + body[0])
    if ext_type == _EXT_SIGALGS:  # u16 length, then u16 schemes
        if len(body) < 2:
            return ()
        return _u16_list(body, 2, 2 + int.from_bytes(body[:2], "big"))
    if ext_type == _EXT_ALPN:  # u16 list length, then u8-prefixed names
        if len(body) < 3:
            return None
        n = body[2]
        return bytes(body[3 : 3 + n])
    return None


def _fields_from_extensions(
    legacy_version: int, ciphers: Iterable[int], exts: Iterable[tuple[int, bytes]]
) -> ClientHelloFields:
    types: list[int] = []
    versions: tuple[int, ...] = ()
    sigalgs: tuple[int, ...] = ()
    alpn: bytes | None = None
    for ext_type, body in exts:
        types.append(ext_type)
        if ext_type == _EXT_VERSIONS:
            versions = _parse_ext_body(ext_type, body)
        elif ext_type == _EXT_SIGALGS:
            sigalgs = _parse_ext_body(ext_type, body)
        elif ext_type == _EXT_ALPN:
            alpn = _parse_ext_body(ext_type, body)
    return ClientHelloFields(legacy_version, tuple(ciphers), tuple(types), versions, sigalgs, alpn)


def _strip_framing(data: bytes) -> bytes | None:
    """Return the ClientHello body from a TLS record stream, handshake message or bare body."""
    if not data:
        return None
    if data[0] == 0x16:  # TLS records: concatenate handshake fragments
        out = bytearray()
        i = 0
        while i + 5 <= len(data) and data[i] == 0x16:
            n = int.from_bytes(data[i + 3 : i + 5], "big")
            out += data[i + 5 : i + 5 + n]
            i += 5 + n
        data = bytes(out)
        if not data:
            return None
    if data[0] == 0x01:  # handshake message: type 1, u24 length
        if len(data) < 4:
            return None
        n = int.from_bytes(data[1:4], "big")
        return data[4 : 4 + n]
    if data[0] in (0x03, 0x00, 0xFE):  # bare body starts with legacy_version
        return data
    return None


def parse_client_hello(data: bytes, dtls: bool = False) -> ClientHelloFields | None:
    """Parse a ClientHello (record, handshake or body). Truncated extensions are cut, not fatal."""
    try:
        body = _strip_framing(bytes(data))
        if body is None or len(body) < 35:
            return None
        legacy = int.from_bytes(body[0:2], "big")
        i = 34
        sid = body[i]
        i += 1 + sid
        if dtls:  # DTLS has a cookie after the session id
            if i >= len(body):
                return None
            i += 1 + body[i]
        if i + 2 > len(body):
            return None
        n = int.from_bytes(body[i : i + 2], "big")
        if i + 2 + n > len(body):
            return None
        ciphers = _u16_list(body, i + 2, i + 2 + n)
        i += 2 + n
        if i >= len(body):
            return None
        i += 1 + body[i]  # compression methods
        exts: list[tuple[int, bytes]] = []
        if i + 2 <= len(body):
            end = min(len(body), i + 2 + int.from_bytes(body[i : i + 2], "big"))
            i += 2
            while i + 4 <= end:
                ext_type = int.from_bytes(body[i : i + 2], "big")
                ext_len = int.from_bytes(body[i + 2 : i + 4], "big")
                if i + 4 + ext_len > end:
                    break
                exts.append((ext_type, body[i + 4 : i + 4 + ext_len]))
                i += 4 + ext_len
        return _fields_from_extensions(legacy, ciphers, exts)
    except Exception:  # never raise on hostile bytes
        return None


def alpn_chars(value: bytes | None) -> str:
    """JA4 ALPN field: first+last char if both ASCII alphanumeric, else first+last hex digit."""
    if not value:
        return "00"
    first, last = value[0], value[-1]
    if _is_alnum(first) and _is_alnum(last):
        return chr(first) + chr(last)
    h = value.hex()
    return h[0] + h[-1]


def _is_alnum(b: int) -> bool:
    return 0x30 <= b <= 0x39 or 0x41 <= b <= 0x5A or 0x61 <= b <= 0x7A


def _hash12(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()[:12]


def _ja4_parts(f: ClientHelloFields, transport: str) -> tuple[str, str, str]:
    g = _GREASE
    ciphers = [c for c in f.ciphers if c not in g]
    exts = [e for e in f.extensions if e not in g]
    versions = [v for v in f.supported_versions if v not in g]
    if versions:
        # DTLS versions count downwards (0xfefc is DTLS 1.3)
        version = min(versions) if all(v >= 0xFE00 for v in versions) else max(versions)
    else:
        version = f.legacy_version
    a = (
        f"{transport}{_VERSIONS.get(version, '00')}"
        f"{'d' if _EXT_SNI in exts else 'i'}"
        f"{min(len(ciphers), 99):02d}{min(len(exts), 99):02d}{alpn_chars(f.alpn_first)}"
    )
    b = ",".join(map(_HEX4, sorted(ciphers)))
    c = ",".join(map(_HEX4, sorted(e for e in exts if e != _EXT_SNI and e != _EXT_ALPN)))
    sigs = [s for s in f.signature_algorithms if s not in g]
    if c and sigs:
        c += "_" + ",".join(map(_HEX4, sigs))
    return a, b, c


def ja4_from_fields(fields: ClientHelloFields, transport: str = "t") -> str:
    """JA4 fingerprint of already parsed fields ("t" TCP, "q" QUIC, "d" DTLS)."""
    a, b, c = _ja4_parts(fields, transport)
    return f"{a}_{_hash12(b) if b else _EMPTY_HASH}_{_hash12(c) if c else _EMPTY_HASH}"


def ja4_from_raw(client_hello_bytes: bytes, transport: str = "t") -> str:
    """JA4 of raw ClientHello bytes (TLS record, handshake message or body); "" if unparseable."""
    f = parse_client_hello(client_hello_bytes, dtls=transport == "d")
    return ja4_from_fields(f, transport) if f else ""


def ja4_r_from_raw(client_hello_bytes: bytes, transport: str = "t") -> str:
    """The spec's raw (JA4_r) form: the sorted lists instead of their hashes; "" if unparseable."""
    f = parse_client_hello(client_hello_bytes, dtls=transport == "d")
    return "_".join(_ja4_parts(f, transport)) if f else ""


def ja4(client_hello: Any, transport: str = "t") -> str:
    """JA4 of a `mitmproxy.tls.ClientHello` (cipher_suites, extensions, raw_bytes); "" on error.

    mitmproxy does not expose the legacy version, so it is read from the first two bytes of
    `raw_bytes(wrap_in_record=False)`. Extension bodies are its raw `(type, bytes)` pairs.
    """
    try:
        raw = client_hello.raw_bytes(wrap_in_record=False)
        legacy = int.from_bytes(raw[:2], "big") if len(raw) >= 2 else 0
        fields = _fields_from_extensions(
            legacy, client_hello.cipher_suites, client_hello.extensions
        )
        return ja4_from_fields(fields, transport)
    except Exception:
        return ""


# --- SDK runtime claims -----------------------------------------------------------------------

_STAINLESS_LANG = {
    "python": "python",
    "js": "node",
    "javascript": "node",
    "typescript": "node",
    "node": "node",
    "go": "go",
    "golang": "go",
    "java": "java",
    "kotlin": "java",
    "ruby": "ruby",
    "csharp": "dotnet",
    "dotnet": "dotnet",
    "php": "php",
    "rust": "rust",
}
_JS_RUNTIMES = {"node": "node", "deno": "deno", "bun": "bun", "edge": "edge", "workerd": "edge"}
# (prefix of the lower-cased User-Agent, claim); first match wins.
_UA_PREFIXES: tuple[tuple[str, str], ...] = (
    ("anthropic/python", "python"),
    ("openai/python", "python"),
    ("anthropic/js", "node"),
    ("openai/js", "node"),
    ("anthropic/go", "go"),
    ("openai/go", "go"),
    ("anthropic/java", "java"),
    ("openai/java", "java"),
    ("curl/", "curl"),
    ("wget/", "wget"),
    ("python-requests/", "python"),
    ("python-httpx/", "python"),
    ("python-urllib", "python"),
    ("aiohttp/", "python"),
    ("httpie/", "python"),
    ("go-http-client/", "go"),
    ("node-fetch", "node"),
    ("node", "node"),
    ("undici", "node"),
    ("axios/", "node"),
    ("got ", "node"),
    ("bun/", "bun"),
    ("deno/", "deno"),
    ("okhttp/", "java"),
    ("java/", "java"),
    ("apache-httpclient/", "java"),
    ("ruby", "ruby"),
    ("faraday", "ruby"),
    ("reqwest", "rust"),
    ("postmanruntime/", "postman"),
    ("mozilla/", "browser"),
)


def _header(headers: Any, name: str) -> str:
    """Case-insensitive first value from a Mapping or a list of (name, value) pairs."""
    try:
        if isinstance(headers, Mapping):
            get = getattr(headers, "get", None)
            v = get(name) if get else None
            if v is None:
                for k in headers:
                    if str(k).lower() == name:
                        v = headers[k]
                        break
        else:
            v = None
            for k, val in headers:
                k = k.decode("latin-1") if isinstance(k, bytes) else str(k)
                if k.lower() == name:
                    v = val
                    break
        if isinstance(v, bytes):
            v = v.decode("latin-1")
        return v.strip() if isinstance(v, str) else ""
    except Exception:
        return ""


def sdk_runtime_claim(headers: Mapping[str, str] | Sequence[tuple[str, str]]) -> str | None:
    """The client runtime the request headers claim: "python", "node", "go", "curl", ... or None.

    `X-Stainless-Lang` (sent by the official SDKs) wins, refined for JS by `X-Stainless-Runtime`
    (node, deno, bun, edge, browser); otherwise the User-Agent prefix decides.
    """
    lang = _header(headers, "x-stainless-lang").lower()
    if lang:
        claim = _STAINLESS_LANG.get(lang)
        if claim == "node":
            rt = _header(headers, "x-stainless-runtime").lower()
            if rt.startswith("browser"):
                return "browser"
            return _JS_RUNTIMES.get(rt, "node")
        if claim:
            return claim
        clean = "".join(ch for ch in lang if ch.isalnum())[:16]
        return clean or None
    ua = _header(headers, "user-agent").lower()
    if not ua:
        return None
    for prefix, claim in _UA_PREFIXES:
        if ua.startswith(prefix):
            return claim
    return None
