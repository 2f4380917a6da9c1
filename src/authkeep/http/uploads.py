"""Upload content checks for embedding apps: :class:`UploadCheck`, a FastAPI dependency.

An upload is accepted only when all of these hold, each stopping an attack:

* **Size, as a stream.** A declared ``Content-Length`` over ``max_bytes`` is refused at once
  (413); otherwise the body is read chunk by chunk into a spooled temporary file (memory up
  to 64 KB, then disk) and reading stops at the first byte past the limit (413) — a client
  cannot make a worker hold, or even receive, more than the limit (memory and disk
  exhaustion).
* **The bytes decide the type.** Magic numbers are read with ``puremagic`` (pure Python: no
  libmagic to install or patch, nothing native to parse hostile input). The detected type
  must be allowed (415): an executable renamed ``.png`` is an executable.
* **Everything agrees.** The declared ``Content-Type`` and the filename's extension must name
  the detected type (415): a browser or a downstream service that trusts either one never
  sees another type than the one checked (content-type confusion, stored XSS via sniffing).
* **Complete files only.** Each type's structure is checked to its end (a PNG ends with
  ``IEND``, a PDF with ``%%EOF``, a WAV's RIFF size is the file's, an MP3 holds a whole
  first frame): a truncated or malformed file is 422, never a parser crash downstream.
* **No polyglots** (``refuse_polyglots=True``, the default): bytes after the format's end
  (the classic PNG+ZIP or "GIFAR" trick) and embedded archives, executables, scripts or a
  PDF inside another type are refused (415), so a file that is an image to this check
  cannot be a JAR, a ZIP or an HTML page to another reader.

The body is the raw file (``PUT``/``POST`` with the file's ``Content-Type`` and a
``Content-Disposition: attachment; filename="…"`` header), not ``multipart/form-data``:
Starlette parses a multipart body whole before any dependency runs, so no limit of ours
could stop it early (see ``docs/uploads.md``).
"""

from __future__ import annotations

import hashlib
import re
import struct
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.message import Message
from pathlib import PurePosixPath
from typing import IO

import puremagic
from fastapi import HTTPException, Request
from starlette.requests import ClientDisconnect

__all__ = ["SUPPORTED_UPLOAD_TYPES", "CheckedUpload", "UploadCheck"]

_CHUNK = 64 * 1024
_HEAD = 8192
_TAIL = 1024
_SPOOL_IN_MEMORY = 64 * 1024


@dataclass(frozen=True, slots=True)
class _Type:
    extensions: tuple[str, ...]
    names: tuple[str, ...]
    """Every MIME name clients and puremagic use for it."""


SUPPORTED_UPLOAD_TYPES: dict[str, _Type] = {
    "image/png": _Type((".png",), ("image/png",)),
    "application/pdf": _Type((".pdf",), ("application/pdf", "application/x-pdf")),
    "audio/wav": _Type(
        (".wav", ".wave"), ("audio/wav", "audio/wave", "audio/x-wav", "audio/vnd.wave")
    ),
    "audio/mpeg": _Type((".mp3",), ("audio/mpeg", "audio/mp3", "audio/mpga")),
}
"""The types :class:`UploadCheck` can check to their end, by canonical MIME name."""

_CANONICAL = {name: key for key, rule in SUPPORTED_UPLOAD_TYPES.items() for name in rule.names}

# Formats that must not hide inside another: archives (a PNG that is also a ZIP or JAR),
# executables, markup a browser would run, a PDF (a reader opens it wherever it starts).
_EMBEDDED: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "a ZIP archive"),
    (b"PK\x05\x06", "a ZIP archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7z archive"),
    (b"\x7fELF", "an ELF executable"),
    (b"This program cannot be run in DOS mode", "a Windows executable"),
    (b"<script", "a script"),
    (b"<html", "an HTML document"),
    (b"<?php", "a PHP script"),
    (b"%PDF-", "a PDF document"),
)
_OVERLAP = max(len(signature) for signature, _ in _EMBEDDED) - 1
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_FILENAME = re.compile(r"[^/\\\x00-\x1f]{1,255}")


def _refuse(code: int, detail: str) -> HTTPException:
    return HTTPException(status_code=code, detail=detail)


@dataclass(slots=True)
class CheckedUpload:
    """An upload that passed every check; ``file`` is positioned at its start and is closed
    after the response."""

    filename: str
    content_type: str
    size: int
    sha256: str
    file: IO[bytes]


def _filename(request: Request) -> str:
    header = request.headers.get("content-disposition")
    if header is None:
        raise _refuse(422, 'Content-Disposition: attachment; filename="…" is required')
    message = Message()
    message["content-disposition"] = header
    name = message.get_filename()
    if not name or not _FILENAME.fullmatch(name):
        raise _refuse(422, "Content-Disposition must carry a plain filename")
    return name


def _declared_type(request: Request) -> str:
    value = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if not value:
        raise _refuse(422, "Content-Type is required")
    return value


def _detect(head: bytes) -> str | None:
    try:
        candidates = puremagic.magic_string(head)
    except puremagic.PureError:
        return None
    for candidate in candidates:
        canonical = _CANONICAL.get(candidate.mime_type.lower())
        # Only a signature where the format puts it (puremagic reports WAV's "WAVE" at 8,
        # after the RIFF header): a PDF header 500 bytes into a file is a polyglot trick.
        expected = 8 if canonical == "audio/wav" else 0
        if canonical is not None and candidate.offset == expected:
            return canonical
    return None


def _mp3_first_frame(head: bytes) -> int | None:
    """Where the first MPEG audio frame starts, after an optional ID3v2 tag."""
    if not head.startswith(b"ID3"):
        return 0
    if len(head) < 10 or any(byte & 0x80 for byte in head[6:10]):
        return None
    size = head[6:10]  # "syncsafe": 7 bits per byte
    return 10 + ((size[0] << 21) | (size[1] << 14) | (size[2] << 7) | size[3])


_MP3_BITRATES = {
    # (MPEG-1 Layer III, MPEG-2/2.5 Layer III) in kbit/s, index 1..14
    1: (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    2: (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _mp3_frame_length(header: bytes) -> int | None:
    """The length of the Layer III frame whose 4-byte header this is, or None."""
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        return None
    version = (header[1] >> 3) & 0x03  # 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5, 1: reserved
    layer = (header[1] >> 1) & 0x03  # 1: Layer III
    bitrate_index = header[2] >> 4
    rate_index = (header[2] >> 2) & 0x03
    padding = (header[2] >> 1) & 0x01
    if version == 1 or layer != 1 or bitrate_index in (0, 15) or rate_index == 3:
        return None
    bitrate = _MP3_BITRATES[1 if version == 3 else 2][bitrate_index - 1] * 1000
    rate = _MP3_RATES[version][rate_index]
    coefficient = 144 if version == 3 else 72
    return coefficient * bitrate // rate + padding


def _structure(kind: str, head: bytes, tail: bytes, size: int) -> tuple[bool, int]:
    """(complete, end): whether the file of ``kind`` is whole, and where its format ends
    (bytes after it are trailing data)."""
    if kind == "image/png":
        return tail.endswith(_PNG_END) or _PNG_END in tail, _end_after(tail, _PNG_END, size)
    if kind == "application/pdf":
        found = tail.rfind(b"%%EOF")
        if found < 0:
            return False, size
        end = size - len(tail) + found + len(b"%%EOF")
        # The line end after %%EOF belongs to the file.
        rest = tail[found + len(b"%%EOF") :]
        return True, end + (len(rest) - len(rest.lstrip(b"\r\n")))
    if kind == "audio/wav":
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return False, size
        declared = struct.unpack("<I", head[4:8])[0] + 8
        has_data = b"data" in head
        return declared <= size and has_data, min(declared, size)
    # audio/mpeg
    offset = _mp3_first_frame(head)
    if offset is None or offset + 4 > len(head):
        return False, size
    length = _mp3_frame_length(head[offset : offset + 4])
    if length is None:
        return False, size
    return offset + length <= size, size


def _end_after(tail: bytes, marker: bytes, size: int) -> int:
    found = tail.rfind(marker)
    if found < 0:
        return size
    return size - len(tail) + found + len(marker)


class UploadCheck:
    """A FastAPI dependency that yields a :class:`CheckedUpload` or refuses the request.

    Args:
        allowed: canonical MIME names, a subset of :data:`SUPPORTED_UPLOAD_TYPES`.
        max_bytes: the largest file accepted; reading stops right after it.
        refuse_polyglots: refuse trailing data and embedded archives, executables,
            scripts or PDFs (415).

    Use it as ``upload: Annotated[CheckedUpload, Depends(UploadCheck({"image/png"},
    max_bytes=5_000_000))]``. Behind authkeep's own app, ``AUTHKEEP_MAX_BODY_BYTES`` applies
    first: keep ``max_bytes`` at or under it.
    """

    def __init__(
        self,
        allowed: set[str] | frozenset[str],
        *,
        max_bytes: int,
        refuse_polyglots: bool = True,
    ) -> None:
        unknown = set(allowed) - SUPPORTED_UPLOAD_TYPES.keys()
        if not allowed or unknown:
            # A configuration error of the embedding app: raised at import, not per request.
            raise ValueError(
                f"UploadCheck allows only {sorted(SUPPORTED_UPLOAD_TYPES)}; "
                f"got {sorted(unknown) or 'nothing'}"
            )
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        self.allowed = frozenset(allowed)
        self.max_bytes = max_bytes
        self.refuse_polyglots = refuse_polyglots

    async def __call__(self, request: Request) -> AsyncIterator[CheckedUpload]:
        """Read, check and yield the upload; close its file after the response."""
        filename = _filename(request)
        declared = _declared_type(request)
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            raise _refuse(413, f"File larger than {self.max_bytes} bytes")
        spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)  # noqa: SIM115
        try:
            upload = await self._receive(request, spool, filename, declared)
            yield upload
        finally:
            spool.close()

    async def _receive(
        self, request: Request, spool: IO[bytes], filename: str, declared: str
    ) -> CheckedUpload:
        digest = hashlib.sha256()
        head = bytearray()
        tail = b""
        size = 0
        embedded: set[str] = set()
        carry = b""
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > self.max_bytes:
                    # Stop reading here: the rest is never received, let alone stored.
                    raise _refuse(413, f"File larger than {self.max_bytes} bytes")
                spool.write(chunk)
                digest.update(chunk)
                if len(head) < _HEAD:
                    head += chunk[: _HEAD - len(head)]
                tail = (tail + chunk)[-_TAIL:]
                if self.refuse_polyglots:
                    # Overlapping windows: a signature split across two chunks is found.
                    window = carry + chunk
                    embedded.update(_embedded_in(window))
                    carry = window[-_OVERLAP:]
        except ClientDisconnect:
            raise _refuse(422, "The upload ended before its end") from None
        if size == 0:
            raise _refuse(422, "The file is empty")
        kind = _detect(bytes(head))
        if kind is None or kind not in self.allowed:
            raise _refuse(
                415, "File content is not an allowed type: " + ", ".join(sorted(self.allowed))
            )
        if _CANONICAL.get(declared) != kind:
            raise _refuse(415, f"Content-Type does not match the file content ({kind})")
        if PurePosixPath(filename).suffix.lower() not in SUPPORTED_UPLOAD_TYPES[kind].extensions:
            raise _refuse(415, f"File extension does not match the file content ({kind})")
        complete, end = _structure(kind, bytes(head), tail, size)
        if not complete:
            raise _refuse(422, f"File is truncated or malformed ({kind})")
        if self.refuse_polyglots:
            if end < size:
                raise _refuse(415, "File has data after its end (a polyglot)")
            if kind == "application/pdf":
                embedded.discard(_PDF)  # its own header
            if embedded:
                raise _refuse(415, f"File contains {min(embedded)} (a polyglot)")
        spool.seek(0)
        return CheckedUpload(filename, kind, size, digest.hexdigest(), spool)


_PDF = "a PDF document"


def _embedded_in(window: bytes) -> set[str]:
    return {name for signature, name in _EMBEDDED if signature in window}
