"""MinHash signatures of prompt text for the template matcher (signals/templates.py).

Normalisation (C-speed byte passes, then a bounded per-token cache): quoted spans ("...",
'...', `...`, curly and «...», up to 160 bytes) become one token; sentence ends mark the next
word, so a capitalised word mid-sentence (a name) folds to one token while a sentence-initial
one is lower-cased; numbers fold to one token; punctuation splits words. At most `max_chars`
(2048) characters of a turn are read: the first two thirds and the last third (instructions
often follow pasted text). Cost is bounded whatever the prompt size.

Signature: each distinct raw token hashed once with blake2b-64 (bounded cache); shingle hash
(h0 * p1 + h1) * p2 + h2 mod 2^64 in numpy; K=64 MinHash values over the top 32 bits with
the permutations x -> (x ^ b_i) * a_i mod 2^32, a_i odd, in uint32 lanes. All constants come
from blake2b of fixed labels: signatures and template ids are the same on every replica and
every run (no salted `hash()`, no RNG streams, no library's seeding). LSH: 32 bands x 2 rows
(candidate threshold (1/32)^(1/2) ~ 0.18), candidates verified on the full signature.

Choice of library (bench/bench_templates.py; 64 values over the ~360 shingles of a 2 KB turn,
best of 5 on a busy 2-core machine, so read the ratios): numpy 32-bit (x ^ b) * a, ours, 25 µs;
numpy 64-bit multiply-shift 37 µs (no SIMD 64-bit multiply on AVX2); a stdlib
one-permutation-hashing sketch 130 µs (and noisier on short texts); datasketch 2.0 102 µs
from our hashes, 530 µs through its sha1 string API; rensa 0.5 (Rust) 3.3 µs. What all of
them need first (tokenise, word hashes, shingle hashes) cost 63 µs, and building the Python
shingle strings a string API wants 44 µs, more than our whole MinHash step. rensa would save
~20 µs a prompt for a young native dependency whose seeding and hashing would then define
the template ids on every replica; numpy (a common, stable wheel) it is, with our constants.
"""

from __future__ import annotations

import hashlib
import re
from operator import itemgetter

import numpy as np

__all__ = ["BANDS", "ROWS", "SYS_K", "K", "shingle_hashes", "signature", "words"]

K = 64  # MinHash values per signature
ROWS = 2  # rows per LSH band
BANDS = K // ROWS
SHINGLE = 3  # words per shingle
SYS_K = 16  # MinHash values of the system-prompt qualifier


def _u64(label: str) -> int:
    d = hashlib.blake2b(label.encode(), digest_size=8, person=b"hydraguard-tpl").digest()
    return int.from_bytes(d, "little")


# MinHash permutation i of the 32-bit shingle values: x -> (x ^ b_i) * a_i mod 2^32, a_i odd
# (a bijection, computed in uint32 lanes: twice the lanes of 64-bit multiply-shift). A final
# xorshift was measured to change nothing: it keeps the top 16 bits, which decide the minimum.
_A = np.array([_u64(f"a{i}") & 0xFFFFFFFF | 1 for i in range(K)], dtype=np.uint32)[:, None]
_B = np.array([_u64(f"b{i}") & 0xFFFFFFFF for i in range(K)], dtype=np.uint32)[:, None]
_P1 = np.uint64(_u64("p1") | 1)
_P2 = np.uint64(_u64("p2") | 1)
_S32 = np.uint64(32)

# --- normalisation ---------------------------------------------------------------------------

_DQ = re.compile(rb'"[^"\n]{1,160}"')
_SQ = re.compile(rb"'(?<!\w')[^'\n]{1,160}'(?!\w)")  # not an apostrophe: no word char before
_BT = re.compile(rb"`[^`\n]{1,160}`")
_UNICODE_QUOTES = (("“", '"'), ("”", '"'), ("„", '"'), ("«", '"'), ("»", '"'), ("‘", "'"),
                   ("’", "'"))
_QUOTE, _START = b"\x03", 0x02  # placeholder token, sentence-start mark
_TABLE = bytearray(range(256))
for _c in b"!\"#$%&'()*+,-/<=>@[\\]^_`{|}~\t\r\x0b\x0c":
    _TABLE[_c] = 0x20
for _c in b".!?:;\n":
    _TABLE[_c] = _START  # sentence ends (and line starts) mark what follows
for _c in b"123456789":
    _TABLE[_c] = 0x30  # every digit -> "0": a number is a run of zeros, folded below
_TABLE = bytes(_TABLE)
_NUM, _NAME, _QUOTED = "\x01num", "\x01name", "\x01quote"


def _raw_tokens(text: str) -> list[bytes]:
    """Raw tokens: bytes split on white space and punctuation; a token may carry sentence
    marks (0x02) before or inside it; quoted spans are one 0x03 token."""
    if not text.isascii():
        for a, b in _UNICODE_QUOTES:
            if a in text:
                text = text.replace(a, b)
    data = text.encode("utf-8", "surrogatepass")
    if b'"' in data:
        data = _DQ.sub(b" \x03 ", data)
    if b"'" in data:
        data = _SQ.sub(b" \x03 ", data)
    if b"`" in data:
        data = _BT.sub(b" \x03 ", data)
    if b"\n" in data:
        data = data.replace(b"\n", b" \n")
    # "end. The" -> "end\x02 The" -> "end \x02The": the mark moves onto the next word
    data = (b"\x02" + data.translate(_TABLE)).replace(b"\x02 ", b" \x02")
    if b"\x02 " in data:  # after two spaces or a mark of its own
        data = data.replace(b"\x02 ", b" \x02")
    return data.split()


def _word(part: bytes, start: bool) -> str:
    if part == _QUOTE:
        return _QUOTED
    if not part.strip(b"0"):
        return _NUM
    w = part.decode("utf-8", "replace")
    if not start and w[0].isupper() and w != "I":
        return _NAME  # capitalised mid-sentence: a name
    return w.lower()


def _words(token: bytes) -> list[str]:
    """The normalised words of a raw token (none, one, or several around inner marks)."""
    if _START not in token:
        return [_word(token, False)]
    out: list[str] = []
    for i, part in enumerate(token.split(b"\x02")):
        if part:
            w = _word(part, i > 0)
            if w is not _NUM or not out or out[-1] is not _NUM:  # 3.14, 10:30: one number
                out.append(w)
    return out


def _tokens(text: str, max_chars: int) -> list[bytes]:
    """Raw tokens of the text, or of its first 2/3 and last 1/3 of `max_chars` characters
    (the token cut at either edge dropped)."""
    if max_chars <= 0 or len(text) <= max_chars:
        return _raw_tokens(text)
    head = max_chars * 2 // 3
    return _raw_tokens(text[:head])[:-1] + _raw_tokens(text[len(text) - max_chars + head :])[1:]


def words(text: str, max_chars: int = 2048) -> list[str]:
    """Normalised words of `text` as the matcher sees them (for tests and tuning)."""
    out = []
    for token in _tokens(text, max_chars):
        out.extend(_words(token))
    return out


_WORD_HASH: dict[bytes, bytes] = {}  # raw token -> 8-byte hash of its word (b"" = none)
_WORD_HASH_MAX = 200_000


def _word_hash(w: str) -> bytes:
    return hashlib.blake2b(w.encode("utf-8", "surrogatepass"), digest_size=8).digest()


def _token_hash(token: bytes) -> bytes:
    return b"".join(map(_word_hash, _words(token)))


def _packed(text: str, max_chars: int) -> bytes:
    """8-byte word hashes of the normalised words, concatenated."""
    cache = _WORD_HASH
    toks = _tokens(text, max_chars)
    if len(toks) < 2:  # (itemgetter of one key returns the value, not a tuple)
        toks.append(b"\x02")  # a bare mark: no word
    try:
        return b"".join(itemgetter(*toks)(cache))  # a third faster than map(getitem)
    except KeyError:
        if len(cache) > _WORD_HASH_MAX:
            cache.clear()
        for t in set(toks).difference(cache):
            cache[t] = _token_hash(t)
        return b"".join(itemgetter(*toks)(cache))


def _shingles(packed: bytes) -> np.ndarray:
    h = np.frombuffer(packed, dtype="<u8")
    n = len(h) - SHINGLE + 1
    if n < 1:
        return h.copy()
    # (h0 * p1 + h1) * p2 + h2 mod 2^64: every word reaches the top 32 bits MinHash reads
    s = h[:n] * _P1
    s += h[1 : n + 1]
    s *= _P2
    s += h[2 : n + 2]
    return s


def shingle_hashes(text: str, max_chars: int = 2048) -> np.ndarray:
    """uint64 hashes of the word 3-shingles of `text` (normalised, at most `max_chars` read)."""
    return _shingles(_packed(text, max_chars))


def _minhash(s: np.ndarray, k: int = K) -> np.ndarray:
    v = (s >> _S32).astype(np.uint32) ^ _B[:k]  # (k, n): 32-bit lanes are twice as fast
    v *= _A[:k]
    return v.min(axis=1).astype("<u4")


def signature(text: str, max_chars: int = 2048, k: int = K) -> np.ndarray | None:
    """The K-value MinHash signature (uint32) of `text`; None when it has no words."""
    packed = _packed(text, max_chars)
    return _minhash(_shingles(packed), k) if packed else None
