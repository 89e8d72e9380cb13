"""A self-contained HTML page: escaped text, tables, and matplotlib figures embedded as PNG data URIs.

Nothing is fetched when the page opens (no scripts, fonts or images from the
network), so a report mailed or copied anywhere still shows everything.
"""

from __future__ import annotations

import base64
import io
from html import escape

GENERATOR = "torchlab report"  # marks files `torchlab report` may overwrite

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .5em 0; } td, th { padding: 2px 10px; border-bottom: 1px solid #eee; }
th { text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f6f6f6; padding: .6em; overflow-x: auto; white-space: pre-wrap; }
img { max-width: 100%; } .note { color: #a60; } .sample b { color: #06c; }
"""


def figure_uri(fig, dpi: int = 100) -> str:
    """A matplotlib figure as a data: URI (the figure is closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def image(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{escape(alt)}">'


def table(header: list[str], rows: list[list], numeric: set[int] = frozenset()) -> str:
    """Cells are (text, value) pairs or plain text; a value is kept in data-value so tests and scripts
    can read the exact number behind a rounded one."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for r in rows:
        tds = []
        for i, cell in enumerate(r):
            text, value = cell if isinstance(cell, tuple) else (cell, None)
            attrs = ' class="num"' if i in numeric else ""
            attrs += f' data-value="{value!r}"' if value is not None else ""
            tds.append(f"<td{attrs}>{escape(str(text))}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def page(title: str, sections: list[tuple[str, str]]) -> str:
    """A whole document: `sections` are (heading, inner HTML) pairs."""
    parts = [f"<h2>{escape(h)}</h2>\n{body}" if h else body for h, body in sections]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta name="generator" content="{GENERATOR}">'
            f"<title>{escape(title)}</title><style>{STYLE}</style></head>\n"
            f"<body><h1>{escape(title)}</h1>\n" + "\n".join(parts) + "\n</body></html>\n")
