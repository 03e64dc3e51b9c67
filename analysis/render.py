"""Results as documents: a list of blocks, written out as Markdown or as one self-contained HTML page, and the number
formats of their tables. ``probe analyze`` (:mod:`analysis.report`) and the committed reproduction report
(:mod:`probe.studies.reproduction`) both render through here.

Text may use Markdown's **bold**, *italic* and `code`; the HTML page translates them and escapes everything else.
"""

from __future__ import annotations

import base64
import csv
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path, PurePath

import numpy as np

from probe.storage.atomic import write_atomic


@dataclass(frozen=True)
class Heading:
    level: int  # 1 to 3
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Items:
    """A bulleted list."""

    items: Sequence[str]


@dataclass(frozen=True)
class Code:
    """Lines shown as they are, e.g. commands."""

    lines: Sequence[str]


@dataclass(frozen=True)
class Table:
    header: Sequence
    rows: Sequence[Sequence]


@dataclass(frozen=True)
class Image:
    """A PNG figure at ``path``, relative to the document."""

    path: PurePath | str
    alt: str


Block = Heading | Paragraph | Items | Code | Table | Image


def csv_text(records: Sequence[Mapping]) -> str:
    """Rows of one shape as CSV text, the first row's keys the header (empty text for no rows)."""
    buf = io.StringIO()
    if records:
        writer = csv.DictWriter(buf, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    return buf.getvalue()


def read_table(path: Path) -> list[dict]:
    """A CSV file's rows as dicts of strings (none where the file does not exist)."""
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def write_table(path: Path, records: Sequence[Mapping]) -> None:
    """Write ``records`` as a CSV file, atomically."""
    text = csv_text(records)
    write_atomic(path, lambda tmp: Path(tmp).write_text(text))


def number(x: float | str, digits: int = 3) -> str:
    """``x`` with ``digits`` decimals, empty where it is not a finite number (a result that does not exist)."""
    v = float(x)
    return f"{v:.{digits}f}" if np.isfinite(v) else ""


def estimate(row: Mapping | None, digits: int = 3) -> str:
    """``mean [low, high] (replicates)`` from a table row of an estimate (:meth:`analysis.stats.Estimate.to_dict`,
    or the same read back from a CSV); the interval is left out where one replicate gives none, and a missing row,
    or one of no replicate (nothing was measured), is ``-``."""
    if row is None or float(row["replicates"]) == 0:
        return "-"
    text = number(row["mean"], digits)
    if np.isfinite(float(row["low"])):
        text += f" [{number(row['low'], digits)}, {number(row['high'], digits)}]"
    return f"{text} ({row['replicates']})"


def markdown(blocks: Iterable[Block]) -> str:
    lines: list[str] = []
    for block in blocks:
        lines += _markdown(block)
    return "\n".join(lines)


def _markdown(block: Block) -> list[str]:
    """The block's lines, each block followed by an empty line."""
    match block:
        case Heading(level, text):
            return [f"{'#' * level} {text}", ""]
        case Paragraph(text):
            return [text, ""]
        case Items(items):
            return [*(f"- {item}" for item in items), ""]
        case Code(lines):
            return [*(f"    {line}" for line in lines), ""]
        case Table(header, rows):
            return [_row(header), "|" + "---|" * len(header), *map(_row, rows), ""]
        case Image(path, alt):
            return [f"![{alt}]({PurePath(path).as_posix()})", ""]
    raise TypeError(f"not a block: {block!r}")


def _row(cells) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


_STYLE = ("body{font-family:sans-serif;max-width:70em;margin:2em auto;line-height:1.4}"
          "table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #ccc;padding:.2em .5em}"
          "img{max-width:100%}")


def html(blocks: Iterable[Block], title: str, root: Path) -> str:
    """One page with every figure embedded, read from ``root`` (the folder image paths are relative to)."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title><style>{_STYLE}"
             "</style></head><body>"]
    for block in blocks:
        parts += _html_parts(block, root)
    parts.append("</body></html>")
    return "\n".join(parts)


def _html_parts(block: Block, root: Path) -> list[str]:
    match block:
        case Heading(level, text):
            return [f"<h{level}>{_inline(text)}</h{level}>"]
        case Paragraph(text):
            return [f"<p>{_inline(text)}</p>"]
        case Items(items):
            return ["<ul>", *(f"<li>{_inline(item)}</li>" for item in items), "</ul>"]
        case Code(lines):
            return ["<pre><code>" + "\n".join(escape(line) for line in lines) + "</code></pre>"]
        case Table(header, rows):
            return ["<table><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in header) + "</tr>",
                    *("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in rows),
                    "</table>"]
        case Image(path, alt):
            data = base64.b64encode((root / path).read_bytes()).decode()
            return [f"<p><img alt='{escape(alt)}' src='data:image/png;base64,{data}'></p>"]
    raise TypeError(f"not a block: {block!r}")


def _inline(text) -> str:
    """Markdown's **bold**, *italic* and `code` in our own sentences, as HTML."""
    t = escape(str(text))
    t = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t)
    t = re.sub(r"\*(.+?)\*", r"<i>\1</i>", t)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", t)
