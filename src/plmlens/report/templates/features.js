// The feature browser of every SAE section: a click on a feature number shows its histogram, its
// top-activating proteins (sequence coloured by activation over a region track) and one of them in 3D, the
// activations written into the structure's B-factor column. Everything from the data is inserted as text.
(function () {
  const PALETTE = ["#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#f0e442", "#999999", "#8c564b"];
  const SVG = "http://www.w3.org/2000/svg";
  const fmt = (v) => (v === null || v === undefined ? "–" : String(Number(Number(v).toPrecision(3))));
  const pct = (v) => (v === null || v === undefined ? "–" : (100 * v).toFixed(1) + "%");
  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }
  // White (off) to vermillion (the feature's largest activation among its top proteins).
  function heat(t) {
    const s = Math.max(0, Math.min(1, t));
    return [255 + (213 - 255) * s, 255 + (94 - 255) * s, 255 * (1 - s)].map(Math.round);
  }
  const css = (rgb) => `rgb(${rgb[0]},${rgb[1]},${rgb[2]})`;
  function histogram(h) {
    const width = 360, height = 110, left = 34, bottom = 18;
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "histogram");
    svg.setAttribute("width", width); svg.setAttribute("height", height);
    const top = Math.max(1, ...h.counts), bar = (width - left) / h.counts.length;
    h.counts.forEach((count, k) => {
      const rect = document.createElementNS(SVG, "rect"), tall = (height - bottom - 4) * count / top;
      rect.setAttribute("x", left + k * bar); rect.setAttribute("width", Math.max(1, bar - 1));
      rect.setAttribute("y", height - bottom - tall); rect.setAttribute("height", tall);
      const title = document.createElementNS(SVG, "title");
      title.textContent = `${fmt(h.edges[k])} – ${fmt(h.edges[k + 1])}: ${count} residues`;
      rect.append(title);
      svg.append(rect);
    });
    [[left, height - 4, fmt(h.edges[0]), "start"], [width, height - 4, fmt(h.edges[h.edges.length - 1]), "end"],
     [left - 3, 10, String(top), "end"], [left - 3, height - bottom, "0", "end"]].forEach(([x, y, text, anchor]) => {
      const label = document.createElementNS(SVG, "text");
      label.setAttribute("x", x); label.setAttribute("y", y); label.setAttribute("text-anchor", anchor);
      label.textContent = text;
      svg.append(label);
    });
    return svg;
  }
  function setup(section) {
    const D = JSON.parse(section.querySelector("script.sae-data").textContent);
    const browser = section.querySelector(".feature-browser");
    const stageElement = section.querySelector(".feature-stage");
    const regionColours = new Map();
    const colourOf = (region) => {
      if (!regionColours.has(region)) { regionColours.set(region, PALETTE[regionColours.size % PALETTE.length]); }
      return regionColours.get(region);
    };
    let stage = null, drawToken = 0;
    function sequenceView(top, vmax) {
      const residues = element("div", "residues");
      for (let i = 0; i < top.sequence.length; i++) {
        const value = top.activations[i], region = top.regions ? top.regions[i] : null;
        const cell = element("span", "res"), aa = element("span", "aa", top.sequence[i]);
        const rgb = heat(value / vmax);
        aa.style.background = css(rgb);
        if (rgb[1] < 150) { aa.style.color = "white"; }
        const band = element("span", "region");
        if (region !== null) { band.style.background = colourOf(region); }
        cell.title = [`${top.sequence[i]}${i + 1}`, top.imgt ? top.imgt[i] : null, region, `activation ${fmt(value)}`]
          .filter((part) => part !== null && part !== undefined).join(" · ");
        cell.append(aa, band);
        residues.append(cell);
      }
      return residues;
    }
    function legend(tops) {
      const names = [];
      tops.forEach((top) => (top.regions || []).forEach((r) => { if (r !== null && !names.includes(r)) { names.push(r); } }));
      const line = element("p", "note legend", names.length ? "Regions:" : "No regions given.");
      names.forEach((name) => {
        const swatch = element("span", "swatch");
        swatch.style.background = colourOf(name);
        line.append(swatch, document.createTextNode(name));
      });
      return line;
    }
    // The structure's PDB text with each residue's activation in the B-factor column (-1: not seen by the SAE).
    function withBfactors(entry, activations) {
      const index = new Map(entry.residues.map((key, i) => [key, i]));
      return entry.pdb.split("\n").map((line) => {
        if (!line.startsWith("ATOM") && !line.startsWith("HETATM")) { return line; }
        const i = index.get(line.substring(22, 26).trim() + line.substring(26, 27).trim());
        const b = i === undefined ? -1 : Math.min(activations[i], 999.99);
        return line.padEnd(66).substring(0, 60) + b.toFixed(2).padStart(6) + line.substring(66);
      }).join("\n");
    }
    function draw3d(top, vmax) {
      const entry = D.structures[top.protein];
      if (!stageElement || !entry || typeof NGL === "undefined") { return; }
      if (!stage) {
        stage = new NGL.Stage(stageElement, { backgroundColor: "white" });
        window.plmlensStages = (window.plmlensStages || []).concat([stage]);
      }
      // On a white background: residues the SAE did not see are faded, those it saw go from grey (off) to
      // vermillion by their B-factor (the activation).
      const scheme = NGL.ColormakerRegistry.addScheme(function () {
        this.atomColor = (atom) => {
          if (atom.bfactor < 0) { return 0xeeeeee; }
          const s = Math.max(0, Math.min(1, atom.bfactor / vmax));
          const rgb = [180 + (213 - 180) * s, 180 + (94 - 180) * s, 180 * (1 - s)].map(Math.round);
          return (rgb[0] << 16) | (rgb[1] << 8) | rgb[2];
        };
      });
      const token = ++drawToken;
      stage.removeAllComponents();
      stage.loadFile(new Blob([withBfactors(entry, top.activations)], { type: "text/plain" }), { ext: "pdb" })
        .then(function (component) {
          if (token !== drawToken) { stage.removeComponent(component); return; }
          component.addRepresentation(entry.repr, { color: scheme });
          component.autoView();
          let bmax = -1;
          component.structure.eachAtom((atom) => { bmax = Math.max(bmax, atom.bfactor); });
          stageElement.dataset.rendered = "true";
          stageElement.dataset.protein = top.protein;
          stageElement.dataset.bmax = bmax.toFixed(2);
          stage.viewer.requestRender();
        }).catch((error) => console.error("plmlens features: " + error));
    }
    function show(feature) {
      const f = D.features[String(feature)];
      const status = browser.querySelector(".browser-status");
      section.querySelectorAll("button.feature-link").forEach((b) =>
        b.classList.toggle("selected", b.dataset.feature === String(feature)));
      status.dataset.feature = String(feature);
      if (!f) { status.textContent = `No example proteins were kept for feature ${feature}.`; return; }
      const vmax = Math.max(1e-9, ...f.top.map((t) => t.max || 0));
      browser.querySelector(".browser-title").textContent = `Feature ${feature}` +
        (f.concept ? `: ${f.label} (test F1 ${fmt(f.f1)})` : "") + `, fires on ${pct(f.frequency)} of residues`;
      const histogramElement = browser.querySelector(".histogram");
      histogramElement.replaceChildren(...(f.histogram ? [element("p", "note", "Activations where it fires:"),
        histogram(f.histogram)] : [element("p", "note", "No histogram kept.")]));
      const proteins = f.top.flatMap((top, k) => {
        const head = element("p", "protein-head", `${top.protein}: max activation ${fmt(top.max)}`);
        if (D.structures[top.protein] && stageElement) {
          const button = element("button", "show-3d", "show in 3D");
          button.addEventListener("click", () => draw3d(top, vmax));
          head.append(button);
        }
        return [head, sequenceView(top, vmax)];
      });
      browser.querySelector(".proteins").replaceChildren(legend(f.top), ...proteins);
      status.textContent = `Feature ${feature}: its ${f.top.length} top-activating proteins, residues coloured ` +
        `by activation (white: off, vermillion: ${fmt(vmax)}) above their regions` +
        (stageElement ? "; the 3D view shows the first protein with a structure." : ".");
      const first = f.top.find((top) => D.structures[top.protein]);
      if (first) { draw3d(first, vmax); }
      browser.scrollIntoView({ block: "nearest" });
    }
    section.addEventListener("click", (event) => {
      const button = event.target.closest("button.feature-link");
      if (button) { show(Number(button.dataset.feature)); }
    });
    const filter = section.querySelector("input.feature-filter");
    if (filter) {
      const rows = Array.from(section.querySelectorAll("table.features tbody tr"));
      const count = section.querySelector(".filter-count");
      filter.addEventListener("input", () => {
        const query = filter.value.trim().toLowerCase();
        let shown = 0;
        rows.forEach((row) => {
          row.hidden = query !== "" && !row.dataset.search.includes(query) && row.dataset.feature !== query;
          shown += row.hidden ? 0 : 1;
        });
        count.textContent = `${shown} of ${rows.length} rows shown`;
      });
    }
  }
  document.querySelectorAll("#features section.sae").forEach((section) => {
    if (section.querySelector("script.sae-data")) { setup(section); }
  });
})();
