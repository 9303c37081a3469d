"""A page of tables (a report, a comparison, a history): the same sections rendered
as markdown (for pull requests) and as one self-contained HTML file, so both always
carry the same tables; the terminal gets them through bench.analyze.tables.render."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bench.analyze.tables import render


@dataclass
class Section:
    title: str
    table: pd.DataFrame
    empty: str  # what to say when the table has no rows
    notes: list[str] = field(default_factory=list)


def markdown_page(title: str, env: list[tuple[str, str]], sections: list[Section],
                  pngs: list[Path], plots_dir: str = "plots") -> str:
    """The page as markdown; the PNGs are linked from ``plots_dir`` (relative to the
    page)."""
    lines = [f"# {title}", "", *(f"- **{k}**: {v}" for k, v in env), ""]
    for section in sections:
        lines += [f"## {section.title}", "",
                  render(section.table, markdown=True) if len(section.table) else section.empty,
                  ""]
        if section.notes:
            lines += [*(f"- {note}" for note in section.notes), ""]
    lines += ["## Plots", "", *([f"![{p.stem}]({plots_dir}/{p.name})\n" for p in pngs]
                                or ["Nothing to plot."])]
    return "\n".join(lines) + "\n"


def html_page(title: str, env: list[tuple[str, str]], sections: list[Section],
              pngs: list[Path]) -> str:
    """The page as one HTML file, the PNGs inlined."""
    esc = html.escape
    body = [f"<h1>{esc(title)}</h1>",
            "<ul>" + "".join(f"<li><b>{esc(k)}</b>: {esc(v)}</li>" for k, v in env) + "</ul>"]
    for section in sections:
        body.append(f"<h2>{esc(section.title)}</h2>")
        body.append(section.table.style.hide(axis="index").to_html() if len(section.table)
                    else f"<p>{esc(section.empty)}</p>")
        if section.notes:
            body.append("<ul>" + "".join(f"<li>{esc(n)}</li>" for n in section.notes) + "</ul>")
    body.append("<h2>Plots</h2>")
    body += [f'<figure><img alt="{esc(p.stem)}" src="data:image/png;base64,'
             f'{base64.b64encode(p.read_bytes()).decode()}"></figure>' for p in pngs]
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;"
             "font-size:90%}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
             "img{max-width:100%}")
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
