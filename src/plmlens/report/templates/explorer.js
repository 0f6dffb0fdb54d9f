(function () {
  const D = JSON.parse(document.getElementById("explorer-data").textContent);
  const E = D.examples;
  const fmt = (v) => (v === null || v === undefined ? "–" : String(Number(v.toPrecision(3))));
  const pct = (v) => (v === null || v === undefined ? "–" : (100 * v).toFixed(1) + "%");
  const sci = (v) => (v === null || v === undefined ? "–" : v.toExponential(1).replace(/e([+-])(\d)$/, "e$10$2"));
  const state = { layer: D.initial[0], head: D.initial[1], protein: 0, weight: 0.1 };
  const HEADER = ["property", "arcs", "proportion", "95% CI (Bonferroni)", "background", "enrichment", "null model",
                  "bootstrap CI", "p (Bonferroni)", "significant"];
  // Cells get their text through textContent: property names come from files (heads.csv) and must stay text.
  function tableRow(texts, headerCells) {
    const row = document.createElement("tr");
    texts.forEach((text, k) => {
      const cell = document.createElement(k < headerCells ? "th" : "td");
      cell.textContent = text;
      row.append(cell);
    });
    return row;
  }
  function table(rows) {
    const element = document.createElement("table");
    element.createTBody().append(tableRow(HEADER, HEADER.length), ...rows);
    return element;
  }
  function statsTable(flat) {
    const rows = Object.entries(D.stats).map(([prop, c]) => {
      const get = (name) => (c[name] ? c[name][flat] : null);
      const enrichment = get("proportion") !== null && get("background") ? get("proportion") / get("background") : null;
      return tableRow([D.labels[prop] || prop, get("n_arcs") === null ? "–" : String(get("n_arcs")),
        pct(get("proportion")), `${pct(get("ci_low"))} – ${pct(get("ci_high"))}`, pct(get("background")),
        fmt(enrichment), pct(get("null_proportion")), `${pct(get("boot_ci_low"))} – ${pct(get("boot_ci_high"))}`,
        sci(get("p_bonferroni")), (get("significant") ? "yes" : "no") + (get("few_arcs") ? " (few arcs)" : "")], 1);
    });
    const props = Object.keys(D.stats);
    const main = rows.filter((_, k) => !props[k].startsWith("aa_"));
    const aa = rows.filter((_, k) => props[k].startsWith("aa_"));
    const shown = [table(main)];
    // Amino acids fold away so that the structure stays in view beside the structural properties.
    if (aa.length) {
      const details = document.createElement("details");
      const summary = document.createElement("summary");
      summary.textContent = "Amino acids";
      details.append(summary, table(aa));
      shown.push(details);
    }
    return shown;
  }
  function decode(text, Type) {
    const bytes = Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
    return new Type(bytes.buffer);
  }
  function half(h) {
    const sign = h & 0x8000 ? -1 : 1, exponent = (h >> 10) & 0x1f, fraction = h & 0x3ff;
    if (exponent === 0) { return sign * Math.pow(2, -14) * (fraction / 1024); }
    if (exponent === 31) { return fraction ? NaN : sign * Infinity; }
    return sign * Math.pow(2, exponent - 15) * (1 + fraction / 1024);
  }
  const decoded = {};
  function arcsOf(index) {
    if (!decoded[index]) {
      const a = E.proteins[index].arcs;
      decoded[index] = { offsets: decode(a.offsets, Int32Array), i: decode(a.i, Uint16Array),
                         j: decode(a.j, Uint16Array), w: decode(a.w, Uint16Array) };
    }
    return decoded[index];
  }
  let stage = null, shapeComponent = null;
  const components = {};
  function structure(index) {
    if (!components[index]) {
      const p = E.proteins[index];
      const scheme = NGL.ColormakerRegistry.addScheme(function () {
        // B-factor 1 marks the residues the model saw (see marked_chain_pdb).
        this.atomColor = (atom) => (atom.bfactor > 0.5 ? 0x8c8c8c : 0xe8e8e8);
      });
      components[index] = stage.loadFile(new Blob([p.pdb], { type: "text/plain" }), { ext: "pdb" })
        .then(function (component) {
          component.addRepresentation(p.repr, { color: scheme });
          return component;
        });
    }
    return components[index];
  }
  function draw() {
    const status = document.getElementById("explorer-status");
    const flat = (state.layer - 1) * D.heads + state.head - 1;
    const p = E.proteins[state.protein];
    const arcs = arcsOf(state.protein);
    const shape = new NGL.Shape("attention");
    const received = new Float64Array(p.sequence.length);
    let drawn = 0, top = 1e-9;
    const chosen = [];
    for (let k = arcs.offsets[flat]; k < arcs.offsets[flat + 1]; k++) {
      const w = half(arcs.w[k]);
      received[arcs.j[k]] += w;
      if (w >= state.weight && p.ca[arcs.i[k]] && p.ca[arcs.j[k]]) {
        chosen.push([arcs.i[k], arcs.j[k], w]);
        top = Math.max(top, w);
      }
    }
    chosen.forEach(([i, j, w]) => {
      shape.addCylinder(p.ca[i], p.ca[j], [0.0, 0.45, 0.70], 0.05 + 0.45 * w / top);
      drawn++;
    });
    Array.from(received.keys()).sort((a, b) => received[b] - received[a]).slice(0, 5)
      .filter((j) => received[j] > 0 && p.ca[j])
      .forEach((j) => shape.addText(p.ca[j], [0.84, 0.37, 0.0], 6, p.sequence[j] + p.ids[j]));
    const token = (draw.token = (draw.token || 0) + 1);
    Object.keys(components).forEach((k) => components[k].then((c) => c.setVisibility(Number(k) === state.protein)));
    structure(state.protein).then(function (component) {
      if (token !== draw.token) { return; }
      if (shapeComponent) { stage.removeComponent(shapeComponent); shapeComponent = null; }
      // A shape with labels but no arcs is still drawn, so the most attended residues stay marked.
      shapeComponent = stage.addComponentFromObject(shape);
      shapeComponent.addRepresentation("buffer");
      component.setVisibility(true);
      component.autoView();
      document.getElementById("explorer-stage").dataset.rendered = "true";
      stage.viewer.requestRender();
      status.dataset.head = state.layer + "-" + state.head;
      status.dataset.protein = p.id;
      status.dataset.arcs = String(drawn);
      status.textContent = `Head ${state.layer}-${state.head} on ${p.id} (${p.analysed}): ${drawn} arcs with ` +
        `weight ≥ ${fmt(state.weight)} drawn; ${p.counts[flat]} arcs above θ = ${fmt(E.theta)}.`;
    }).catch((error) => console.error("plmlens explorer: " + error));
  }
  function proteinOptions(flat) {
    // Options built as text: a protein id can come from a file name.
    document.getElementById("explorer-protein").replaceChildren(...E.top[flat].map((index) =>
      new Option(`${E.proteins[index].id}: ${E.proteins[index].counts[flat]} arcs above θ`, String(index))));
    state.protein = E.top[flat][0];
  }
  function show(layer, head, key) {
    state.layer = layer; state.head = head;
    const flat = (layer - 1) * D.heads + head - 1;
    document.getElementById("explorer-title").textContent =
      `Head ${layer}-${head}` + (key ? ` (clicked in ${D.labels[key] || key})` : "");
    document.getElementById("explorer-stats").replaceChildren(...statsTable(flat));
    if (E) { proteinOptions(flat); draw(); }
    else { document.getElementById("explorer-status").dataset.head = layer + "-" + head; }
  }
  document.addEventListener("plmlens:head", function (event) {
    show(event.detail.layer, event.detail.head, event.detail.key);
    document.getElementById("explorer").scrollIntoView({ block: "start" });
  });
  window.addEventListener("load", function () {
    if (E) {
      stage = new NGL.Stage("explorer-stage", { backgroundColor: "white" });
      window.plmlensStages = (window.plmlensStages || []).concat([stage]);
      const weight = document.getElementById("explorer-weight");
      state.weight = Number(weight.value);
      weight.addEventListener("change", () => { state.weight = Number(weight.value); draw(); });
      document.getElementById("explorer-protein").addEventListener("change", (event) => {
        state.protein = Number(event.target.value); draw(); });
    }
    show(state.layer, state.head, "");
  });
})();
