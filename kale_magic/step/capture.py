"""A step's outputs: every byte in its log, a bounded excerpt in its executed notebook.

A step may print gigabytes, so nothing here may cost more than a constant per
write.  ``sys.stdout`` is a C ``TextIOWrapper`` whose binary side appends the
encoded chunks (8 KiB or more) to a list: a ``print`` runs no Python code of
ours.  The chunks are taken in order ("drained") before anything else reaches
the outputs, by a thread every :data:`LOG_FLUSH` seconds (so the log reads
live), and whenever stderr is written, a rich output or error is shown, or a
cell ends.  ``sys.stderr`` is written through, so the order of stdout and
stderr text is kept exactly.

The executed notebook keeps the first :data:`EXCERPT` characters of a cell's
text as they came, then only the last :data:`EXCERPT` before each rich output
and at the end of the cell, behind one line saying how many characters were left
out; the log has all of them.  Displays (images, HTML, results) are kept as they come until they
hold :data:`DISPLAY_MAX` characters in the whole notebook (what a cleared output held is given
back); later ones are left out behind one output per cell that counts them, their text in the log.
A step that shows a thousand figures thus leaves a notebook the server can still render.
"""

from __future__ import annotations

import bisect
import io
import itertools
import threading

EXCERPT = 100_000  # characters of a cell's text the notebook keeps at its start, and again at its end
LOG_FLUSH = 0.2  # seconds between drains, so that the log reads live
DISPLAY_MAX = 20_000_000  # characters of display data (base64 images mostly) a step's notebook keeps


class _Sink:
    """The binary side of a step's stdout or stderr: ``write`` is whatever takes the encoded chunks."""

    closed = False

    def __init__(self, name: str, write):
        self.name = name
        self.write = write

    def readable(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def isatty(self) -> bool:
        return False

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def _text_stream(sink: _Sink, write_through: bool) -> io.TextIOWrapper:
    return io.TextIOWrapper(sink, encoding="utf-8", errors="backslashreplace", newline="\n",
                            write_through=write_through)


class Capture:
    """The outputs of a step's cells (nbformat v4 dicts) and its log file; thread-safe."""

    def __init__(self, log_path):
        self._log = open(log_path, "ab")
        self._lock = threading.RLock()
        self._displayed = 0  # characters of display data kept in the notebook
        self._chunks: list[bytes] = []  # stdout, encoded, not drained yet
        self.stdout = _text_stream(_Sink("<stdout>", self._chunks.append), write_through=False)
        self.stderr = _text_stream(_Sink("<stderr>", self._stderr), write_through=True)
        self.start_cell()
        self._closed = threading.Event()
        self._flusher = threading.Thread(target=self._flush_while_open, name="kale-log", daemon=True)
        self._flusher.start()

    # the cell ---------------------------------------------------------------------------
    def start_cell(self) -> None:
        with self._lock:
            self._drain()
            self.cell: list[dict] = []
            self._kept = 0  # text characters kept in place in this cell
            self._tail: list[str] = []  # the text after those
            self._tail_names: list[tuple[int, str]] = []  # (index in _tail, stream name) where the stream changes
            self._tail_size = 0
            self._left_out = 0
            self._cell_displayed = 0  # characters of display data kept in this cell
            self._displays_left_out: dict | None = None  # this cell's marker output, once one was left out
            self._left_out_count = self._left_out_size = 0

    def finish_cell(self) -> list[dict]:
        """The cell's outputs, its text joined; the log is flushed."""
        with self._lock:
            self.sync()
            self._place_tail()
            for output in self.cell:
                if output["output_type"] == "stream":
                    output["text"] = "".join(output["text"])
            return self.cell

    def add(self, output: dict, log_text: str | None = None) -> None:
        """A rich output or an error, after the text that came before it; ``log_text`` is its line in the log."""
        with self._lock:
            self._drain()
            self._place_tail()
            if "data" not in output or self._room_for(output["data"]):
                self.cell.append(output)
            if log_text is not None:
                self._log.write(log_text.encode("utf-8", "backslashreplace") + b"\n")
                self._log.flush()

    def clear(self) -> None:
        """``clear_output()``: the cell's outputs so far go (the log keeps them)."""
        with self._lock:
            self._displayed -= self._cell_displayed
            self.start_cell()

    def _room_for(self, data: dict) -> bool:
        """Whether a display of ``data`` fits in what the notebook keeps; if not, it is counted in the
        cell's marker output instead."""
        size = sum(len(value) if isinstance(value, str) else len(repr(value)) for value in data.values())
        if self._displayed + size <= DISPLAY_MAX:
            self._displayed += size
            self._cell_displayed += size
            return True
        if self._displays_left_out is None:
            self._displays_left_out = {"output_type": "display_data", "data": {}, "metadata": {}}
            self.cell.append(self._displays_left_out)
        self._left_out_count += 1
        self._left_out_size += size
        self._displays_left_out["data"] = {"text/plain": (
            f"[... {self._left_out_count:,} display output(s) of {self._left_out_size:,} characters left out "
            f"here: the notebook keeps {DISPLAY_MAX:,} characters of displays; the step's log has their text ...]")}
        return False

    # the log ----------------------------------------------------------------------------
    def sync(self) -> None:
        """Everything written so far into the outputs and onto the log file (before ``!cmd`` writes there)."""
        with self._lock:
            self._drain()
            self._log.flush()

    def _drain(self) -> None:
        """Take the stdout chunks written so far; ones appended meanwhile stay for the next drain."""
        with self._lock:
            self.stdout.flush()
            chunks = self._chunks
            count = len(chunks)
            if count:
                data = b"".join(chunks[:count])
                del chunks[:count]
                self._text("stdout", data)

    def close(self) -> None:
        self._closed.set()
        self._flusher.join()
        self.sync()
        self._log.close()

    def _flush_while_open(self) -> None:
        while not self._closed.wait(LOG_FLUSH):
            self.sync()

    def _stderr(self, data: bytes) -> None:
        with self._lock:
            self._drain()
            self._text("stderr", data)

    # text -------------------------------------------------------------------------------
    def _text(self, name: str, data: bytes) -> None:
        self._log.write(data)
        text = data.decode("utf-8", "replace")  # chunks hold whole characters
        if self._kept < EXCERPT:
            room = EXCERPT - self._kept
            if len(text) <= room:
                self._kept += len(text)
                return self._add_text(name, text)
            head = text[:room]
            head = head[:head.rfind("\n") + 1] or head  # end the excerpt with a whole line
            self._kept = EXCERPT
            self._add_text(name, head)
            text = text[len(head):]
        if not self._tail_names or self._tail_names[-1][1] != name:
            self._tail_names.append((len(self._tail), name))
        self._tail.append(text)
        self._tail_size += len(text)
        if self._tail_size > 4 * EXCERPT:
            self._trim_tail()

    def _add_text(self, name: str, text: str) -> None:
        last = self.cell[-1] if self.cell else None
        if last is not None and last["output_type"] == "stream" and last["name"] == name:
            last["text"].append(text)
        else:
            self.cell.append({"output_type": "stream", "name": name, "text": [text]})

    def _trim_tail(self) -> None:
        """Keep the last EXCERPT characters of the tail (the oldest piece kept may be cut)."""
        from_end = list(itertools.accumulate(map(len, reversed(self._tail))))
        keep = min(bisect.bisect_left(from_end, EXCERPT) + 1, len(from_end))  # pieces
        cut = len(self._tail) - keep
        size = from_end[keep - 1]
        if size > EXCERPT:
            whole = self._tail[cut]
            piece = whole[size - EXCERPT:]
            start = piece.find("\n") + 1  # start with a whole line
            if 0 < start < len(piece):
                piece = piece[start:]
            self._tail[cut] = piece
            size -= len(whole) - len(piece)
        self._left_out += self._tail_size - size
        names = [(max(0, i - cut), name) for i, name in self._tail_names]
        first = max(n for n, (i, _) in enumerate(names) if i == 0)
        self._tail, self._tail_names, self._tail_size = self._tail[cut:], names[first:], size

    def _place_tail(self) -> None:
        """Put the kept end of the text in place, behind the marker line if some was left out."""
        if not self._tail:
            return
        self._trim_tail()
        names = self._tail_names
        if self._left_out:
            last = self.cell[-1] if self.cell else {}
            fresh_line = "" if last.get("text", ["\n"])[-1].endswith("\n") else "\n"
            self._add_text(names[0][1], f"{fresh_line}[... {self._left_out:,} characters of output left out here; "
                                        "the step's log has all of it ...]\n")
        for (start, name), (end, _) in zip(names, names[1:] + [(len(self._tail), "")]):
            self._add_text(name, "".join(self._tail[start:end]))
        self._tail, self._tail_names = [], []
        self._tail_size = self._left_out = 0
