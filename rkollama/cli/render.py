"""Text the CLI prints, formatted as Ollama's CLI formats it (sizes, times, tables, stats)."""

import math
from datetime import datetime, timezone
from typing import TextIO

from rkollama.api.types import Metrics
from rkollama.durations import format_go_duration


def human_bytes(size: int) -> str:
    """Decimal units like Ollama: `98 MB`, `4.7 GB`."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if size >= scale:
            value = size / scale
            if value >= 10 or value == math.trunc(value):
                return f"{int(value)} {unit}"
            return f"{value:.1f} {unit}"
    return f"{size} B"


def human_number(count: int) -> str:
    """A count as Ollama's `show` prints it (format.HumanNumber): 29K, 1.50M, 3B."""
    for scale, suffix, decimals in ((1e9, "B", 1), (1e6, "M", 2)):
        if count >= scale:
            number = count / scale
            return f"{number:.0f}{suffix}" if number == int(number) else f"{number:.{decimals}f}{suffix}"
    return f"{count / 1e3:.0f}K" if count >= 1e3 else str(count)


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def human_time_ago(text: str, now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    seconds = (now - _parse_time(text)).total_seconds()
    return _human_span(seconds) + " ago"


def human_until(text: str, now: datetime | None = None) -> str:
    when = _parse_time(text)
    if when.year <= 1:
        return "Stopping..."
    now = now or datetime.now(timezone.utc)
    seconds = (when - now).total_seconds()
    if seconds > 100 * 365 * 86400:
        return "Forever"
    if seconds < 0:
        return "Stopping..."
    return _human_span(seconds) + " from now"


_SPANS: tuple[tuple[float, float, str], ...] = (
    # (below this many seconds, counted in units of this many seconds, said as this word; a
    # capitalised word is said as it is), as Go's go-humanize phrases a span for Ollama
    (1, 1, "Less than a second"),
    (60, 1, "second"),
    (120, 60, "About a minute"),
    (3600, 60, "minute"),
    (7200, 3600, "About an hour"),
    (48 * 3600, 3600, "hour"),
    (14 * 86400, 86400, "day"),
    (60 * 86400, 7 * 86400, "week"),
    (730 * 86400, 30 * 86400, "month"),
    (math.inf, 365 * 86400, "year"),
)


def _human_span(seconds: float) -> str:
    seconds = abs(seconds)
    _, unit, word = next(span for span in _SPANS if seconds < span[0])
    return word if word[0].isupper() else _plural(int(seconds / unit), word)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Left-aligned columns, no borders, padded like Ollama's tables."""
    widths = [max(len(str(r[i])) for r in [headers] + rows) for i in range(len(headers))]
    lines = []
    for row in [headers] + rows:
        cells = [str(c).ljust(widths[i] + 4) if i < len(row) - 1 else str(c) for i, c in enumerate(row)]
        lines.append("".join(cells).rstrip())
    return "\n".join(lines)


def verbose_stats(final: Metrics) -> str:
    """Ollama's `--verbose` block: labels padded to column 23, Go durations, `%.2f tokens/s`."""
    lines = []

    def add(label: str, value: str) -> None:
        lines.append(f"{label + ':':<22}{value}")

    def nonzero(key: str) -> int:
        value = final.get(key) or 0
        return int(value) if isinstance(value, int | float) else 0

    if nonzero("total_duration"):
        add("total duration", format_go_duration(nonzero("total_duration")))
    if nonzero("load_duration"):
        add("load duration", format_go_duration(nonzero("load_duration")))
    if nonzero("prompt_eval_count"):
        add("prompt eval count", f"{nonzero('prompt_eval_count')} token(s)")
    if nonzero("prompt_eval_duration"):
        add("prompt eval duration", format_go_duration(nonzero("prompt_eval_duration")))
        rate = nonzero("prompt_eval_count") / nonzero("prompt_eval_duration") * 1e9
        add("prompt eval rate", f"{rate:.2f} tokens/s")
    if nonzero("eval_count"):
        add("eval count", f"{nonzero('eval_count')} token(s)")
    if nonzero("eval_duration"):
        add("eval duration", format_go_duration(nonzero("eval_duration")))
        rate = nonzero("eval_count") / nonzero("eval_duration") * 1e9
        add("eval rate", f"{rate:.2f} tokens/s")
    return "\n".join(lines)


class WordWrap:
    """Writes streamed text, breaking lines at word boundaries before `width` columns (`ollama
    run`'s word wrap). A word is held until its end is seen; `finish()` writes what is held."""

    def __init__(self, out: TextIO, width: int):
        self.out, self.width = out, max(10, width)
        self.column = 0
        self.word = ""

    def write(self, text: str) -> None:
        for char in text:
            if char == "\n":
                self._word()
                self.out.write("\n")
                self.column = 0
            elif char == " ":
                self._word()
                if self.column + 1 > self.width:
                    self.out.write("\n")  # the space that ends a full line becomes the break
                    self.column = 0
                else:
                    self.out.write(" ")
                    self.column += 1
            else:
                self.word += char
                if len(self.word) >= self.width:  # a word longer than a line is cut
                    self._word()
        self.out.flush()

    def _word(self) -> None:
        if not self.word:
            return
        if self.column and self.column + len(self.word) > self.width:
            self.out.write("\n")
            self.column = 0
        self.out.write(self.word)
        self.column += len(self.word)
        self.word = ""

    def flush(self) -> None:
        self.out.flush()

    def finish(self) -> None:
        self._word()
        self.out.flush()
