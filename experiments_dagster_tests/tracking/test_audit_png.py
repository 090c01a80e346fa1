"""The audit's PNG integrity check against real PNGs and damaged copies of them."""

from __future__ import annotations

import io
import struct
import zlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from experiments_dagster.tracking.audit import png_problem  # noqa: E402


def _png(width_in: float = 2.0, height_in: float = 1.5, dpi: int = 50, **savefig) -> bytes:
    fig, ax = plt.subplots(figsize=(width_in, height_in), dpi=dpi)
    ax.plot([0, 1], [1, 0])
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, **savefig)
    plt.close(fig)
    return buf.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def test_real_pngs_pass() -> None:
    assert png_problem(_png()) is None
    assert png_problem(_png(4, 3, 100, transparent=True)) is None


def test_damaged_pngs_are_named() -> None:
    data = _png()
    assert png_problem(b"") == "not a PNG (0 bytes)"
    assert png_problem(b"GIF89a" + data[6:]).startswith("not a PNG")
    assert png_problem(data[:200]).startswith("does not decode: ")
    assert png_problem(data[:-12]) == "does not decode: OSError: truncated PNG file"
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    assert png_problem(bytes(flipped)) == (
        "does not decode: SyntaxError: broken PNG file (bad header checksum in b'IDAT')"
    )


def _synthetic(width: int, height: int, rows: bytes) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows))
        + _chunk(b"IEND", b"")
    )


def test_tiny_images_are_refused() -> None:
    # Pillow decodes a well-formed stream that ends a row early without complaint; a damaged
    # stream fails its CRC or zlib check (above and below), which is what a broken upload does.
    good = b"".join(b"\x00" + bytes(20) for _ in range(12))
    assert png_problem(_synthetic(20, 12, good)) is None
    assert png_problem(_synthetic(5, 5, b"".join(b"\x00" + bytes(5) for _ in range(5)))) == "image is 5x5"


@pytest.mark.parametrize("body", [b"not zlib at all"])
def test_image_data_that_does_not_inflate(body: bytes) -> None:
    header = struct.pack(">IIBBBBB", 20, 12, 8, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")
    assert png_problem(data) == "does not decode: OSError: broken data stream when reading image file"


def test_local_artifact_root() -> None:
    from pathlib import Path

    from experiments_dagster.tracking.audit import local_artifact_root

    assert local_artifact_root("file:///tmp/store/1/abc/artifacts") == Path("/tmp/store/1/abc/artifacts")
    assert local_artifact_root("file:///tmp/with%20space/a") == Path("/tmp/with space/a")
    assert local_artifact_root("/tmp/store/artifacts") == Path("/tmp/store/artifacts")
    assert local_artifact_root("mlflow-artifacts:/1/abc/artifacts") is None
    assert local_artifact_root("s3://bucket/1/abc/artifacts") is None
    assert local_artifact_root(None) is None
