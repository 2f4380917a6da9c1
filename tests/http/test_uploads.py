"""``UploadCheck``: real files of each allowed type pass; a renamed executable, a mismatch of
declared type or extension, a truncated file, a polyglot and a file over the limit sent
slowly are refused with 415/422/413 — the last after reading little more than the limit."""

# No ``from __future__ import annotations``: FastAPI must see the local ``check`` dependency.
import struct
import zlib
from collections.abc import AsyncIterator
from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI

from authkeep import CheckedUpload, UploadCheck

LIMIT = 64 * 1024
ALL = {"image/png", "application/pdf", "audio/wav", "audio/mpeg"}


def png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + bytes([x * 16, 255 - x * 16, 128]) * 8 for x in range(8))
    header = struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def wav() -> bytes:
    samples = b"".join(struct.pack("<h", (i * 997) % 20000 - 10000) for i in range(800))
    fmt = struct.pack("<HHIIHH", 1, 1, 8000, 16000, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(samples)) + samples
    return b"RIFF" + struct.pack("<I", len(body)) + body


def mp3() -> bytes:
    # One MPEG-1 Layer III frame: 128 kbit/s, 44.1 kHz, no padding: 417 bytes.
    header = bytes([0xFF, 0xFB, 0x90, 0x64])
    return header + b"\x00" * (417 - 4)


def pdf() -> bytes:
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for number, obj in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 4\n0000000000 65535 f \n"
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size 4 /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % xref
    return out


FILES = {
    "image/png": ("photo.png", png),
    "application/pdf": ("report.pdf", pdf),
    "audio/wav": ("voice.wav", wav),
    "audio/mpeg": ("song.mp3", mp3),
}


def app_with(check: UploadCheck) -> FastAPI:
    app = FastAPI()

    @app.put("/upload")
    async def upload(
        file: Annotated[CheckedUpload, Depends(check)],
    ) -> dict[str, object]:
        data = file.file.read()
        return {"type": file.content_type, "size": file.size, "read": len(data)}

    return app


async def send(
    app: FastAPI,
    content: bytes | AsyncIterator[bytes],
    *,
    filename: str | None,
    content_type: str | None,
) -> httpx.Response:
    headers = {}
    if filename is not None:
        headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    if content_type is not None:
        headers["Content-Type"] = content_type
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        return await http.put("/upload", content=content, headers=headers)


@pytest.mark.parametrize("kind", sorted(FILES))
async def test_a_real_file_of_each_allowed_type_is_accepted(kind: str) -> None:
    name, make = FILES[kind]
    data = make()
    response = await send(
        app_with(UploadCheck(ALL, max_bytes=LIMIT)), data, filename=name, content_type=kind
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"type": kind, "size": len(data), "read": len(data)}


async def test_a_type_not_in_the_allowed_set_is_415() -> None:
    check = UploadCheck({"image/png"}, max_bytes=LIMIT)
    response = await send(app_with(check), pdf(), filename="a.pdf", content_type="application/pdf")
    assert response.status_code == 415
    assert "not an allowed type" in response.json()["detail"]


@pytest.mark.parametrize(
    "payload",
    [
        b"\x7fELF\x02\x01\x01" + b"\x00" * 200,
        b"MZ\x90\x00\x03"
        + b"\x00" * 60
        + b"This program cannot be run in DOS mode."
        + b"\x00" * 50,
        b"#!/bin/sh\nrm -rf /\n",
        b"<html><script>alert(1)</script></html>",
    ],
    ids=["elf", "pe", "shell", "html"],
)
async def test_a_renamed_executable_or_script_is_415(payload: bytes) -> None:
    response = await send(
        app_with(UploadCheck(ALL, max_bytes=LIMIT)),
        payload,
        filename="cat.png",
        content_type="image/png",
    )
    assert response.status_code == 415
    assert "not an allowed type" in response.json()["detail"]


async def test_a_declared_type_that_disagrees_with_the_bytes_is_415() -> None:
    response = await send(
        app_with(UploadCheck(ALL, max_bytes=LIMIT)),
        png(),
        filename="a.png",
        content_type="application/pdf",
    )
    assert response.status_code == 415
    assert response.json()["detail"] == "Content-Type does not match the file content (image/png)"


async def test_an_extension_that_disagrees_with_the_bytes_is_415() -> None:
    response = await send(
        app_with(UploadCheck(ALL, max_bytes=LIMIT)),
        png(),
        filename="a.html",
        content_type="image/png",
    )
    assert response.status_code == 415
    assert response.json()["detail"] == "File extension does not match the file content (image/png)"


@pytest.mark.parametrize("kind", sorted(FILES))
async def test_a_truncated_file_is_422(kind: str) -> None:
    name, make = FILES[kind]
    data = make()
    response = await send(
        app_with(UploadCheck(ALL, max_bytes=LIMIT)),
        data[: len(data) - 20],
        filename=name,
        content_type=kind,
    )
    assert response.status_code == 422
    assert response.json()["detail"] == f"File is truncated or malformed ({kind})"


ZIP = (
    b"PK\x03\x04\x14\x00\x00\x00\x00\x00"
    + b"\x00" * 20
    + b"evil.class"
    + b"PK\x05\x06"
    + b"\x00" * 18
)


@pytest.mark.parametrize(
    ("kind", "data", "detail"),
    [
        ("image/png", png() + ZIP, "File has data after its end (a polyglot)"),
        (
            "audio/wav",
            wav() + b"<script>alert(1)</script>",
            "File has data after its end (a polyglot)",
        ),
        # A PDF that is also a JAR: the archive sits inside, before %%EOF.
        (
            "application/pdf",
            pdf().replace(b"xref\n", b"% " + ZIP + b"\nxref\n"),
            "File contains a ZIP archive (a polyglot)",
        ),
        (
            "audio/mpeg",
            mp3()[:200] + b"<?php system($_GET[1]); ?>" + mp3()[226:],
            "File contains a PHP script (a polyglot)",
        ),
    ],
    ids=["png+zip", "wav+script", "pdf+jar", "mp3+php"],
)
async def test_a_polyglot_is_415_when_refused_and_accepted_when_not(
    kind: str, data: bytes, detail: str
) -> None:
    name = FILES[kind][0]
    refused = await send(
        app_with(UploadCheck(ALL, max_bytes=LIMIT)), data, filename=name, content_type=kind
    )
    assert refused.status_code == 415
    assert refused.json()["detail"] == detail

    allowed = await send(
        app_with(UploadCheck(ALL, max_bytes=LIMIT, refuse_polyglots=False)),
        data,
        filename=name,
        content_type=kind,
    )
    assert allowed.status_code == 200, allowed.text


async def test_a_signature_split_across_two_chunks_is_still_found() -> None:
    local_header = ZIP[: ZIP.index(b"PK\x05\x06")]  # the only signature: it must be found
    data = pdf().replace(b"xref\n", b"% " + local_header + b"\nxref\n", 1)
    cut = data.index(b"PK\x03\x04") + 2  # the signature straddles the two chunks

    async def two_chunks() -> AsyncIterator[bytes]:
        yield data[:cut]
        yield data[cut:]

    response = await send(
        app_with(UploadCheck(ALL, max_bytes=LIMIT)),
        two_chunks(),
        filename="a.pdf",
        content_type="application/pdf",
    )
    assert response.status_code == 415
    assert response.json()["detail"] == "File contains a ZIP archive (a polyglot)"


async def test_a_file_over_the_limit_sent_slowly_is_413_after_reading_little_more() -> None:
    chunk = b"\x89PNG\r\n\x1a\n" + b"\x00" * 1016  # 1 KB chunks, forever
    sent = 0

    async def slow_body() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(10_000):  # 10 MB if nobody stops reading
            sent += len(chunk)
            yield chunk

    response = await send(
        app_with(UploadCheck(ALL, max_bytes=LIMIT)),
        slow_body(),
        filename="big.png",
        content_type="image/png",
    )
    assert response.status_code == 413
    assert response.json()["detail"] == f"File larger than {LIMIT} bytes"
    # Reading stopped at the first chunk past the limit.
    assert sent <= LIMIT + 2 * len(chunk)


async def test_a_declared_length_over_the_limit_is_413_before_reading() -> None:
    response = await send(
        app_with(UploadCheck(ALL, max_bytes=100)), png(), filename="a.png", content_type="image/png"
    )
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("filename", "content_type", "detail"),
    [
        (None, "image/png", 'Content-Disposition: attachment; filename="…" is required'),
        ("../../etc/passwd", "image/png", "Content-Disposition must carry a plain filename"),
        ("a.png", None, "Content-Type is required"),
    ],
)
async def test_missing_or_malformed_metadata_is_422(
    filename: str | None, content_type: str | None, detail: str
) -> None:
    response = await send(
        app_with(UploadCheck(ALL, max_bytes=LIMIT)),
        png(),
        filename=filename,
        content_type=content_type,
    )
    assert response.status_code == 422
    assert response.json()["detail"] == detail


async def test_an_empty_body_is_422() -> None:
    response = await send(
        app_with(UploadCheck(ALL, max_bytes=LIMIT)), b"", filename="a.png", content_type="image/png"
    )
    assert response.status_code == 422


def test_an_unsupported_allowed_type_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="image/svg"):
        UploadCheck({"image/svg+xml"}, max_bytes=LIMIT)
