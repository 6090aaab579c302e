"""TLS to the proxy (`hydraguard run --certs`): real ClientHellos from Python's ssl module and from
curl; the JA4 the proxy logs must equal both `ja4_from_raw` of the same client's ClientHello
captured by a plain TCP listener and a small independent JA4 computation written here from the
FoxIO spec. A claimed SDK runtime whose TLS stack does not match is denied."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import shutil
import socket
import ssl
import struct
import subprocess
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hydraguard.signals.ja4 import ja4_from_raw
from hydraguard_dev.procs import proxy

pytestmark = pytest.mark.e2e

CURL = shutil.which("curl")


# --- an independent JA4 (FoxIO technical_details/JA4.md), no hydraguard code -------------------

def _u16s(b: bytes) -> list[int]:
    return [int.from_bytes(b[i:i + 2], "big") for i in range(0, len(b) - 1, 2)]


def independent_ja4(record: bytes) -> str:
    assert record[0] == 0x16 and record[5] == 0x01  # handshake record, ClientHello
    body = record[9:9 + int.from_bytes(record[6:9], "big")]
    version = int.from_bytes(body[:2], "big")
    p = 34
    p += 1 + body[p]  # session id
    n = int.from_bytes(body[p:p + 2], "big")
    ciphers = _u16s(body[p + 2:p + 2 + n])
    p += 2 + n
    p += 1 + body[p]  # compression methods
    end = p + 2 + int.from_bytes(body[p:p + 2], "big")
    p += 2
    exts, sigalgs, alpn, versions = [], [], b"", []
    while p < end:
        t, ln = struct.unpack(">HH", body[p:p + 4])
        data = body[p + 4:p + 4 + ln]
        exts.append(t)
        if t == 0x000D:
            sigalgs = _u16s(data[2:])
        elif t == 0x0010:
            alpn = data[3:3 + data[2]]
        elif t == 0x002B:
            versions = _u16s(data[1:])
        p += 4 + ln

    def grease(v: int) -> bool:
        return v & 0x0F0F == 0x0A0A and v >> 8 == v & 0xFF

    ciphers = [c for c in ciphers if not grease(c)]
    exts = [e for e in exts if not grease(e)]
    versions = [v for v in versions if not grease(v)]
    ver = {0x0304: "13", 0x0303: "12", 0x0302: "11", 0x0301: "10"}[max(versions or [version])]
    a = "t" + ver + ("d" if 0 in exts else "i") + f"{min(len(ciphers), 99):02d}" \
        + f"{min(len(exts), 99):02d}" + (chr(alpn[0]) + chr(alpn[-1]) if alpn else "00")
    b = hashlib.sha256(",".join(f"{c:04x}" for c in sorted(ciphers)).encode()).hexdigest()[:12]
    c_in = ",".join(f"{e:04x}" for e in sorted(e for e in exts if e not in (0, 0x10)))
    sig = [s for s in sigalgs if not grease(s)]
    if sig:
        c_in += "_" + ",".join(f"{s:04x}" for s in sig)
    return f"{a}_{b}_{hashlib.sha256(c_in.encode()).hexdigest()[:12]}"


def test_independent_ja4_agrees_on_a_synthetic_hello():
    # FoxIO's published pcap examples are checked in test_signals_ja4; this checks the test's
    # own JA4 code on a hand-built hello (3 suites, 4 extensions, SNI, ALPN h2, TLS 1.3).
    suites = [0x1301, 0x1302, 0x1303]
    ext = b"".join(struct.pack(">HH", t, len(d)) + d for t, d in [
        (0x0000, b"\x00\x0e\x00\x00\x0bexample.com"),
        (0x0010, b"\x00\x03\x02h2"),
        (0x000D, b"\x00\x04\x04\x03\x08\x04"),
        (0x002B, b"\x02\x03\x04"),
    ])
    body = b"\x03\x03" + b"\x00" * 32 + b"\x00" + struct.pack(">H", 6) + \
        b"".join(struct.pack(">H", s) for s in suites) + b"\x01\x00" + \
        struct.pack(">H", len(ext)) + ext
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    record = b"\x16\x03\x01" + struct.pack(">H", len(hs)) + hs
    assert independent_ja4(record) == ja4_from_raw(record)
    assert independent_ja4(record).startswith("t13d0304h2_")


# --- fixtures ----------------------------------------------------------------------------------

def self_signed(path: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(key, hashes.SHA256()))
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption())
                     + cert.public_bytes(serialization.Encoding.PEM))
    return path


class HelloRecorder:
    """A TCP listener that keeps the first TLS record of each connection, then hangs up."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.records: list[bytes] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _recv(self, conn: socket.socket, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                break
            buf += chunk
        return buf

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                head = self._recv(conn, 5)
                if len(head) == 5:
                    self.records.append(head + self._recv(conn, int.from_bytes(head[3:], "big")))

    def close(self) -> None:
        self.sock.close()


def python_context(cafile: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cafile))
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def python_post(port: int, cafile: Path, key: str, extra: str = "") -> tuple[int, str]:
    """A POST over Python's ssl (SNI localhost); (status, response headers)."""
    body = b'{"model":"m","max_tokens":2,"messages":[{"role":"user","content":"hi"}]}'
    req = (f"POST /v1/messages HTTP/1.1\r\nHost: localhost\r\nx-api-key: {key}\r\n"
           f"content-type: application/json\r\ncontent-length: {len(body)}\r\n{extra}"
           "connection: close\r\n\r\n").encode() + body
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with python_context(cafile).wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(req)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    return int(head.split()[1]), head


def curl_post(port: int, key: str, *headers: str) -> subprocess.CompletedProcess:
    cmd = [CURL, "-sk", "--http1.1", "--max-time", "10", "-o", "/dev/null",
           "-w", "%{http_code}", "--resolve", f"localhost:{port}:127.0.0.1",
           f"https://localhost:{port}/v1/messages", "-H", f"x-api-key: {key}",
           "-H", "content-type: application/json",
           "-d", '{"model":"m","max_tokens":2,"messages":[{"role":"user","content":"hi"}]}']
    for h in headers:
        cmd += ["-H", h]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def captured_python_hello(cafile: Path) -> bytes:
    rec = HelloRecorder()
    try:
        with pytest.raises((OSError, ssl.SSLError)):
            python_post(rec.port, cafile, "k")
    finally:
        rec.close()
    (record,) = rec.records
    return record


def captured_curl_hello() -> bytes:
    rec = HelloRecorder()
    try:
        assert curl_post(rec.port, "k").returncode != 0
    finally:
        rec.close()
    (record,) = rec.records
    return record


@pytest.fixture(scope="module")
def tls_gw(stub, tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    pem = self_signed(d / "proxy.pem")
    py_ja4 = ja4_from_raw(captured_python_hello(pem))
    rules = d / "rules.yaml"
    rules.write_text(f"""
version: 1
indicators:
  tls:
    sdk_fingerprints:
      python: [{py_ja4}]
rules:
  - id: spoofed-sdk
    when: {{signal: tls.sdk_mismatch}}
    action: deny
    reason: "client not accepted"
""")
    with proxy(stub.url, rules, extra=["--certs", str(pem)]) as p:
        p.python_ja4 = py_ja4
        yield p, pem


def test_python_ssl_client_ja4_logged_and_matches(tls_gw):
    gw, pem = tls_gw
    record = captured_python_hello(pem)
    expected = ja4_from_raw(record)
    assert expected == independent_ja4(record)
    assert expected[:4] == "t13d" and expected[8:10] == "h1"  # TLS 1.3, SNI, ALPN http/1.1
    status, _ = python_post(gw.port, pem, "sk-py-1", "x-stainless-lang: python\r\n")
    assert status == 200
    rec = gw.wait_lines(1)[-1]
    assert (rec["action"], rec["rule"], rec["status"]) == ("allow", "default", 200)
    assert rec["signals"] == {"tls.ja4": expected, "tls.ja4_accounts": 1,
                              "tls.claimed_runtime": "python"}


@pytest.mark.skipif(CURL is None, reason="curl not installed")
def test_curl_client_ja4_logged_and_matches(tls_gw):
    gw, _ = tls_gw
    record = captured_curl_hello()
    expected = ja4_from_raw(record)
    assert expected == independent_ja4(record)
    n = len(gw.lines())
    out = curl_post(gw.port, "sk-curl-1")
    assert out.stdout == "200", out
    rec = gw.wait_lines(n + 1)[-1]
    assert rec["signals"] == {"tls.ja4": expected, "tls.ja4_accounts": 1,
                              "tls.claimed_runtime": "curl"}
    assert expected != gw.python_ja4  # another TLS stack, another fingerprint
    # curl's TLS stack claiming to be the official Python SDK: denied
    out = curl_post(gw.port, "sk-curl-2", "x-stainless-lang: python",
                    "user-agent: Anthropic/Python 0.40.0")
    assert out.stdout == "403", out
    rec = gw.wait_lines(n + 2)[-1]
    assert (rec["action"], rec["rule"], rec["status"]) == ("deny", "spoofed-sdk", 403)
    assert rec["signals"] == {"tls.ja4": expected, "tls.ja4_accounts": 2,
                              "tls.claimed_runtime": "python", "tls.sdk_mismatch": True}


def test_plain_http_on_the_same_port_has_no_tls_signals(tls_gw):
    import httpx

    gw, _ = tls_gw
    n = len(gw.lines())
    r = httpx.post(gw.url + "/v1/messages", headers={"x-api-key": "sk-plain"},
                   json={"model": "m", "max_tokens": 1, "messages": []})
    assert r.status_code == 200
    assert "signals" not in gw.wait_lines(n + 1)[-1]
