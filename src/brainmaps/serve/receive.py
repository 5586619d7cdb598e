"""Receive an upload as a stream: the size limit is enforced on the bytes as they arrive.

Starlette's own form parsing spools the whole body before the handler sees it; here the
``multipart/form-data`` body is fed chunk by chunk to python-multipart's parser, and the
one file part is written straight to a server-made path. The part's file name is checked
(:func:`~brainmaps.serve.uploads.upload_kind`) before any of its bytes are written.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from brainmaps.serve.uploads import UploadError, upload_kind

__all__ = ["receive_upload"]


class _Receiver:
    """Multipart callbacks that stream the part named ``file`` into one file."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.filename: str | None = None
        self.n_files = 0
        self._headers: dict[str, str] = {}
        self._field = b""
        self._value = b""
        self._out = None
        self._is_file = False

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._begin,
            "on_header_field": lambda d, s, e: setattr(self, "_field", self._field + d[s:e]),
            "on_header_value": lambda d, s, e: setattr(self, "_value", self._value + d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_done,
            "on_part_data": self._data,
            "on_part_end": self._end,
        }

    def _begin(self) -> None:
        self._headers, self._is_file = {}, False

    def _header_end(self) -> None:
        self._headers[self._field.decode("latin-1").lower()] = self._value.decode("latin-1")
        self._field, self._value = b"", b""

    def _headers_done(self) -> None:
        _, params = parse_options_header(self._headers.get("content-disposition", ""))
        if params.get(b"name") != b"file" or b"filename" not in params:
            return  # other fields are ignored
        self.n_files += 1
        if self.n_files > 1:
            raise UploadError(
                "the upload holds several files; send one .nii/.nii.gz, or put several "
                "scans in one .zip.",
                status=400,
            )
        self.filename = params[b"filename"].decode("utf-8", "replace")
        upload_kind(self.filename)  # a wrong type is refused before its bytes are read
        self._is_file = True
        self._out = open(self.dest, "wb")  # closed in _end, or by close()

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._is_file and self._out is not None:
            self._out.write(data[start:end])

    def _end(self) -> None:
        if self._is_file:
            self.close()
            self._is_file = False

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None


async def receive_upload(
    request: Request,
    dest: Path,
    max_bytes: int,
    *,
    idle_timeout_s: float = 30.0,
    upload_timeout_s: float = 600.0,
    min_rate_bytes_s: float = 16 * 1024,
) -> str:
    """Stream a multipart body's ``file`` part into ``dest``; return the client's file name.

    Parameters
    ----------
    request : starlette.requests.Request
    dest : pathlib.Path
        A server-made path in the job's private folder.
    max_bytes : int
        Largest body accepted: a larger ``Content-Length`` is refused before reading, and
        the count of bytes received is checked after every chunk.
    idle_timeout_s, upload_timeout_s : float
        Seconds without a chunk, and in all, before the upload is dropped.
    min_rate_bytes_s : float
        Once ``idle_timeout_s`` has passed, an upload averaging fewer bytes per second is
        dropped, so a client trickling a byte now and then cannot hold a queue slot for
        ``upload_timeout_s``.

    Raises
    ------
    UploadError
        415 not multipart or a file type not accepted (checked on the part's name before
        its bytes are read), 413 too large, 408 too slow, 400 malformed, no file or
        several files.
    """
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise UploadError(
            "send the scan as multipart/form-data with a field named 'file' (e.g. "
            "curl -F file=@scan.nii.gz).",
            status=415,
        )
    limit = max_bytes
    declared = request.headers.get("content-length")
    too_big = UploadError(
        f"the upload is larger than the server's limit of {limit / 2**20:.0f} MB "
        "(--max-upload-mb); send fewer or smaller scans.",
        status=413,
    )
    if declared and declared.isdigit() and int(declared) > limit + 65536:
        raise too_big
    receiver = _Receiver(dest)
    parser = MultipartParser(params[b"boundary"], receiver.callbacks())
    received = 0
    stream = request.stream().__aiter__()
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + upload_timeout_s
    try:
        while True:
            timeout = min(idle_timeout_s, deadline - loop.time())
            if timeout <= 0:
                raise UploadError("the upload took too long; try again.", status=408)
            try:
                chunk = await asyncio.wait_for(stream.__anext__(), timeout)
            except StopAsyncIteration:
                break
            except TimeoutError:
                raise UploadError(
                    f"the upload stalled (nothing received for {idle_timeout_s:.0f} s); try again.",
                    status=408,
                ) from None
            received += len(chunk)
            if received > limit + 65536:
                raise too_big
            elapsed = loop.time() - start
            if elapsed > idle_timeout_s and received < min_rate_bytes_s * elapsed:
                raise UploadError(
                    f"the upload is too slow ({received / elapsed / 1024:.1f} KB/s, the server "
                    f"needs at least {min_rate_bytes_s / 1024:.0f} KB/s); try again.",
                    status=408,
                )
            parser.write(chunk)
        parser.finalize()
    except UploadError:
        raise
    except Exception as exc:  # the multipart parser's own errors
        raise UploadError(f"the upload is not valid multipart/form-data: {exc}", 400) from None
    finally:
        receiver.close()
    if receiver.filename is None:
        raise UploadError(
            "the upload holds no file field; send the scan in a field named 'file'.", 400
        )
    if dest.stat().st_size > limit:
        raise too_big
    return receiver.filename
