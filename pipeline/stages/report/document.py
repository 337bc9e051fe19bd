"""The report as one model, a list of sections, and its two renderers: HTML from a Jinja2
template with autoescaping, and a PDF whose text, tables and figures are laid out from the same
sections by computing how many lines fit a page, not by placing text by hand."""
import base64
import textwrap
from typing import Callable, NamedTuple

import jinja2
from matplotlib.backends.backend_pdf import PdfPages

from pipeline.stages.report.figures import plt


class Table(NamedTuple):
    title: str
    header: list
    rows: list


class Figure(NamedTuple):
    name: str
    make: Callable  # () -> (matplotlib figure, caption), or None when this run has nothing to draw


class Section(NamedTuple):
    title: str
    bullets: list = []
    tables: list = []
    figures: list = []
    code: list = []  # lines shown as they are (commands)
    list_id: str = ""  # the HTML id of the bullet list, for links and tests


TEMPLATE = jinja2.Environment(autoescape=True).from_string("""<!DOCTYPE html>
<html lang='en'><head><meta charset='utf-8'><title>{{ title }}</title><style>
body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em;line-height:1.4}
table{border-collapse:collapse;font-size:90%}td,th{border:1px solid #ccc;padding:.3em .5em}
img{max-width:100%}figcaption{font-size:90%;color:#333}pre{background:#f4f4f4;padding:.6em}
</style></head><body>
<h1>{{ title }}</h1>
{%- for s in sections %}
<h2>{{ s.title }}</h2>
{%- if s.bullets %}
<ul{% if s.list_id %} id='{{ s.list_id }}'{% endif %}>{% for b in s.bullets %}<li>{{ b }}</li>{% endfor %}</ul>
{%- endif %}
{%- for t in s.tables %}
{% if t.title %}<p>{{ t.title }}</p>{% endif %}<table><tr>{% for h in t.header %}<th>{{ h }}</th>{% endfor %}</tr>
{%- for row in t.rows %}<tr>{% for c in row %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}</table>
{%- endfor %}
{%- for f in figures.get(s.title, []) %}
<figure id='{{ f.name }}'><img alt='{{ f.name }}' src='data:image/png;base64,{{ f.png }}'><figcaption>{{ f.caption }}</figcaption></figure>
{%- endfor %}
{%- if s.code %}
<pre>{{ s.code | join('\n') }}</pre>
{%- endif %}
{%- endfor %}
</body></html>
""")


class RenderedFigure(NamedTuple):
    name: str
    png: str  # base64
    caption: str


def html(title: str, sections: list, rendered: dict) -> str:
    """rendered: section title -> [(name, png bytes, caption)], the figures this run drew."""
    figures = {k: [RenderedFigure(n, base64.b64encode(png).decode(), c) for n, png, c in v] for k, v in rendered.items()}
    return TEMPLATE.render(title=title, sections=sections, figures=figures)


# --- the PDF -------------------------------------------------------------------------------------

PAGE = (11.0, 8.5)  # inches, landscape letter
MARGIN = 0.5  # inches on every side
TEXT_PT, HEADING_PT, TITLE_PT = 8, 13, 15
LINE = 1.45  # line height as a multiple of the font size
CHAR_WIDTH = 0.55  # average character width as a multiple of the font size (DejaVu Sans)


def _chars_per_line(width_in: float, points: float) -> int:
    return int(width_in * 72 / (points * CHAR_WIDTH))


class _TextPages:
    """Lines of text flowed onto as many pages as they need."""

    def __init__(self, pdf: PdfPages):
        self.pdf, self.fig, self.y = pdf, None, 0.0

    def _room(self, points: float) -> None:
        height = points * LINE / 72  # inches
        if self.fig is None or self.y - height < MARGIN:
            self.close()
            self.fig, self.y = plt.figure(figsize=PAGE), PAGE[1] - MARGIN
        self.y -= height

    def line(self, text: str, points: float = TEXT_PT, indent: float = 0.0, **style) -> None:
        self._room(points)
        self.fig.text((MARGIN + indent) / PAGE[0], self.y / PAGE[1], text, fontsize=points, **style)

    def paragraph(self, text: str, bullet: bool = True) -> None:
        width = PAGE[0] - 2 * MARGIN - 0.2
        for i, part in enumerate(textwrap.wrap(text, _chars_per_line(width, TEXT_PT)) or [""]):
            self.line(("- " if bullet and i == 0 else "") + part, indent=0.0 if i == 0 else 0.12)

    def gap(self) -> None:
        self._room(TEXT_PT)

    def close(self) -> None:
        if self.fig is not None:
            self.pdf.savefig(self.fig)
            plt.close(self.fig)
            self.fig = None


def pdf(path, title: str, sections: list) -> None:
    """Text sections flow onto text pages; each table and figure gets a page of its own, headed by
    its section's title where it is the section's first."""
    with PdfPages(path) as out:
        text = _TextPages(out)
        text.line(title, TITLE_PT, weight="bold")
        for s in sections:
            if not (s.bullets or s.code):
                continue
            text.gap()
            text.line(s.title, HEADING_PT, weight="bold")
            for b in s.bullets:
                text.paragraph(b)
            for c in s.code:
                text.line(c, family="monospace")
        text.close()
        for s in sections:
            heading = s.title if not (s.bullets or s.code) else None
            for t in s.tables:
                _table_page(out, heading, t)
                heading = None
            for f in s.figures:
                made = f.make()
                if made is not None:
                    _figure_page(out, made[0], heading, made[1])
                    plt.close(made[0])
                    heading = None


def _table_page(out: PdfPages, section, table: Table) -> None:
    fig = plt.figure(figsize=PAGE)
    top = PAGE[1] - MARGIN
    for text, points, style in ((section, HEADING_PT, {"weight": "bold"}), (table.title, 9, {})):
        if text:
            top -= points * LINE / 72
            fig.text(MARGIN / PAGE[0], top / PAGE[1], text, fontsize=points, **style)
    ax = fig.add_axes([MARGIN / PAGE[0], MARGIN / PAGE[1], 1 - 2 * MARGIN / PAGE[0], (top - 0.2 - MARGIN) / PAGE[1]])
    ax.axis("off")
    # One setting per line, and a mean apart from its interval: seven optimizers fit the page.
    cells = [[c.replace(", ", "\n").replace(" +/- ", "\n+/- ").replace(" (", "\n(").replace(" / ", "\n/ ")
              for c in row] for row in table.rows]
    lines = max(c.count("\n") + 1 for row in cells for c in row)
    drawn = ax.table(cellText=cells, colLabels=[h.replace(" (", "\n(").replace(": ", ":\n") for h in table.header],
                     loc="upper center", cellLoc="center")
    drawn.auto_set_font_size(False)
    drawn.set_fontsize(7 if len(table.rows) <= 8 else 6)
    unit = min(0.045, 1.0 / (3 + len(table.rows) * lines))  # one text line, as a fraction of the table's axes
    for (row, _), cell in drawn.get_celld().items():
        cell.set_height(unit * (3 if row == 0 else lines))
    out.savefig(fig)
    plt.close(fig)


def _figure_page(out: PdfPages, fig, section, caption: str) -> None:
    """Grow the figure to make room for the section title above and the caption below."""
    w, h = fig.get_size_inches()
    lines = textwrap.wrap(caption, _chars_per_line(w - 0.4, TEXT_PT))
    top = (HEADING_PT * LINE / 72 + 0.2) if section else 0.2  # inches
    bottom = 0.4 + TEXT_PT * LINE / 72 * len(lines)
    total = h + top + bottom
    fig.set_size_inches(w, total)
    fig.subplots_adjust(top=1 - (top + 0.35) / total, bottom=(bottom + 0.45) / total)
    if section:
        fig.text(0.02, 1 - 0.2 / total, section, fontsize=HEADING_PT, weight="bold", va="top")
    fig.text(0.02, 0.15 / total, "\n".join(lines), fontsize=TEXT_PT, va="bottom", linespacing=LINE)
    out.savefig(fig)
