"""A run's artifact files as the audit reads them: where they are locally, and whether a PNG is whole."""

from __future__ import annotations

import io
import urllib.parse
import urllib.request
from pathlib import Path

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MIN_IMAGE_SIDE = 10


def local_artifact_root(artifact_uri: str | None) -> Path | None:
    """The folder of a run's artifacts if they are on this machine (``file:`` or a plain path)."""
    if not artifact_uri:
        return None
    parsed = urllib.parse.urlparse(artifact_uri)
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    if parsed.scheme == "" or (
        len(parsed.scheme) == 1 and artifact_uri[1:3] in (":\\", ":/")
    ):  # posix or C:\
        return Path(artifact_uri)
    return None


def png_problem(data: bytes) -> str | None:
    """Why ``data`` is not a whole, decodable PNG of a real image (None if it is).

    Pillow's ``verify`` checks the chunk structure and CRCs; ``load`` then decodes every pixel,
    so a truncated, corrupted or short image fails too.
    """
    from PIL import Image, UnidentifiedImageError

    if not data.startswith(PNG_MAGIC):
        return f"not a PNG ({len(data)} bytes)"
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()  # structure and CRCs; the image cannot be used after verify
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            image.load()  # decodes the pixels: catches image data shorter than the header says
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError) as exc:
        return f"does not decode: {type(exc).__name__}: {exc}"
    if min(width, height) < MIN_IMAGE_SIDE:
        return f"image is {width}x{height}"
    return None
