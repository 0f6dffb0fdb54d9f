// The view's element id comes from this script's data-view attribute and its data from the JSON element
// beside it, so nothing from the data is ever part of the code.
(function (id) {
  const data = JSON.parse(document.getElementById(id + "-data").textContent);
  const stage = new NGL.Stage(id, { backgroundColor: "white" });
  window.plmlensStages = (window.plmlensStages || []).concat([stage]);
  stage.loadFile(new Blob([data.pdb], { type: "text/plain" }), { ext: "pdb" }).then(function (component) {
    component.addRepresentation(data.repr, { color: "#bbbbbb", opacity: 0.9 });
    const shape = new NGL.Shape("attention");
    const maxWeight = Math.max.apply(null, data.arcs.map((a) => a.w).concat([1e-9]));
    data.arcs.forEach(function (arc) {
      shape.addCylinder(arc.a, arc.b, [0.0, 0.45, 0.70], 0.05 + 0.45 * arc.w / maxWeight);
    });
    data.labels.forEach(function (l) { shape.addText(l.xyz, [0.84, 0.37, 0.0], 6, l.text); });
    if (data.arcs.length || data.labels.length) {
      stage.addComponentFromObject(shape).addRepresentation("buffer");
    }
    component.autoView();
    stage.viewer.requestRender();
    document.getElementById(id).dataset.rendered = "true";
  }).catch(function (error) { console.error("plmlens view " + id + ": " + error); });
})(document.currentScript.dataset.view);
