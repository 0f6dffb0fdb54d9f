// Any element with data-layer and data-head (heatmap cells, table links) selects that head on click.
document.addEventListener("click", function (event) {
  const target = event.target.closest("[data-layer][data-head]");
  if (!target || target.closest("#explorer")) { return; }
  document.dispatchEvent(new CustomEvent("plmlens:head", { detail: {
    key: target.dataset.key || "", layer: Number(target.dataset.layer), head: Number(target.dataset.head) } }));
});
document.addEventListener("plmlens:head", function (event) {
  const d = event.detail;
  document.querySelectorAll(".cells .cell.selected").forEach((c) => c.classList.remove("selected"));
  // A comparison (data-head-scope="key") selects the head in its own model's panels only.
  const scope = document.body.dataset.headScope === "key" ? `[data-key="${CSS.escape(d.key)}"]` : "";
  document.querySelectorAll(`.cells .cell${scope}[data-layer="${d.layer}"][data-head="${d.head}"]`)
    .forEach((c) => c.classList.add("selected"));
});
