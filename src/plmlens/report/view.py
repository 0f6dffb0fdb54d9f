"""Attention drawn on the 3D structure (the paper's figure 1) with NGL, as a self-contained offline page.

NGL comes from the npm package ``ngl`` (installed by ``make install`` into ``.venv/share/plmlens``) and is
inlined into every page, so the page works without a network. Its source is not part of plmlens.
"""

from __future__ import annotations

import base64
import io
import os
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import gemmi
import numpy as np
from markupsafe import Markup

from plmlens.proteins import Protein
from plmlens.report.html import inline_script, macro, render

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

    def context(self, element_id: str) -> dict:
        """What the ``view`` macro of ``view.html`` draws: the title, the arc count, the heatmap (base64 PNG)
        and the data its script reads (structure, arcs, labels)."""
        pdb, representation = chain_pdb_text(self.protein)
        data = {"pdb": pdb, "repr": representation, "arcs": self.arcs(), "labels": self.labels()}
        return {"id": element_id, "title": self.title, "n_arcs": len(data["arcs"]), "min_weight": self.min_weight,
                "png": self.heatmap_png(), "data": data}  # fmt: skip

    def fragment(self, element_id: str) -> Markup:
        """HTML + script drawing this view into a new element (NGL must be loaded on the page)."""
        return macro("view.html", "view")(self.context(element_id))

    def to_html(self) -> str:
        """A complete, self-contained offline page."""
        return page(self.title or "plmlens attention view", self.fragment("view0"))

    def save(self, path: str | Path) -> Path:
        from plmlens.ioutils import write_text_atomic

        return write_text_atomic(path, self.to_html())

    def _repr_html_(self) -> str:
        # In a notebook: the same page in a sandboxed iframe (the page is a plain string: escaped into srcdoc).
        return str(macro("view.html", "iframe")(self.to_html()))


def page(title: str, body: Markup | str = "", ngl: bool = True) -> str:
    """A self-contained page with console errors captured in ``window.plmlensErrors`` and, for pages with
    3D views (`ngl`), NGL inlined.

    Parameters
    ----------
    title : str
        Text (escaped).
    body : Markup or str
        HTML rendered by a template (e.g. `AttentionView.fragment`); a plain string is escaped, shown as text.
    ngl : bool
        Inline NGL (raises `ViewerError` when it is not installed).
    """
    return render("page.html", title=title, body=body, ngl_js=inline_script(ngl_javascript()) if ngl else None)
