"""The one renderer of results: blocks as Markdown and as a self-contained HTML page, and the table formats."""

from __future__ import annotations

import base64
from pathlib import PurePosixPath

import numpy as np
import pytest

from probe.analysis.render import Code, Heading, Image, Items, Paragraph, Table, estimate, html, markdown, number

PNG = b"\x89PNG\r\n\x1a\n"
BLOCKS = [Heading(2, "Results"), Paragraph("**bold**, *italic* and `code`"), Items(["one", "two"]),
          Code(["probe train RUN"]), Table(["n", "a|b"], [[1, "x|y"]]), Image(PurePosixPath("figures/f.png"), "f")]


def test_markdown_of_every_block():
    assert markdown(BLOCKS) == ("## Results\n\n**bold**, *italic* and `code`\n\n- one\n- two\n\n    probe train RUN\n\n"
                                "| n | a\\|b |\n|---|---|\n| 1 | x\\|y |\n\n![f](figures/f.png)\n")


def test_empty_lists_leave_one_empty_line():
    assert markdown([Paragraph("Commands:"), Code([]), Items([])]) == "Commands:\n\n\n"


def test_html_of_every_block_embeds_figures_and_escapes_text(tmp_path):
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "f.png").write_bytes(PNG)
    page = html([*BLOCKS, Paragraph("<script>")], "T & U", tmp_path)
    assert page.startswith("<!doctype html>") and page.endswith("</body></html>")
    assert "<title>T &amp; U</title>" in page
    assert "<h2>Results</h2>" in page and "<p><b>bold</b>, <i>italic</i> and <code>code</code></p>" in page
    assert "<ul>\n<li>one</li>\n<li>two</li>\n</ul>" in page
    assert "<pre><code>probe train RUN</code></pre>" in page
    assert "<tr><th>n</th><th>a|b</th></tr>\n<tr><td>1</td><td>x|y</td></tr>\n</table>" in page
    assert f"<img alt='f' src='data:image/png;base64,{base64.b64encode(PNG).decode()}'>" in page
    assert "<p>&lt;script&gt;</p>" in page


def test_not_a_block_is_refused(tmp_path):
    with pytest.raises(TypeError, match="not a block"):
        markdown([("p", "a tuple")])
    with pytest.raises(TypeError, match="not a block"):
        html([("p", "a tuple")], "T", tmp_path)


def test_numbers_and_estimates():
    assert number(0.12345) == "0.123" and number("0.5", 1) == "0.5" and number(np.nan) == "" and number("inf") == ""
    assert estimate({"mean": "0.5", "low": "0.4", "high": "0.6", "replicates": "6"}) == "0.500 [0.400, 0.600] (6)"
    assert estimate({"mean": 0.51234, "low": np.nan, "high": np.nan, "replicates": 1}, 2) == "0.51 (1)"
    assert estimate(None) == "-"
    assert estimate({"mean": "nan", "low": "nan", "high": "nan", "replicates": "0"}) == "-"  # nothing measured
