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
