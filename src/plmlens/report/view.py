"""Attention drawn on the 3D structure (the paper's figure 1) with NGL, as a self-contained offline page.

NGL comes from the npm package ``ngl`` (installed by ``make install`` into ``.venv/share/plmlens``) and is
inlined into every page, so the page works without a network. Its source is not part of plmlens.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import gemmi
import numpy as np

from plmlens.proteins import Protein

NGL_VERSION = "2.5.0"


class ViewerError(RuntimeError):
    """The 3D viewer cannot be built (e.g. NGL is not installed)."""


@cache
def ngl_javascript() -> str:
    """The NGL bundle (``ngl/dist/ngl.js``), from ``$PLMLENS_NGL_JS`` or the npm install of ``make install``.

    Raises
    ------
    ViewerError
        Saying how to install it.
    """
    candidates = [Path(os.environ["PLMLENS_NGL_JS"])] if os.environ.get("PLMLENS_NGL_JS") else []
    for base in (Path(sys.prefix) / "share" / "plmlens", Path(__file__).resolve().parents[3], Path.cwd()):
        candidates.append(base / "node_modules" / "ngl" / "dist" / "ngl.js")
    for path in candidates:
        if path.is_file():
            return path.read_text(encoding="utf-8")
    raise ViewerError(
        f"NGL is not installed: run `npm install --prefix {Path(sys.prefix) / 'share' / 'plmlens'} --ignore-scripts "
        f"ngl@{NGL_VERSION}` (make install does this), or set PLMLENS_NGL_JS to ngl/dist/ngl.js"
    )


def chain_pdb_text(protein: Protein) -> tuple[str, str]:
    """PDB text to draw `protein` from, and the NGL representation to use.

    The chain's own atoms from its source file when there is one (drawn as a cartoon); otherwise CA atoms
    from the record's coordinates (drawn as a backbone trace), e.g. for ProMod3 chains.
    """
    source = Path(protein.source)
    if protein.chain is not None and source.is_file() and not source.name.endswith(".dat"):
        structure = gemmi.read_structure(str(source))
        structure.setup_entities()
        structure.remove_hydrogens()
        structure.remove_ligands_and_waters()
        for model_index in range(len(structure) - 1, 0, -1):
            del structure[model_index]
        for chain in list(structure[0]):
            if chain.name != protein.chain:
                structure[0].remove_chain(chain.name)
        return structure.make_pdb_string(gemmi.PdbWriteOptions(minimal=True)), "cartoon"
    return _ca_trace(protein, 0.0), "backbone"


def _ca_trace(protein: Protein, bfactor: float) -> str:
    """PDB text of the record's CA atoms (residues without coordinates left out)."""
    lines = []
    for k, (number, code, xyz) in enumerate(
        zip(protein.residue_numbers, protein.insertion_codes, protein.ca, strict=True)
    ):
        if np.isfinite(xyz).all():
            x, y, z = xyz
            lines.append(
                f"ATOM  {k + 1:>5}  CA  ALA A{number:>4}{code or ' '}   {x:8.3f}{y:8.3f}{z:8.3f}"
                f"  1.00{bfactor:6.2f}           C"
            )
    return "\n".join([*lines, "END", ""])


#: Atoms kept by `marked_chain_pdb`: enough for NGL's cartoon, a fraction of a full-atom chain's size.
BACKBONE_ATOMS = ("N", "CA", "C", "O", "CB")


def marked_chain_pdb(protein: Protein) -> tuple[str, str]:
    """Like `chain_pdb_text`, with B-factor 1 on the residues of `protein` (what the model saw, e.g. the
    variable domain) and 0 on the rest of the chain, and backbone atoms (+CB) only.

    The source file holds the whole chain (e.g. a Fab's constant domain too); the page colours residues by
    B-factor so that what was not analysed is faded.
    """
    source = Path(protein.source)
    structure = None
    if protein.chain is not None and source.is_file() and not source.name.endswith(".dat"):
        analysed = {(int(n), c.strip()) for n, c in zip(protein.residue_numbers, protein.insertion_codes, strict=True)}
        try:
            structure = gemmi.read_structure(str(source))
        except (RuntimeError, ValueError):
            # A file gemmi cannot parse strictly (e.g. a bad charge column) still gives the record's CA trace.
            structure = None
    if structure is not None:
        structure.setup_entities()
        structure.remove_hydrogens()
        structure.remove_ligands_and_waters()
        for model_index in range(len(structure) - 1, 0, -1):
            del structure[model_index]
        for chain in list(structure[0]):
            if chain.name != protein.chain:
                structure[0].remove_chain(chain.name)
        for residue in structure[0][protein.chain]:
            mark = 1.0 if (residue.seqid.num, residue.seqid.icode.strip()) in analysed else 0.0
            for index in range(len(residue) - 1, -1, -1):
                if residue[index].name not in BACKBONE_ATOMS:
                    del residue[index]
            for atom in residue:
                atom.b_iso = mark
        return structure.make_pdb_string(gemmi.PdbWriteOptions(minimal=True)), "cartoon"
    # The CA trace is built from the record itself: every residue in it was analysed.
    return _ca_trace(protein, 1.0), "backbone"


@dataclass
class AttentionView:
    """One head's attention on one protein, drawn in 3D.

    Parameters
    ----------
    protein : Protein
    attention : ndarray (L, L)
        The head's attention over the protein's residues.
    title : str
    min_weight : float
        Arcs lighter than this are hidden; line width is proportional to weight.
    n_labels : int
        The residues receiving the most attention are labelled.
    """

    protein: Protein
    attention: np.ndarray
    title: str = ""
    min_weight: float = 0.1
    n_labels: int = 5

    def arcs(self) -> list[dict]:
        """Arcs to draw: from/to residue index, weight, and CA coordinates."""
        n = min(len(self.protein), self.attention.shape[0])
        weights = self.attention[:n, :n]
        ca = self.protein.ca[:n]
        out = []
        for i, j in zip(*np.nonzero(weights >= self.min_weight), strict=True):
            if i != j and np.isfinite(ca[i]).all() and np.isfinite(ca[j]).all():
                out.append({"i": int(i), "j": int(j), "w": float(weights[i, j]),
                            "a": ca[i].round(3).tolist(), "b": ca[j].round(3).tolist()})  # fmt: skip
        return out

    def labels(self) -> list[dict]:
        """The most attended residues (by attention received), with their author ids."""
        n = min(len(self.protein), self.attention.shape[0])
        received = self.attention[:n, :n].sum(axis=0)
        top = [int(j) for j in np.argsort(-received)[: self.n_labels] if np.isfinite(self.protein.ca[j]).all()]
        ids = self.protein.residue_ids
        return [
            {"xyz": self.protein.ca[j].round(3).tolist(), "text": f"{self.protein.sequence[j]}{ids[j]}"} for j in top
        ]

    def heatmap_png(self) -> str:
        """The head's residue × residue attention as a base64 PNG."""
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(4.2, 3.8), constrained_layout=True)
        image = ax.imshow(self.attention, cmap="viridis", vmin=0)
        ax.set_xlabel("attended residue (j)")
        ax.set_ylabel("attending residue (i)")
        ax.set_title(self.title or "attention", fontsize=9)
        fig.colorbar(image, ax=ax, shrink=0.8)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110)
        plt.close(fig)
        return base64.b64encode(buffer.getvalue()).decode("ascii")

    def fragment(self, element_id: str) -> str:
        """HTML + script drawing this view into a new element (NGL must be loaded on the page)."""
        pdb, representation = chain_pdb_text(self.protein)
        data = {"pdb": pdb, "repr": representation, "arcs": self.arcs(), "labels": self.labels()}
        return VIEW_FRAGMENT.format(
            id=element_id, title=html.escape(self.title), png=self.heatmap_png(),
            data=json.dumps(data).replace("</", "<\\/"), n_arcs=len(data["arcs"]), min_weight=self.min_weight,
        )  # fmt: skip

    def to_html(self) -> str:
        """A complete, self-contained offline page."""
        return page(self.title or "plmlens attention view", self.fragment("view0"))

    def save(self, path: str | Path) -> Path:
        from plmlens.ioutils import write_text_atomic

        return write_text_atomic(path, self.to_html())

    def _repr_html_(self) -> str:
        # In a notebook: the same page in a sandboxed iframe.
        return (f'<iframe srcdoc="{html.escape(self.to_html())}" style="width:100%;height:560px;border:0" '
                'sandbox="allow-scripts"></iframe>')  # fmt: skip


ERROR_CAPTURE = """<script>
window.plmlensErrors = [];
(function () {
  const original = console.error;
  console.error = function (...args) { window.plmlensErrors.push(args.join(" ")); original.apply(console, args); };
  window.addEventListener("error", (event) => window.plmlensErrors.push(String(event.message)));
  // Record the outcome in the DOM too, where a headless browser's --dump-dom can read it.
  window.addEventListener("load", () => setTimeout(() => {
    document.body.dataset.errors = JSON.stringify(window.plmlensErrors);
    document.body.dataset.stages = String(document.querySelectorAll('.stage[data-rendered="true"]').length);
  }, 3000));
})();
</script>"""

STYLE = """<style>
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1200px; }
.view { display: flex; gap: 1em; align-items: flex-start; flex-wrap: wrap; margin-bottom: 1.5em; }
.stage { width: 640px; height: 480px; border: 1px solid #ccc; position: relative; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1.5em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.2em 0.6em; text-align: right; }
th { background: #f3f3f3; } img { max-width: 100%; } .note { color: #555; font-size: 0.9em; }
</style>"""

VIEW_FRAGMENT = """<h3>{title}</h3>
<p class="note">{n_arcs} arcs with weight ≥ {min_weight}; line width ∝ weight;
the most attended residues are labelled.</p>
<div class="view"><div class="stage" id="{id}"></div>
<img alt="attention heatmap" src="data:image/png;base64,{png}"></div>
<script>
(function () {{
  const data = {data};
  const stage = new NGL.Stage("{id}", {{ backgroundColor: "white" }});
  window.plmlensStages = (window.plmlensStages || []).concat([stage]);
  stage.loadFile(new Blob([data.pdb], {{ type: "text/plain" }}), {{ ext: "pdb" }}).then(function (component) {{
    component.addRepresentation(data.repr, {{ color: "#bbbbbb", opacity: 0.9 }});
    const shape = new NGL.Shape("attention");
    const maxWeight = Math.max.apply(null, data.arcs.map((a) => a.w).concat([1e-9]));
    data.arcs.forEach(function (arc) {{
      shape.addCylinder(arc.a, arc.b, [0.0, 0.45, 0.70], 0.05 + 0.45 * arc.w / maxWeight);
    }});
    data.labels.forEach(function (l) {{ shape.addText(l.xyz, [0.84, 0.37, 0.0], 6, l.text); }});
    if (data.arcs.length || data.labels.length) {{
      stage.addComponentFromObject(shape).addRepresentation("buffer");
    }}
    component.autoView();
    stage.viewer.requestRender();
    document.getElementById("{id}").dataset.rendered = "true";
  }}).catch(function (error) {{ console.error("plmlens view {id}: " + error); }});
}})();
</script>"""


def page(title: str, body: str, head: str = "", ngl: bool = True) -> str:
    """A self-contained page with console errors captured in ``window.plmlensErrors`` and, for pages with
    3D views (`ngl`), NGL inlined."""
    script = f"<script>{ngl_javascript()}</script>\n" if ngl else ""
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>\n'
        f"{ERROR_CAPTURE}\n{script}{STYLE}\n{head}</head>\n"
        f"<body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
    )
