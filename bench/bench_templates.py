"""Template matcher bench: µs per observe, MinHash library comparison, corpus recall.

Run: .venv/bin/python bench/bench_templates.py [--quick] [--cpu] [--seeds 1,20260311]

1. p50 / p99 µs per `observe` for 1 KB, 8 KB and 32 KB user turns (1.5 KB persona system
   prompt), `TemplateMatcher` (MinHash + LSH) next to the old `TemplateTracker` (SimHash, text =
   system + user as with `text: both`) on the same inputs. Both trackers are warmed with the
   labelled corpus first, so their indexes hold ~1,300 templates.
2. The MinHash step (64 values over the shingles of a 2 KB turn): numpy 32-bit (ours),
   numpy 64-bit multiply-shift, a stdlib one-permutation-hashing sketch, and rensa and
   datasketch when installed (pip install rensa datasketch: not dependencies), from our
   shingle hashes and through their own string APIs.
3. Recall of templated prompts from their template's 3rd use, and organic false merges,
   on the labelled corpus of tests/template_corpus.py for each seed.
"""

from __future__ import annotations

import argparse
import array
import gc
import itertools
import operator
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from simhash_baseline import TemplateTracker  # noqa: E402

from hydraguard.signals import minhash as tpl  # noqa: E402
from hydraguard.signals.templates import TemplateMatcher  # noqa: E402
from tests.template_corpus import _paragraph, make_corpus, score  # noqa: E402


def _inputs(size: int, n: int, seed: int) -> tuple[str, list[str]]:
    """A persona system prompt and `n` distinct user turns of `size` characters: a templated
    prompt from the corpus followed by pasted organic text."""
    corpus = make_corpus(seed)
    persona = next(p.system for p in corpus if p.label and len(p.system) > 1000)[:1536]
    heads = [p.user for p in corpus]
    r = random.Random(seed)
    out = []
    for i in range(n):
        text = heads[i % len(heads)] + "\n\n"
        while len(text) < size:
            text += _paragraph(r, 4, 10) + "\n"
        out.append(text[:size].rsplit(" ", 1)[0])
    return persona, out


CLOCK = time.perf_counter_ns


def _timed(fns: list[Callable[[str], object]], texts: list[str]) -> list[tuple[float, float]]:
    """p50 / p99 µs of each function over the texts, interleaved text by text (a busy
    machine slows them alike)."""
    gc.collect()
    gc.disable()
    clock = CLOCK
    times: list[list[int]] = [[] for _ in fns]
    try:
        for t in texts:
            for fn, out in zip(fns, times, strict=True):
                t0 = clock()
                fn(t)
                out.append(clock() - t0)
    finally:
        gc.enable()
    result = []
    for out in times:
        out.sort()
        result.append((out[len(out) // 2] / 1000, out[int(len(out) * 0.99)] / 1000))
    return result


def observe_table(n: int, seed: int) -> None:
    corpus = make_corpus(seed)
    print("## µs per observe (p50 / p99)\n")
    print("| user turn | TemplateMatcher p50 | p99 | TemplateTracker (SimHash) p50 | p99 |")
    print("|---|---|---|---|---|")
    for size in (1024, 8192, 32768):
        persona, texts = _inputs(size, n, seed + size)
        new = TemplateMatcher(clock=time.monotonic)
        old = TemplateTracker(clock=time.monotonic, min_chars=500)
        for p in corpus:
            new.observe(p.system, p.user, p.account)
            old.observe(f"{p.system}\n{p.user}" if p.system else p.user, p.account)
        accounts = itertools.cycle([f"a{i}" for i in range(500)])
        (m50, m99), (o50, o99) = _timed(
            [lambda t, m=new, s=persona, a=accounts: m.observe(s, t, next(a)),
             lambda t, m=old, s=persona, a=accounts: m.observe(f"{s}\n{t}", next(a))], texts)
        print(f"| {size // 1024} KB | {m50:.1f} | {m99:.1f} | {o50:.1f} | {o99:.1f} |")
    print()


def _stdlib_oph(packed: bytes) -> list[int]:
    """One-permutation hashing in the stdlib: 64 bins by the top 6 bits, min of 24 bits each
    (sort descending, then a dict keeps the last = smallest value per bin); empty bins
    borrow from the next bin to the right. Shingles: XOR of lane-shifted word hashes."""
    n = len(packed) // 8
    x = int.from_bytes(packed, "little")
    s = x ^ (x >> 64 << 1) ^ (x >> 128 << 2)
    lanes = (s & ((1 << (64 * (n - 2))) - 1)).to_bytes(8 * (n - 2), "little")
    vals = array.array("Q", lanes).tolist()
    keys = sorted(set(map(operator.rshift, vals, itertools.repeat(34))), reverse=True)
    bins = dict(zip(map(operator.rshift, keys, itertools.repeat(24)), keys, strict=True))
    out, last = [0] * 64, None
    for i in range(127, -1, -1):
        v = bins.get(i % 64)
        if v is not None:
            last = v
        out[i % 64] = last if v is None else v
    return out


def library_table(quick: bool) -> None:
    text = _inputs(2048, 50, 5)[1][0]
    packed = tpl._packed(text, 2048)
    shingles = tpl._shingles(packed)
    words = tpl.words(text)

    def shingle_strings() -> list[str]:
        return [" ".join(w) for w in zip(words, words[1:], words[2:], strict=False)]

    strs = shingle_strings()
    strs_b = [s.encode() for s in strs]
    s32 = (shingles >> np.uint64(32)).astype(np.uint32).tolist()
    a64 = np.array([tpl._u64(f"a{i}") | 1 for i in range(64)], dtype=np.uint64)[:, None]
    b64 = np.array([tpl._u64(f"b{i}") for i in range(64)], dtype=np.uint64)[:, None]

    def k64() -> object:  # multiply-shift over 64-bit lanes: ((a*x + b) mod 2^64) >> 32
        v = a64 * shingles
        v += b64
        return (v.min(axis=1) >> np.uint64(32)).astype("<u4")

    rows: list[tuple[str, Callable[[], object] | None, Callable[[], object] | None]] = [
        ("numpy, 32-bit (x ^ b) * a (ours)", lambda: tpl._minhash(shingles), None),
        ("numpy, 64-bit multiply-shift", k64, None),
        ("stdlib, one-permutation hashing", lambda: _stdlib_oph(packed), None),
    ]
    try:
        import rensa

        def rensa_native() -> object:
            m = rensa.RMinHash(64, 42)
            m.update(strs)
            return m.digest()

        rows.append(("rensa 0.5 RMinHash (Rust)",
                     lambda: rensa.RMinHash.digest_matrix_from_flat_token_hashes(
                         shingles, [0, len(shingles)], 64, 42).to_rows(), rensa_native))
    except ImportError:
        rows.append(("rensa: not installed", None, None))
    try:
        import datasketch

        perm = datasketch.MinHash(num_perm=64, scheme="affine32").permutations

        def ds_hashed() -> object:
            m = datasketch.MinHash(num_perm=64, permutations=perm, scheme="affine32",
                                   hashfunc=int)
            m.update_batch(s32)
            return m.hashvalues

        def ds_native() -> object:
            m = datasketch.MinHash(num_perm=64, permutations=perm, scheme="affine32")
            m.update_batch(strs_b)
            return m.hashvalues

        rows.append(("datasketch 2.0 MinHash (numpy, sha1)", ds_hashed, ds_native))
    except ImportError:
        rows.append(("datasketch: not installed", None, None))
    number = 100 if quick else 400
    prefix = min(_repeat(lambda: tpl._shingles(tpl._packed(text, 2048)), number))
    build = min(_repeat(shingle_strings, number))
    print(f"## MinHash, 64 values, a 2 KB turn ({len(shingles)} shingles): µs, best of 5\n")
    print("| implementation | from our shingle hashes | its own API from shingle strings |")
    print("|---|---|---|")
    for name, step, native in rows:
        a = f"{min(_repeat(step, number)):.1f}" if step else "-"
        b = f"{min(_repeat(native, number)):.1f}" if native else "-"
        print(f"| {name} | {a} | {b} |")
    print(f"\nShared by all: tokenise + word hashes (cached) + shingle hashes {prefix:.1f} µs; "
          f"building the {len(strs)} shingle strings a string API needs: {build:.1f} µs.\n")


def _repeat(fn: Callable[[], object], number: int) -> list[float]:
    out = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        out.append((time.perf_counter() - t0) / number * 1e6)
    return out


def corpus_table(seeds: list[int]) -> None:
    print("## Labelled corpus (tests/template_corpus.py)\n")
    print("| seed | matcher | recall from 3rd use | worst template | distinct ids of the "
          "templated prompts | organic pairs merged | of all organic pairs | organic given a "
          "template's id |")
    print("|---|---|---|---|---|---|---|---|")
    for seed in seeds:
        corpus = make_corpus(seed)
        new = TemplateMatcher(clock=lambda: 0.0)
        old = TemplateTracker(clock=lambda: 0.0, min_chars=500)
        runs = {
            "TemplateMatcher": [new.observe(p.system, p.user, p.account)[0] for p in corpus],
            "TemplateTracker (SimHash, text both)": [
                old.observe(f"{p.system}\n{p.user}" if p.system else p.user, p.account)[0]
                or None for p in corpus],
        }
        for name, ids in runs.items():
            s = score(corpus, ids)
            n_ids = len({t for p, t in zip(corpus, ids, strict=True) if p.label and t})
            print(f"| {seed} | {name} | {s.recall:.4f} | {min(s.per_template.values()):.3f} "
                  f"| {n_ids} | {s.merged_pairs} | {s.merged_rate * 100:.4f} % "
                  f"| {s.organic_in_templates} |")
    print()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", default="1,20260311")
    ap.add_argument("--cpu", action="store_true",
                    help="time observes with this thread's CPU clock (for a busy machine)")
    args = ap.parse_args()
    if args.cpu:
        global CLOCK
        CLOCK = time.thread_time_ns
    n = 300 if args.quick else 2000
    observe_table(n, 11)
    library_table(args.quick)
    corpus_table([int(s) for s in args.seeds.split(",")])
    clock = "thread CPU time" if args.cpu else "wall clock"
    print(f"(p50 / p99 over {n} observes per size, the two trackers interleaved, {clock}, gc "
          f"off while timing; MinHash table: best of 5 runs)")


if __name__ == "__main__":
    main()
