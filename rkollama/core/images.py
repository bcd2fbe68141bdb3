"""Images as the dialects send them: base64 text, plain or inside a `data:` URI, and the check
every image passes before any engine sees it (a PNG, JPEG or WebP still picture, whole, of a
bounded size). Each dialect words its own errors (they are part of its wire format); the
reasons here are sentences those errors quote."""

import base64
import binascii
import io
from dataclasses import dataclass

FORMATS = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp"}
"""Pillow's format names → the media subtypes the dialects name (Ollama's own list)."""
MAX_SIDE = 16384
"""Pixels along either side."""
MAX_PIXELS = 8192 * 8192
"""Width × height (a 48-megapixel photo fits; its RGB copy is ~150 MB)."""


class BadImage(ValueError):
    """An image no engine should see; the message says why, in words for the user."""


@dataclass(frozen=True)
class Picture:
    """A decoded image: `rgb` holds width × height × 3 bytes, row by row."""

    width: int
    height: int
    rgb: bytes


def is_base64(data: object) -> bool:
    """True when `data` is a string of valid standard base64 (padding included)."""
    if not isinstance(data, str):
        return False
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def split_data_uri(text: str) -> tuple[str, str]:
    """("data:image/png;base64", payload) of a data URI; ("", text) for anything else."""
    if text.startswith("data:") and "," in text:
        header, _, payload = text.partition(",")
        return header, payload
    return "", text


def sniff(data: bytes) -> str:
    """"png", "jpeg" or "webp" from the file's signature; "" for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return ""


def declared_matches(media_type: str, text: str) -> bool:
    """Whether base64 `text` holds the kind of image `media_type` ("image/png", "image/jpg", …)
    says; a blank type matches anything (the full check comes later, in `check`)."""
    subtype = media_type.lower().removeprefix("image/")
    if not subtype:
        return True
    found = sniff(base64.b64decode(text[:64]))  # a signature is in the first bytes
    return found == ("jpeg" if subtype == "jpg" else subtype)


def decode(data: bytes) -> Picture:
    """The picture in `data`, or BadImage: not a PNG/JPEG/WebP, damaged or truncated, empty,
    larger than MAX_SIDE or MAX_PIXELS (checked from the header, before any pixel is decoded),
    or animated. Transparency is dropped (engines read RGB)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data), formats=list(FORMATS)) as image:
            width, height = image.size
            if width < 1 or height < 1:
                raise BadImage(f"the image is {width}×{height} pixels")
            if max(width, height) > MAX_SIDE or width * height > MAX_PIXELS:
                raise BadImage(f"the image is {width}×{height} pixels; at most {MAX_SIDE} on a side "
                               f"and {MAX_PIXELS:,} in all are accepted")
            # An animated PNG or WebP is refused; a JPEG with more pictures in it (MPO, as some
            # cameras write a depth or preview image beside the photo) is read as its first.
            if image.format != "MPO" and getattr(image, "n_frames", 1) > 1:
                raise BadImage("animated images are not supported")
            image.load()
            rgb = image if image.mode == "RGB" else image.convert("RGB")
            return Picture(width, height, rgb.tobytes())
    except BadImage:
        raise
    except Image.DecompressionBombError:
        raise BadImage(f"the image is larger than {MAX_PIXELS:,} pixels") from None
    except UnidentifiedImageError:
        if sniff(data):  # the signature of a known format, then a header Pillow refuses
            raise BadImage(f"the {sniff(data).upper()} header is invalid (an empty image?)") from None
        raise BadImage("the data is not a PNG, JPEG or WebP image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # Pillow's words for damage
        raise BadImage(f"the image is damaged or truncated ({exc})") from None


def check(text: str) -> None:
    """Raise BadImage unless the base64 `text` holds an image `decode` accepts."""
    decode(base64.b64decode(text))
