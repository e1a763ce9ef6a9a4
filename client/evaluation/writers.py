"""The two renderings of a `Document`: Markdown (report.md) and one self-contained HTML page
(report.html: inline CSS, pictures as data URIs, nothing fetched)."""

from __future__ import annotations

import base64
import html
import re

from client.evaluation.sections import Document, Paragraph, Picture, Table

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:70rem;padding:0 1rem;"
    "color:#222}table{border-collapse:collapse;margin:1rem 0}th,td{border:1px solid #ccc;"
    "padding:.25rem .6rem;text-align:left}.number{text-align:right}"
    "img{max-width:100%;height:auto}.diagonal{background:#e3eefb;font-weight:bold}"
)


def to_markdown(document: Document) -> str:
    lines = [f"# {md(document.title)}"]
    for section in document.sections:
        if section.title is not None:
            lines += ["", f"## {md(section.title)}"]
        for block in section.blocks:
            lines.append("")
            if isinstance(block, Paragraph):
                lines.append(md(block.text))
            elif isinstance(block, Picture):
                lines.append(f"![{block.alt}]({block.file_name})")
            else:
                lines += _markdown_table(block)
    return "\n".join(lines) + "\n"


def _markdown_table(table: Table) -> list[str]:
    rule = ["---:" if table.is_numeric(k) else "---" for k in range(len(table.columns))]
    lines = [_markdown_row(table.columns), _markdown_row(rule, escape=False)]
    for row in table.rows:
        cells = [md(cell) for cell in row]
        if table.row_headers:
            cells[0] = f"**{cells[0]}**"
        lines.append(_markdown_row(cells, escape=False))
    return lines


def _markdown_row(cells, escape: bool = True) -> str:
    return "| " + " | ".join(md(cell) if escape else cell for cell in cells) + " |"


def md(value: object) -> str:
    """Text safe inside a Markdown table cell: no pipes, no line breaks, no inline markup.

    Line breaks (Markdown's: "\\r" and "\\n") become spaces; other characters are kept as they
    are, so an (escaped) file name in the Markdown source is exactly the name, runs of spaces
    included (Markdown collapses them only when rendering).
    """
    text = re.sub(r"[\r\n]+", " ", str(value))
    for character in "\\|*_`[]<>#":
        text = text.replace(character, "\\" + character)
    return text


def to_html(document: Document) -> str:
    escape = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(document.title)}</title>",
        f"<style>{_STYLE}</style>",
        "</head><body>",
        f"<h1>{escape(document.title)}</h1>",
    ]
    for section in document.sections:
        if section.title is not None:
            parts.append(f"<h2>{escape(section.title)}</h2>")
        for block in section.blocks:
            if isinstance(block, Paragraph):
                parts.append(f"<p>{escape(block.text)}</p>")
            elif isinstance(block, Picture):
                source = "data:image/png;base64," + base64.b64encode(block.png).decode("ascii")
                parts.append(f'<img alt="{escape(block.alt)}" src="{source}">')
            else:
                parts += _html_table(block)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _html_table(table: Table) -> list[str]:
    def cell(tag: str, text: str, row: int | None, column: int) -> str:
        classes = ["number"] if table.is_numeric(column) else []
        if row is not None and table.is_diagonal(row, column):
            classes.append("diagonal")
        attribute = f' class="{" ".join(classes)}"' if classes else ""
        return f"<{tag}{attribute}>{html.escape(text)}</{tag}>"

    header = "".join(cell("th", name, None, k) for k, name in enumerate(table.columns))
    lines = ["<table>", f"<tr>{header}</tr>"]
    for index, row in enumerate(table.rows):
        cells = "".join(
            cell("th" if table.row_headers and k == 0 else "td", text, index, k)
            for k, text in enumerate(row)
        )
        lines.append(f"<tr>{cells}</tr>")
    lines.append("</table>")
    return lines
