"""Progress of long CLI runs (device imports, labels) on standard error: items done, rate and time left.

On a terminal one line is redrawn a few times a second; elsewhere (CI logs, pipes) a line is printed every few
seconds, so a log shows the run advancing without thousands of lines.
"""

from __future__ import annotations

import sys
import time
from typing import IO


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class Progress:
    """Counts items (devices, labels) against an expected total, which may be unknown (None)."""

    def __init__(
        self, what: str, total: int | None, unit: str = "devices", stream: IO[str] | None = None
    ) -> None:
        self.what = what
        self.total = total
        self.unit = unit
        self.done = 0
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty()
        self._interval = 0.25 if self._tty else 5.0
        self._start = time.monotonic()
        self._shown = 0.0 if self._tty else self._start  # a log gets its first line after the interval
        self._width = 0

    def advance(self, count: int = 1) -> None:
        self.update(self.done + count)

    def update(self, done: int) -> None:
        """Set the count (a daemon's report of how far it is)."""
        self.done = done
        now = time.monotonic()
        if now - self._shown >= self._interval:
            self._shown = now
            self._show(self.line())

    def line(self) -> str:
        """``what: done/total unit (pct %), rate/s, time left``, as far as it is known."""
        elapsed = max(time.monotonic() - self._start, 1e-6)
        rate = self.done / elapsed
        text = f"{self.what}: {self.done:,}"
        if self.total:
            text += f"/{self.total:,} {self.unit} ({min(100, 100 * self.done // self.total)} %)"
        else:
            text += f" {self.unit}"
        text += f", {rate:,.0f}/s"
        if self.total and rate > 0 and self.done < self.total:
            text += f", {_duration((self.total - self.done) / rate)} left"
        return text

    def note(self, text: str) -> None:
        """A phase without a count (waiting for the daemon): shown at once, replacing the progress line."""
        self._show(f"{self.what}: {text}", force_newline=not self._tty)

    def finish(self) -> None:
        """The last count with the elapsed time, ending the line."""
        elapsed = time.monotonic() - self._start
        self._show(f"{self.what}: {self.done:,} {self.unit} in {_duration(elapsed)}", force_newline=True)

    def _show(self, text: str, force_newline: bool = False) -> None:
        if self._tty:
            padding = " " * max(0, self._width - len(text))
            self._stream.write("\r" + text + padding)
            self._width = len(text)
            if force_newline:
                self._stream.write("\n")
                self._width = 0
        else:
            self._stream.write(text + "\n")
        self._stream.flush()
