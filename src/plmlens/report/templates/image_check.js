// Records in the DOM how many inlined images decoded, where a headless browser's --dump-dom can read it.
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  document.body.dataset.images = String(images.length);
  document.body.dataset.decoded = String(images.filter((i) => i.complete && i.naturalWidth > 0).length);
});
