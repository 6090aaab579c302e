"""JA4: spec examples, FoxIO published pcap ClientHellos, real Python ssl ClientHellos."""

from __future__ import annotations

import hashlib
import ssl
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mitmproxy.tls import ClientHello

from hydraguard.signals.ja4 import (
    ClientHelloFields,
    alpn_chars,
    is_grease,
    ja4,
    ja4_from_fields,
    ja4_from_raw,
    ja4_r_from_raw,
    parse_client_hello,
    sdk_runtime_claim,
)

# ClientHello records extracted from pcaps in github.com/FoxIO-LLC/ja4 (pcap/<name>), with the
# JA4 that FoxIO publishes for them (python/test/testdata/<name>.json and the Rust insta
# snapshots). Exception: tls-non-ascii-alpn, whose first ALPN value is 0xba 0xad: FoxIO's tools
# print "99" (an older rule) but technical_details/JA4.md now says to print the first and last hex
# digits, "bd"; we follow the spec.
FOXIO_HELLOS = [
    (
        "https3-301-get.pcap",
        "t10d230100_6a57a6f57151_000000000000",
        "16030100720100006e030152937a55b696cc98ae7b08ec10e765c98aefa82db3081771f8627617b967980800"
        "002e00390038003500160013000a00330032002f009a00990096000500040015001200090014001100080006"
        "000300ff0100001700000013001100000e7777772e6769746875622e636f6d",
    ),
    (
        "https-connect.pcap",
        "t12i860500_e18388e7f3a3_a1e935682795",
        "160301011c010001180303a3073873f429ef8ad6c13fa035798a93be55208aec5ffe09c5736f4f32c15e4b00"
        "00acc030c02cc028c024c014c00a00a500a300a1009f006b006a006900680039003800370036008800870086"
        "0085c032c02ec02ac026c00fc005009d003d00350084c02fc02bc027c023c013c00900a400a200a0009e0067"
        "0040003f003e0033003200310030009a0099009800970045004400430042c031c02dc029c025c00ec004009c"
        "003c002f00960041c012c008001600130010000dc00dc003000a0007c011c007c00cc0020005000400ff0100"
        "0043000b000403000102000a000a0008001700190018001600230000000d0020001e06010602060305010502"
        "0503040104020403030103020303020102020203000f000101",
    ),
    (
        "latest.pcapng",
        "t12d190800_d83cc789557e_7af1ed941c26",
        "16030300b8010000b4030364960ddb84e92e8d5a9be477e2f7112257269dc742143793732813c25ec65af000"
        "0026c02cc02bc030c02fc024c023c028c027c00ac009c014c013009d009c003d003c0035002f000a01000065"
        "0000001b0019000016646973636f766572792e63656d2e636c6f75642e7573000500050100000000000a0008"
        "0006001d00170018000b00020100000d001a0018080408050806040105010201040305030203020206010603"
        "0023000000170000ff01000100",
    ),
    (
        "tls-handshake.pcapng",
        "t13d151400_8daaf6152771_de4a06bb82e3",
        "1603010200010001fc0303554ec83cae046898f73292a02c9850a0189083f0ae3f068ff48f1199cae4733920"
        "0d8a5d83e0bf08a2b208de442a12235d924174c1669294c652a881d885248f920020aaaa130113021303c02b"
        "c02fc02cc030cca9cca8c013c014009c009d002f0035010001931a1a00000033002b00291a1a000100001d00"
        "20ee3adc5abf132c803e2a783d35ad5438cdeacb660293f6079b3f68eb6f9cff73002b0007069a9a03040303"
        "001b00030200020000001500130000106d74616c6b2e676f6f676c652e636f6d00120000002d00020101000d"
        "0012001004030804040105030805050108060601000a000a00081a1a001d0017001800050005010000000000"
        "23000000170000ff01000100000b00020100caca000100001500e20000000000000000000000000000000000"
        "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000000000000000000000000000000000000",
    ),
    (
        "browsers-x509.pcapng",
        "t13d1516h2_8daaf6152771_e5627efa2ab1",
        "1603010200010001fc0303528b4e00213672e534980dfed836dd5b375ab164dcc65ba6a3c87e7e2a1f9d6120"
        "1bf29c9dffaa31ed2df524d3a113edb4e6fd3b7fb3d6d57d5d9aafb213e83c420020aaaa130113021303c02b"
        "c02fc02cc030cca9cca8c013c014009c009d002f0035010001936a6a0000000d001200100403080404010503"
        "0805050108060601000000170015000012656467652e6d6963726f736f66742e636f6d000a000a00084a4a00"
        "1d00170018000500050100000000000b00020100002b0007069a9a03040303001b0003020002ff0100010000"
        "33002b00294a4a000100001d0020c4ce4268d58f0c703855163f4754b883742487a5ce87a6016a30208c18e0"
        "7f69446900050003026832002d000201010023000000170000001200000010000e000c02683208687474702f"
        "312e310a0a000100001500c50000000000000000000000000000000000000000000000000000000000000000"
        "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000000000000000000000000000000000000",
    ),
    (
        "tls-non-ascii-alpn.pcapng",
        "t13d1516bd_8daaf6152771_e5627efa2ab1",
        "1603010200010001fc03030f9e38acb9a54a7c6e00e29a70ac2feee180ff76d7f25dca84932a66a42d1e5a20"
        "bc58b92f865e6b9aa4a6371cadcb0afe1da1c0f705209a11d52357f56d5dd9620020aaaa130113021303c02b"
        "c02fc02cc030cca9cca8c013c014009c009d002f0035010001939a9a0000ff010001000033002b00290a0a00"
        "0100001d0020cf55af2603e92f59eb321779706a18fa6b96b16c16404c2264ed687a59401878002d00020101"
        "000500050100000000446900050003026832000d00120010040308040401050308050501080606010010000e"
        "000c02baad08687474702f312e3100230000001b0003020002002b0007060a0a030403030000002200200000"
        "1d636c69656e7473657276696365732e676f6f676c65617069732e636f6d00120000000a000a00080a0a001d"
        "0017001800170000000b000201006a6a000100001500ba000000000000000000000000000000000000000000"
        "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000000000000000000000000000000000000",
    ),
    (
        "badcurveball.pcap",
        "t13d1615h2_46e7e9700bed_45f260be83e2",
        "1603010200010001fc0303c5b08a8a5a1a1f31e5bcd0853b6f59944dfec2900a712a2a6059b827c58cf48020"
        "078a389ef1767da304d9e10cc7a9441a734513694d3a353ed9522ac47f9c8aa40022aaaa130113021303c02b"
        "c02fc02cc030cca9cca8c013c014009c009d002f0035000a010001914a4a00000000001a0018000015626164"
        "2e637572766562616c6c746573742e636f6d00170000ff01000100000a000a0008caca001d00170018000b00"
        "020100002300000010000e000c02683208687474702f312e31000500050100000000000d0014001204030804"
        "0401050308050501080606010201001200000033002b0029caca000100001d0020ec9c731ae0f83a315ec38e"
        "d8cc94912502ab3ca913a29b7d037d7c0ae6a6e81a002d00020101002b000b0a2a2a0304030303020301001b"
        "00030200027a7a000100001500c3000000000000000000000000000000000000000000000000000000000000"
        "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000000000000000000000000000000000000",
    ),
    (
        "tls12.pcap",
        "t13d1715h2_5b57614c22b0_3d5424432f57",
        "1603010200010001fc0303ecb2691addb2bf6c599c7aaae23de5f42561cc04eb41029acc6fc050a16ac1d220"
        "46f8617b580ac9358e2aa44e306d52466bcc989c87c8ca64309f5faf50ba7b4d0022130113031302c02bc02f"
        "cca9cca8c02cc030c00ac009c013c014009c009d002f00350100019100000021001f00001c636f6e74696c65"
        "2e73657276696365732e6d6f7a696c6c612e636f6d00170000ff01000100000a000e000c001d001700180019"
        "01000101000b00020100002300000010000e000c02683208687474702f312e31000500050100000000002200"
        "0a000804030503060302030033006b0069001d00208909858fbeb6ed2f1248ba5b9e2978bead0e840110192c"
        "61daed0096798b184400170041044d183d91f5eed35791fa982464e3b0214aaa5f5d1b78616d9b9fbebc22d1"
        "1f535b2f94c686143136aa795e6e5a875d6c08064ad5b76d44caad766e2483012748002b0005040304030300"
        "0d0018001604030503060308040805080604010501060102030201002d00020101001c000240010015007a00"
        "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000000000000000000000000000000000000",
    ),
]


@pytest.mark.parametrize(
    ("name", "expected", "hexdata"), FOXIO_HELLOS, ids=[v[0] for v in FOXIO_HELLOS]
)
def test_foxio_published_hellos(name: str, expected: str, hexdata: str) -> None:
    raw = bytes.fromhex(hexdata)
    assert ja4_from_raw(raw) == expected
    # the same bytes as handshake message and as bare body
    assert ja4_from_raw(raw[5:]) == expected
    assert ja4_from_raw(raw[9:]) == expected
    # and through mitmproxy's ClientHello
    assert ja4(ClientHello(raw[9:])) == expected


def test_spec_worked_example_from_fields() -> None:
    # technical_details/JA4.md "Example": the ciphers and extensions in their original order
    # (JA4_ro), plus GREASE values that must be ignored everywhere.
    ciphers = [
        0x1A1A,
        0x1301,
        0x1302,
        0x1303,
        0xC02B,
        0xC02F,
        0xC02C,
        0xC030,
        0xCCA9,
        0xCCA8,
        0xC013,
        0xC014,
        0x009C,
        0x009D,
        0x002F,
        0x0035,
    ]
    exts = [
        0x2A2A,
        0x001B,
        0x0000,
        0x0033,
        0x0010,
        0x4469,
        0x0017,
        0x002D,
        0x000D,
        0x0005,
        0x0023,
        0x0012,
        0x002B,
        0xFF01,
        0x000B,
        0x000A,
        0x0015,
        0x3A3A,
    ]
    sigs = [0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601]
    f = ClientHelloFields(
        0x0303, tuple(ciphers), tuple(exts), (0x7A7A, 0x0304, 0x0303), tuple(sigs), b"h2"
    )
    assert ja4_from_fields(f) == "t13d1516h2_8daaf6152771_e5627efa2ab1"
    assert ja4_from_fields(f, "q").startswith("q13d1516h2_")


def test_spec_hash_examples() -> None:
    # sorted cipher list -> 8daaf6152771; extension list without sigalgs -> 6d807ffa2a79
    ciphers = "002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9"
    assert hashlib.sha256(ciphers.encode()).hexdigest()[:12] == "8daaf6152771"
    exts = [
        0x0005,
        0x000A,
        0x000B,
        0x000D,
        0x0012,
        0x0015,
        0x0017,
        0x001B,
        0x0023,
        0x002B,
        0x002D,
        0x0033,
        0x4469,
        0xFF01,
    ]
    f = ClientHelloFields(0x0303, (0x1301,), tuple(exts), (), (), None)
    assert ja4_from_fields(f).endswith("_6d807ffa2a79")


def test_empty_lists_hash_rule() -> None:
    f = ClientHelloFields(0x0303, (), (), (), (), None)
    assert ja4_from_fields(f) == "t12i000000_000000000000_000000000000"
    # only SNI and ALPN: the sorted extension list is empty -> zeros, counts still include them
    f = ClientHelloFields(0x0301, (0x002F,), (0x0000, 0x0010), (), (), b"http/1.1")
    assert ja4_from_fields(f) == (
        "t10d0102h1_" + hashlib.sha256(b"002f").hexdigest()[:12] + "_000000000000"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # technical_details/JA4.md "ALPN Extension Value"
        (b"\xab", "ab"),
        (b"\x20", "20"),
        (b"\xab\xcd", "ad"),
        (b"\x20\x61", "21"),
        (b"\x30\xab", "3b"),
        (b"\x61\x20", "60"),
        (b"\x30\x31\xab\xcd", "3d"),
        (b"\x30\xab\xcd\x31", "01"),
        (b"h2", "h2"),
        (b"http/1.1", "h1"),
        (b"h", "hh"),
        (b"", "00"),
        (None, "00"),
    ],
)
def test_alpn_rule(value: bytes | None, expected: str) -> None:
    assert alpn_chars(value) == expected


def test_grease_values() -> None:
    grease = {v for v in range(0x10000) if is_grease(v)}
    assert grease == {0x0A0A + 0x1010 * i for i in range(16)}


def test_version_table_and_caps() -> None:
    for legacy, code in [(0x0300, "s3"), (0x0002, "s2"), (0x0302, "11"), (0x9999, "00")]:
        f = ClientHelloFields(legacy, (1,), (), (), (), None)
        assert ja4_from_fields(f)[1:3] == code
    f = ClientHelloFields(0x0303, tuple(range(1, 200)), tuple(range(0x100, 0x200)), (), (), None)
    assert ja4_from_fields(f)[:10] == "t12i999900"
    # supported_versions wins over the legacy version; highest non-GREASE value
    f = ClientHelloFields(0x0303, (1,), (0x002B,), (0x0A0A, 0x0302, 0x0304, 0x0303), (), None)
    assert ja4_from_fields(f)[1:3] == "13"


# --- real ClientHellos from Python's ssl module (no network: memory BIOs) --------------------


def _capture_hello(ctx: ssl.SSLContext, server_hostname: str | None) -> bytes:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def _reference_ja4(record: bytes) -> str:
    """Independent, deliberately plain JA4 computation (struct-based, no shared code)."""
    assert record[0] == 0x16 and record[5] == 0x01
    hs = record[9 : 9 + int.from_bytes(record[6:9], "big")]
    legacy = struct.unpack_from("!H", hs, 0)[0]
    pos = 2 + 32
    pos += 1 + hs[pos]
    (clen,) = struct.unpack_from("!H", hs, pos)
    ciphers = list(struct.unpack_from(f"!{clen // 2}H", hs, pos + 2))
    pos += 2 + clen
    pos += 1 + hs[pos]
    (elen,) = struct.unpack_from("!H", hs, pos)
    pos += 2
    end = pos + elen
    exts, sigs, versions, alpn = [], [], [], ""
    while pos < end:
        etype, ln = struct.unpack_from("!HH", hs, pos)
        body = hs[pos + 4 : pos + 4 + ln]
        pos += 4 + ln
        exts.append(etype)
        if etype == 13:
            sigs = list(struct.unpack_from(f"!{len(body) // 2 - 1}H", body, 2))
        elif etype == 43:
            versions = list(struct.unpack_from(f"!{body[0] // 2}H", body, 1))
        elif etype == 16:
            alpn = body[3 : 3 + body[2]].decode()
    grease = {0x0A0A + 0x1010 * i for i in range(16)}
    ciphers = [c for c in ciphers if c not in grease]
    exts = [e for e in exts if e not in grease]
    version = max([v for v in versions if v not in grease] or [legacy])
    vcode = {0x0304: "13", 0x0303: "12", 0x0302: "11", 0x0301: "10"}[version]
    sni = "d" if 0 in exts else "i"
    alpn2 = (alpn[0] + alpn[-1]) if alpn else "00"
    a = f"t{vcode}{sni}{min(len(ciphers), 99):02d}{min(len(exts), 99):02d}{alpn2}"
    b = hashlib.sha256(",".join(f"{c:04x}" for c in sorted(ciphers)).encode()).hexdigest()[:12]
    craw = ",".join(f"{e:04x}" for e in sorted(exts) if e not in (0, 16))
    if sigs:
        craw += "_" + ",".join(f"{s:04x}" for s in sigs)
    c = hashlib.sha256(craw.encode()).hexdigest()[:12]
    return f"{a}_{b}_{c}"


def _contexts() -> list[tuple[str, ssl.SSLContext, str | None]]:
    out = []
    default = ssl.create_default_context()
    out.append(("default-sni", default, "api.example.com"))
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    out.append(("default-ip", ctx, None))
    ctx = ssl.create_default_context()
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    out.append(("alpn-h2", ctx, "api.example.com"))
    ctx = ssl.create_default_context()
    ctx.set_alpn_protocols(["http/1.1"])
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    out.append(("tls12-h1", ctx, "example.org"))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.set_ciphers("ECDHE+AESGCM")
    out.append(("narrow-ciphers", ctx, "example.org"))
    return out


@pytest.mark.parametrize(("label", "ctx", "sni"), _contexts(), ids=[c[0] for c in _contexts()])
def test_real_python_ssl_hellos(label: str, ctx: ssl.SSLContext, sni: str | None) -> None:
    record = _capture_hello(ctx, sni)
    expected = _reference_ja4(record)
    got = ja4_from_raw(record)
    assert got == expected
    assert ja4(ClientHello(record[9:])) == expected
    assert got[3] == ("d" if sni else "i")
    if label == "alpn-h2":
        assert got[8:10] == "h2"
    if label == "tls12-h1":
        assert got[1:3] == "12" and got[8:10] == "h1"
    assert ja4_r_from_raw(record).count("_") == 3


def test_python_ssl_hello_is_stable() -> None:
    a = ja4_from_raw(_capture_hello(ssl.create_default_context(), "a.example"))
    b = ja4_from_raw(_capture_hello(ssl.create_default_context(), "b.example"))
    assert a == b  # random, key shares and SNI value do not change the fingerprint


# --- robustness ------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_never_raises_on_garbage(data: bytes) -> None:
    out = ja4_from_raw(data)
    assert out == "" or out.count("_") == 2
    assert isinstance(ja4_r_from_raw(data), str)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_never_raises_on_truncated_or_mutated_real_hello(data: st.DataObject) -> None:
    raw = bytearray(bytes.fromhex(FOXIO_HELLOS[-1][2]))
    cut = data.draw(st.integers(0, len(raw)))
    flips = data.draw(
        st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(0, 255)), max_size=4)
    )
    for i, v in flips:
        raw[i] = v
    out = ja4_from_raw(bytes(raw[:cut]))
    assert out == "" or out.count("_") == 2


def test_ja4_of_broken_object_is_empty() -> None:
    assert ja4(object()) == ""
    assert parse_client_hello(b"") is None
    assert ja4_from_raw(b"\x16\x03\x01\x00\x05\x01\x00\x00\x01") == ""


# --- SDK runtime claims ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "claim"),
    [
        ({"User-Agent": "Anthropic/Python 0.40.0", "X-Stainless-Lang": "python"}, "python"),
        ({"user-agent": "OpenAI/Python 1.50.0"}, "python"),
        ({"X-Stainless-Lang": "js", "X-Stainless-Runtime": "node"}, "node"),
        ({"X-Stainless-Lang": "js", "X-Stainless-Runtime": "deno"}, "deno"),
        ({"X-Stainless-Lang": "js", "X-Stainless-Runtime": "browser:chrome"}, "browser"),
        ({"X-Stainless-Lang": "go", "User-Agent": "Go-http-client/1.1"}, "go"),
        ({"User-Agent": "Anthropic/JS 0.30.0"}, "node"),
        ({"User-Agent": "curl/8.5.0"}, "curl"),
        ({"User-Agent": "python-requests/2.32.3"}, "python"),
        ({"User-Agent": "python-httpx/0.27.0"}, "python"),
        ({"User-Agent": "Go-http-client/2.0"}, "go"),
        ({"User-Agent": "Mozilla/5.0 (X11; Linux x86_64)"}, "browser"),
        ({"User-Agent": "SomethingElse/1.0"}, None),
        ({}, None),
        ([("x-stainless-lang", "python"), ("x-stainless-package-version", "0.40.0")], "python"),
        ([(b"User-Agent", b"curl/7.88.1")], "curl"),
        ({"X-Stainless-Lang": "Brainf*ck!"}, "brainfck"),
    ],
)
def test_sdk_runtime_claim(headers: object, claim: str | None) -> None:
    assert sdk_runtime_claim(headers) == claim  # type: ignore[arg-type]


def test_sdk_runtime_claim_with_mitmproxy_headers() -> None:
    from mitmproxy.http import Headers

    h = Headers(user_agent="Anthropic/Python 0.40.0", x_stainless_runtime="CPython")
    assert sdk_runtime_claim(h) == "python"
    assert sdk_runtime_claim(None) is None  # type: ignore[arg-type]
