"""UploadSpool: an upload is forwarded chunk by chunk, copied to a temporary file and parsed
by a worker thread of its own (real threads, real files)."""

from __future__ import annotations

import asyncio
import json

from hydraguard import uploads
from hydraguard.uploads import UploadSpool

from .test_apis_batches import line, multipart


def spool_run(body: bytes, cap: int = 1 << 20, chunk: int = 1000, max_requests: int = 100):
    async def go():
        s = UploadSpool("Bnd", cap, max_requests=max_requests)
        assert s.start()
        out = b""
        for i in range(0, len(body), chunk):
            out += s(body[i:i + chunk])
            await asyncio.sleep(0)
        out += s(b"")
        assert out == body  # forwarded unchanged
        return await s.result()

    return asyncio.run(go())


def test_a_batch_file_upload_is_estimated_off_the_loop():
    data = b"\n".join(line(i) for i in range(50)) + b"\n"
    res = spool_run(multipart("Bnd", [("purpose", None, b"batch"), ("file", "x.jsonl", data)]))
    assert (res.error, res.purpose_batch, res.file_name) == (None, True, "x.jsonl")
    s = res.parse.summary
    assert (s.requests, s.input_tokens, s.output_tokens(0)) == (50, 50 * 15, 50 * 2 * 50)
    assert res.bytes > len(data)


def test_an_upload_over_the_cap_is_not_estimated_but_still_forwarded():
    data = b"\n".join(line(i) for i in range(50))
    res = spool_run(multipart("Bnd", [("purpose", None, b"batch"), ("file", "x", data)]),
                    cap=2000)
    assert res.parse is None and res.error == "upload larger than 2000 bytes: not estimated"


def test_too_many_requests_and_not_a_batch_file():
    data = b"\n".join(line(i) for i in range(5))
    res = spool_run(multipart("Bnd", [("purpose", None, b"batch"), ("file", "x", data)]),
                    max_requests=4)
    assert res.parse.summary is None
    assert res.parse.error == "the file holds 5 requests, more than 4"
    res = spool_run(multipart("Bnd", [("purpose", None, b"fine-tune"), ("file", "x", json.dumps(
        {"messages": []}).encode())]))
    assert (res.purpose_batch, res.parse.unmetered) == (False, 1)


def test_abort_frees_the_worker_and_the_slot():
    async def go():
        s = UploadSpool("Bnd", 1 << 20)
        assert s.start()
        s(b"--Bnd\r\n")
        s.abort()
        res = await s.result()
        assert (res.error, res.parse) == ("the upload did not complete", None)

    for _ in range(uploads.MAX_PARSING + 2):  # every slot is given back
        asyncio.run(go())
