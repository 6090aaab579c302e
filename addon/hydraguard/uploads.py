"""File uploads estimated while they stream to the upstream, off the event loop.

`UploadSpool` is an upload's request stream callable (mitmproxy ``flow.request.stream``):
every chunk is forwarded as it came, and copied to an unnamed temporary file (the only work
on the event loop: one ``write``). A worker thread of its own reads the file as it grows and
feeds the multipart reader and the batch-file estimator (apis/multipart.py,
apis/batch_parse.py), so a 200 MB upload is never held in memory and its parsing (seconds of
CPU) never runs on the event loop. ``result()`` waits for the parse to finish once the body
has gone through. Past ``cap`` bytes the copy stops and the estimate is void (the upload
itself goes on: it was allowed when its headers arrived). At most ``MAX_PARSING`` uploads are
parsed at once per process; `UploadSpool.start` answers False beyond that.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

from .apis.batch_parse import BatchParse, FileEstimator
from .apis.multipart import MultipartReader

log = logging.getLogger("hydraguard")

__all__ = ["MAX_PARSING", "UploadResult", "UploadSpool"]

MAX_PARSING = 16
READ = 1 << 20
_parsing = threading.BoundedSemaphore(MAX_PARSING)


@dataclass(slots=True)
class UploadResult:
    """What an upload held: its small fields (``purpose``), the file part's estimate."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    file_name: str | None = None
    parse: BatchParse | None = None
    bytes: int = 0
    error: str | None = None  # the body could not be read as a batch file upload

    @property
    def purpose_batch(self) -> bool:
        return "batch" in self.fields.get("purpose", ())


class UploadSpool:
    """See the module doc."""

    def __init__(self, boundary: str, cap: int, *, max_requests: int = 100_000,
                 sample: int = 32) -> None:
        self.boundary = boundary
        self.cap = cap
        self.max_requests = max_requests
        self.sample = sample
        self._fd = -1
        self._written = 0
        self._closed = False
        self._over = False
        self._aborted = False
        self._cond = threading.Condition()
        self._future: Future[UploadResult] = Future()

    def start(self) -> bool:
        """Open the spool and start its worker; False when too many uploads are being parsed
        (or no temporary file can be made)."""
        if not _parsing.acquire(blocking=False):
            return False
        try:
            fd, path = tempfile.mkstemp(prefix="hydraguard-upload-")
            os.unlink(path)  # gone from the file system; the descriptor keeps it
        except OSError as e:
            _parsing.release()
            log.warning("hydraguard: cannot spool an upload: %s", e)
            return False
        self._fd = fd
        threading.Thread(target=self._work, name="hydraguard-upload", daemon=True).start()
        return True

    def __call__(self, chunk: bytes) -> bytes:
        """The stream callable: forward ``chunk``, copy it for the worker."""
        with self._cond:
            if self._closed:
                return chunk
            if not chunk:
                self._closed = True
            elif not self._over:
                if self._written + len(chunk) > self.cap:
                    self._over, self._closed = True, True
                else:
                    try:
                        view = memoryview(chunk)
                        while view:
                            view = view[os.write(self._fd, view):]
                        self._written += len(chunk)
                    except OSError:
                        self._over, self._closed = True, True
            self._cond.notify()
        return chunk

    def abort(self) -> None:
        """The upload failed (the client went away): stop the worker."""
        with self._cond:
            self._closed = self._aborted = True
            self._cond.notify()

    async def result(self) -> UploadResult:
        """The parsed upload, once the body went through (see the module doc)."""
        return await asyncio.wrap_future(self._future)

    def _work(self) -> None:
        res = UploadResult()
        try:
            est = FileEstimator(sample=self.sample, pause=lambda: time.sleep(0))
            reader = MultipartReader(self.boundary, est.feed)
            pos = 0
            while True:
                with self._cond:
                    while self._written <= pos and not self._closed:
                        self._cond.wait()
                    end, closed, over = self._written, self._closed, self._over
                if self._aborted:
                    res.error = "the upload did not complete"
                    break
                if over:
                    res.error = f"upload larger than {self.cap} bytes: not estimated"
                    break
                while pos < end and reader.error is None:
                    data = os.pread(self._fd, min(READ, end - pos), pos)
                    if not data:
                        break
                    pos += len(data)
                    reader.feed(data)
                if closed and pos >= end:
                    break
            if res.error is None:
                reader.feed(b"")
                res.fields, res.file_name, res.bytes = reader.fields, reader.file_name, pos
                res.error = reader.error
                if res.error is None and reader.file_parts == 1:
                    res.parse = est.result()
                    s = res.parse.summary
                    if s is not None and s.requests > self.max_requests:
                        res.parse = BatchParse(None, error=f"the file holds {s.requests} "
                                               f"requests, more than {self.max_requests}")
        except Exception as e:  # a parse bug must not hang the response
            log.exception("hydraguard: parsing an upload failed")
            res.error = f"{type(e).__name__}: {e}"
        finally:
            os.close(self._fd)
            _parsing.release()
        self._future.set_result(res)
