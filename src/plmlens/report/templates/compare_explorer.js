(function () {
  const models = JSON.parse(document.getElementById("compare-heads").textContent);
  const pct = (v) => (v === null || v === undefined) ? "–" : (100 * v).toFixed(1) + "%";
  const sci = (v) => (v === null || v === undefined) ? "–" : (v < 0.001 ? v.toExponential(1) : v.toPrecision(2));
  const HEADER = ["property", "arcs", "proportion", "CI", "background", "null", "p (Bonferroni)", "significant"];
  // Cells get their text through textContent: property and model names come from files and must stay text.
  function tableRow(tag, texts) {
    const row = document.createElement("tr");
    texts.forEach((text) => {
      const cell = document.createElement(tag);
      cell.textContent = text;
      row.append(cell);
    });
    return row;
  }
  // Only links to a page (a path, or a file: or http(s): URL) are followed, never a javascript: one.
  function pageLink(href) {
    try {
      return ["file:", "http:", "https:"].includes(new URL(href, document.baseURI).protocol);
    } catch (error) {
      return false;
    }
  }
  document.addEventListener("plmlens:head", function (event) {
    const d = event.detail, model = models[d.key];
    if (!model) { return; }
    const k = (d.layer - 1) * model.heads + (d.head - 1);
    const table = document.createElement("table");
    table.createTBody().append(tableRow("th", HEADER), ...Object.entries(model.stats).map(([prop, s]) => {
      const get = (c) => (s[c] ? s[c][k] : null);
      return tableRow("td", [prop, String(get("n_arcs") ?? "–"), pct(get("proportion")),
        `${pct(get("ci_low"))} – ${pct(get("ci_high"))}`, pct(get("background")), pct(get("null_proportion")),
        sci(get("p_bonferroni")), get("significant") ? "yes" : "no"]);
    }));
    const status = document.getElementById("explorer-status");
    status.textContent = `${d.key}: head ${d.layer}-${d.head}.`;
    if (model.report && pageLink(model.report)) {
      const link = document.createElement("a");
      link.setAttribute("href", model.report);
      link.textContent = `Draw it in 3D in ${d.key}'s report`;
      status.append(" ", link, ".");
    }
    status.dataset.head = `${d.key} ${d.layer}-${d.head}`;
    document.getElementById("explorer-table").replaceChildren(table);
    document.getElementById("explorer").scrollIntoView({ block: "nearest" });
  });
})();
