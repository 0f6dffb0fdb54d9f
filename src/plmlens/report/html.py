"""The one place where plmlens turns data into HTML: Jinja2 templates with autoescaping, and JSON that is safe
inside a ``<script>`` element.

Every page (``report.html``, ``compare.html``, the standalone 3D views) is rendered from the templates in
``plmlens/report/templates``. Autoescaping is on for all of them, so a protein id, a property or a model name
(which may come from a file name or a crafted file) is always text, never markup. Data for the pages' scripts
goes through `json_for_script` into ``<script type="application/json">`` elements, which the scripts parse and
insert with ``textContent``. Only two kinds of text reach a page unescaped: the output of these templates
(``Markup``) and the NGL bundle (`inline_script`).

Tables, figures and head links are small data classes here, drawn by the macros in ``macros.html``.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

#: JSON escapes for the characters that could end a script element, open an HTML comment or entity inside it,
#: or end a line in older JavaScript parsers.
_SCRIPT_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_SCRIPT_UNSAFE = re.compile("[<>&\u2028\u2029]")


def json_for_script(value: object, *, allow_nan: bool = False) -> Markup:
    """`value` as JSON that can be placed verbatim inside ``<script type="application/json">``.

    ``<``, ``>`` and ``&`` are written as ``\\u003c``, ``\\u003e`` and ``\\u0026``, so no string in the data can
    close the script element (``</script>``) or open a comment (``<!--``) that swallows its end tag; U+2028 and
    U+2029 (and every other non-ASCII character) are ``\\u`` escapes too. ``JSON.parse`` and `json.loads` read
    the same value back.

    Parameters
    ----------
    value : object
        Anything `json.dumps` takes.
    allow_nan : bool
        NaN and infinities are refused by default: they are not JSON and ``JSON.parse`` fails on them.

    Returns
    -------
    Markup
        Safe as the content of a script element only (not as an attribute value).

    Raises
    ------
    ValueError
        A NaN or infinity in `value` when not `allow_nan`.
    """
    text = json.dumps(value, separators=(",", ":"), allow_nan=allow_nan)
    # Outside strings JSON has none of these characters, so replacing them everywhere only touches strings.
    return Markup(_SCRIPT_UNSAFE.sub(lambda match: _SCRIPT_ESCAPES[match.group()], text))


def inline_script(source: str) -> Markup:
    """Trusted JavaScript source (the NGL bundle) for a ``<script>`` element, with any ``</script`` in it (only
    possible inside a string, regular expression or comment) written ``<\\/script`` so that it cannot end the
    element early."""
    return Markup(re.sub(r"</(script)", r"<\\/\1", source, flags=re.IGNORECASE))


@dataclass(frozen=True)
class HeadLink:
    """A table cell that selects a head in the page's explorer when clicked (1-based layer and head)."""

    layer: int
    head: int


@dataclass(frozen=True)
class Table:
    """A table as the ``table`` macro draws it: column names and rows of cells, each text or a `HeadLink`."""

    columns: list[str]
    rows: list[list[str | HeadLink]]


def display(value: object) -> str | HeadLink:
    """A cell as text: "–" where the value is missing (None, NA, NaN), `HeadLink` as is, else ``str``."""
    if isinstance(value, HeadLink):
        return value
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return str(value)


def frame_table(frame: pd.DataFrame, cell: Callable[[str, object], str | HeadLink] | None = None) -> Table:
    """A `Table` of `frame`'s columns and rows (no index).

    Parameters
    ----------
    frame : DataFrame
    cell : callable, optional
        ``cell(column, value)`` gives a cell's text (or `HeadLink`); by default `display`.
    """
    shown = frame.astype(object).where(frame.notna(), None)
    columns = [str(column) for column in shown.columns]
    convert = cell or (lambda column, value: value)
    rows = [
        [display(convert(column, value)) for column, value in zip(columns, row, strict=True)]
        for row in shown.itertuples(index=False, name=None)
    ]
    return Table(columns, rows)


@dataclass(frozen=True)
class Picture:
    """A PNG figure inlined as base64 (whose alphabet needs no escaping), with its alt text."""

    alt: str
    png: str

    @classmethod
    def from_file(cls, path: str | Path, alt: str) -> Picture:
        return cls(alt, base64.b64encode(Path(path).read_bytes()).decode("ascii"))


ENVIRONMENT = Environment(
    loader=PackageLoader("plmlens.report", "templates"),
    # Every template escapes, the .js and .css ones too (they hold no expressions, so it changes nothing there).
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)
ENVIRONMENT.filters["script_json"] = json_for_script


def render(template: str, **context: object) -> str:
    """Render one of plmlens's templates (e.g. ``"report.html"``) with autoescaping.

    Returns
    -------
    str
        A plain string: placed into another template it is escaped again, so pass fragments that are meant as
        markup through `macro` instead.
    """
    return ENVIRONMENT.get_template(template).render(**context)


def macro(template: str, name: str) -> Callable[..., Markup]:
    """A macro of a template as a Python function returning ``Markup`` (escaped by the template itself)."""
    return getattr(ENVIRONMENT.get_template(template).module, name)


def table_html(table: Table | pd.DataFrame) -> Markup:
    """A `Table` (or a DataFrame's cells as text) as HTML."""
    return macro("macros.html", "table")(table if isinstance(table, Table) else frame_table(table))


__all__ = [
    "ENVIRONMENT",
    "HeadLink",
    "Picture",
    "Table",
    "display",
    "frame_table",
    "inline_script",
    "json_for_script",
    "macro",
    "render",
    "table_html",
]
