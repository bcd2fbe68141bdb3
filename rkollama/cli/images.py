"""Image paths typed into the REPL for a vision model, as `ollama run` takes them: a path ending
in .png, .jpg, .jpeg or .webp (quoted, or with `\\ ` for spaces) is read, removed from the text and
sent as an image of that message."""

import base64
import re
from pathlib import Path

EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
MAX_IMAGE_BYTES = 32 * 1024 * 1024
"""The daemon's default body limit: a larger image could not be sent anyway."""
_PATH = re.compile(r"""(?:'([^']+)'|"([^"]+)"|((?:~|\.{1,2}|/)?(?:[^\s'"\\]|\\ )+))""")


def extract(text: str) -> tuple[str, list[str], list[str]]:
    """(text without the image paths, base64 images, paths added); a path that cannot be read is
    left in the text (it may just be words)."""
    images, added = [], []
    kept = text
    for match in _PATH.finditer(text):
        raw = next(group for group in match.groups() if group)
        if not raw.lower().endswith(EXTENSIONS):
            continue
        path = Path(raw.replace("\\ ", " ")).expanduser()
        try:
            if not path.is_file() or path.stat().st_size > MAX_IMAGE_BYTES:
                continue
            images.append(base64.b64encode(path.read_bytes()).decode("ascii"))
        except OSError:
            continue
        added.append(str(path))
        kept = kept.replace(match.group(0), "", 1)
    return " ".join(kept.split()) if added else text, images, added
