"""Issue 22: protein ids, property names and model names are data, never markup or code. Pages built from
hostile names load in a real headless Chromium without running anything, show the names as text, and their
head explorers still work; `json_for_script` round-trips and leaves nothing a script element could trip on."""

from __future__ import annotations

import html
import json
import re
import subprocess
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from plmlens.proteins import Protein
from plmlens.report import AttentionView, build_report, compare_runs
from plmlens.report.html import json_for_script
from plmlens.report.interactive import ExampleCollector
from test_compare import synthetic_run
from test_report import chromium, small_run

#: Protein ids as a file name or a crafted protein set could give them.
HOSTILE_IDS = (
    "<img src=x onerror=document.body.dataset.pwned=1>",
    "</script><script>document.body.dataset.pwned=2</script>",
    "<!--<script>",
    "line\u2028separator &amp; <b>bold</b>",
)
HOSTILE_PROPERTY = "<img src=x onerror=document.body.dataset.pwned=3>"
HOSTILE_MODEL = "<!--<script>evil</script><script>document.body.dataset.pwned=4</script>"


@pytest.mark.parametrize(
    "value",
    [
        {"id": HOSTILE_IDS, "nested": [{"k": "</SCRIPT>"}, 1.5, None, True]},
        "<!--<script>",
        "a & b > c < d \u2028 \u2029 é θ",
        [],
    ],
)
def test_json_for_script_round_trips_without_markup_characters(value):
    text = str(json_for_script(value))
    assert json.loads(text) == json.loads(json.dumps(value))
    assert not set(text) & {"<", ">", "&", "\u2028", "\u2029"}
    assert "</" not in text.lower() and "<!--" not in text


def test_json_for_script_refuses_nan():
    with pytest.raises(ValueError):
        json_for_script({"x": float("nan")})


class Dom(HTMLParser):
    """A dumped DOM as a list of elements: tag, attributes, the ids of the elements around it, and its text."""

    VOID = frozenset({"img", "meta", "br", "input", "link", "hr"})

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict, set, str]] = []
        self._open: list[tuple[str, dict, list[str]]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attributes = {k: v or "" for k, v in attrs}
        if tag in self.VOID:
            self.elements.append((tag, attributes, self._inside(), ""))
        else:
            self._open.append((tag, attributes, []))

    def handle_endtag(self, tag):
        while self._open:
            name, attributes, text = self._open.pop()
            content = "".join(text)
            if self._open:
                self._open[-1][2].append(content)
            self.elements.append((name, attributes, self._inside(), content))
            if name == tag:
                break

    def handle_data(self, data):
        if self._open:
            self._open[-1][2].append(data)

    def _inside(self) -> set:
        return {attributes.get("id") for _, attributes, _ in self._open}

    def find(self, tag: str | None = None, inside: str | None = None, **attributes: str) -> list[tuple[dict, str]]:
        """Attributes and text of the elements with `tag`, within the element with id `inside`, whose attributes
        include `attributes` (``data_head`` for ``data-head``)."""
        wanted = {k.replace("_", "-"): v for k, v in attributes.items()}
        return [(a, text) for name, a, around, text in self.elements
                if (tag is None or name == tag) and (inside is None or inside in around)
                and all(a.get(k) == v for k, v in wanted.items())]  # fmt: skip

    def text(self, element_id: str) -> str:
        return self.find(id=element_id)[0][1]

    def body(self) -> dict:
        return self.find("body")[0][0]


def dump_dom(page, tmp_path, script: str = "") -> Dom:
    """Load `page` (with `script` added at the end of its body) in headless Chromium without network, and
    parse the DOM it ends with."""
    loaded = tmp_path / f"loaded-{page.name}"
    loaded.write_text(page.read_text().replace("</body>", f"{script}</body>"))
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--enable-unsafe-swiftshader", "--proxy-server=127.0.0.1:9", "--virtual-time-budget=15000",
               f"--user-data-dir={tmp_path / f'profile-{page.name}'}", "--dump-dom",
               loaded.resolve().as_uri()]  # fmt: skip
    dom = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert "<body" in dom.stdout, dom.stderr[-2000:]
    return Dom(dom.stdout)


def assert_nothing_ran(dom: Dom) -> None:
    body = dom.body()
    assert "data-pwned" not in body, body
    assert not dom.find("img", src="x")
    assert not [a for a, _ in dom.find() if any(name.startswith("on") for name in a)]  # no event handler at all
    assert json.loads(body.get("data-errors", "null")) == [], body


def hostile_run(tmp_path):
    """A run directory whose heads.csv and summary.json were crafted: a property named like markup (with a top
    head, so that the explorer starts on it) and a model name that opens a comment and closes a script."""
    protein, _ = small_run(tmp_path)
    heads = pd.read_csv(tmp_path / "heads.csv")
    crafted = heads[heads["property"] == "contact"].assign(property=HOSTILE_PROPERTY)
    pd.concat([heads, crafted]).to_csv(tmp_path / "heads.csv", index=False)
    summary = json.loads((tmp_path / "summary.json").read_text())
    summary["model"]["name"] = HOSTILE_MODEL
    summary["data"] = HOSTILE_IDS[1]
    summary["backgrounds"][HOSTILE_PROPERTY] = 0.1
    summary["top_heads"][HOSTILE_PROPERTY] = {"head": "1-2", "proportion": 0.5, "background": 0.1, "enrichment": 5.0,
                                              "null_proportion": 0.1, "p_bonferroni": 0.01, "significant": True,
                                              "n_arcs": 40}  # fmt: skip
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    return protein


def hostile_examples(protein: Protein, ids: tuple[str, ...], n_layers: int = 2, n_heads: int = 3):
    """Examples over copies of `protein` named `ids`, each offered for every head."""
    collector = ExampleCollector(n_layers, n_heads, theta=0.3, min_weight=0.05)
    rng = np.random.default_rng(2)
    for name in ids:
        record = protein.subset(slice(0, len(protein)))
        record.id, record.chain = name, "<i>H</i>"
        for layer in range(n_layers):
            attention = rng.dirichlet(np.full(len(record), 0.05), size=(n_heads, len(record))).astype(np.float32)
            collector.add(record, layer, attention)
    return collector.select(per_head=len(ids))


@pytest.mark.integration
@pytest.mark.parametrize(
    "ids",
    # Markup in ids (which the statistics' property name joins), and an id that opens a comment in the
    # explorer's data, which used to swallow the end of its script element and with it the explorer.
    [tuple(i for i in HOSTILE_IDS if i != "<!--<script>"), ("<!--<script>", "plain.A")],
    ids=["markup", "comment"],
)
def test_report_with_hostile_ids_property_and_model_runs_nothing(tmp_path, ids):
    protein = hostile_run(tmp_path / "run")
    examples = hostile_examples(protein, ids)
    view = AttentionView(protein, np.eye(30, k=20) * 0.8 + np.eye(30, k=-20) * 0.8, f"head 1-1 on {HOSTILE_IDS[0]}")
    path = build_report(tmp_path / "run", views=[view], examples=examples, draw_weight=0.1)
    text = path.read_text()
    # Before any script runs: the names are escaped text, the embedded data cannot end its script element.
    assert html.escape(HOSTILE_MODEL, quote=False) in text and HOSTILE_MODEL not in text
    for name in ids:
        assert name == "plain.A" or name not in text
    payload = re.search(r'<script type="application/json" id="explorer-data">(.*?)</script>', text, re.S).group(1)
    data = json.loads(payload)
    assert {p["id"] for p in data["examples"]["proteins"]} == set(ids)
    assert data["labels"][HOSTILE_PROPERTY] == HOSTILE_PROPERTY

    dom = dump_dom(path, tmp_path)
    assert_nothing_ran(dom)
    title = f"plmlens report: {HOSTILE_MODEL} on {HOSTILE_IDS[1]}"
    assert [text for _, text in dom.find("title")] == [title] and [text for _, text in dom.find("h1")] == [title]
    assert [text for _, text in dom.find("h3")][-1] == f"head 1-1 on {HOSTILE_IDS[0]}"  # the view's title
    # The explorer still works: the initial head's statistics (the hostile property as a header cell, as text)
    # and its example proteins in the drop-down (their ids as text), drawn in 3D.
    assert dom.text("explorer-title") == "Head 1-2"
    headers = [text for _, text in dom.find("th", inside="explorer-stats")]
    assert HOSTILE_PROPERTY in headers and "Contact" in headers
    flat = 1  # head 1-2
    expected = [(str(k), f"{examples.examples[k].protein.id}: {examples.examples[k].counts[flat]} arcs above θ")
                for k in examples.top[flat]]  # fmt: skip
    options = [(a["value"], text) for a, text in dom.find("option", inside="explorer-protein")]
    assert options == expected and len(options) == len(ids)
    status = dom.find(id="explorer-status")[0][0]
    best = examples.examples[examples.top[flat][0]].protein.id
    assert status["data-head"] == "1-2" and status["data-protein"] == best and int(status["data-arcs"]) >= 0
    assert f"on {best} (chain <i>H</i>, residues" in dom.text("explorer-status")
    assert dom.body()["data-stages"] == "2"  # the explorer's and the view's


@pytest.mark.integration
def test_compare_with_hostile_model_and_property_names_runs_nothing(tmp_path):
    out = tmp_path / "compare"
    # A run directory inside the output whose name reads as a URL scheme: its report link must stay a path.
    hostile = synthetic_run(out / "javascript:document.body.dataset.pwned=5", 4, 8, name=HOSTILE_MODEL)
    plain = synthetic_run(tmp_path / "plain", 4, 8, name="plain", seed=1)
    (hostile / "report.html").write_text("<!doctype html><title>report</title>")
    heads = pd.read_csv(hostile / "heads.csv")
    crafted = heads[heads["property"] == "contact"].assign(property=HOSTILE_PROPERTY)
    pd.concat([heads, crafted]).to_csv(hostile / "heads.csv", index=False)
    summary = json.loads((hostile / "summary.json").read_text())
    summary["backgrounds"][HOSTILE_PROPERTY] = 0.05
    summary["data"] = HOSTILE_IDS[0]
    (hostile / "summary.json").write_text(json.dumps(summary))
    page = compare_runs([hostile, plain], out)["compare.html"]
    text = page.read_text()
    assert HOSTILE_MODEL not in text and HOSTILE_PROPERTY not in text
    assert json.loads(re.search(r'id="compare-heads">(.*?)</script>', text, re.S).group(1))[HOSTILE_MODEL]

    # Click the top-left cell of the first heatmap: the hostile model's layer 4, head 1.
    click = """<script>
window.addEventListener("load", () => setTimeout(() => {
  document.querySelector(".cells .cell").click();
  setTimeout(() => {
    const status = document.getElementById("explorer-status");
    document.body.dataset.after = status.dataset.head;
    document.body.dataset.rows = String(document.querySelectorAll("#explorer-table tr").length - 1);
  }, 500);
}, 500));
</script>"""
    dom = dump_dom(page, tmp_path, click)
    assert_nothing_ran(dom)
    assert f"Compared runs: {HOSTILE_MODEL} and plain." in [text for _, text in dom.find("p")]
    cells = dom.find("button", data_key=HOSTILE_MODEL)
    # The model's panel in each property's heatmap: contact, binding site, helix and the crafted property.
    assert len(cells) == 4 * 8 * 4
    # The explorer still works: the clicked head's statistics, every property as text, and the report link.
    body = dom.body()
    assert body.get("data-after") == f"{HOSTILE_MODEL} 4-1", body
    properties = pd.read_csv(hostile / "heads.csv")["property"].unique().tolist()
    assert int(body["data-rows"]) == len(properties)
    assert [text for _, text in dom.find("td", inside="explorer-table")][::8] == properties
    assert dom.text("explorer-status") == f"{HOSTILE_MODEL}: head 4-1. Draw it in 3D in {HOSTILE_MODEL}'s report."
    link = dom.find("a", inside="explorer-status")[0][0]
    assert link["href"] == "./javascript:document.body.dataset.pwned=5/report.html"  # a path, not a URL scheme


def test_attention_view_page_escapes_its_title():
    protein = Protein(id=HOSTILE_IDS[0], sequence="ACDEFGHIKL" * 3, ca=np.arange(90, dtype=float).reshape(30, 3))
    view = AttentionView(protein, np.eye(30, k=5) * 0.5, HOSTILE_MODEL)
    text = view.to_html()
    assert HOSTILE_MODEL not in text and f"<title>{html.escape(HOSTILE_MODEL)}</title>" in text
    assert f"<h3>{html.escape(HOSTILE_MODEL)}</h3>" in text
    iframe = view._repr_html_()
    assert iframe.startswith('<iframe srcdoc="&lt;!doctype html&gt;') and "<script" not in iframe
