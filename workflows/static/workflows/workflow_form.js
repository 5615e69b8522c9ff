// The New Workflow form shows the fields of the chosen Trigger Type (and Days for Once per
// period) only. Without JavaScript every field shows, and the server ignores the others.
(() => {
  const form = document.querySelector("[data-workflow-form]");
  if (!form) return;
  const triggerType = form.querySelector("[name=trigger_type]");
  const frequency = form.querySelector("[name=frequency]");
  function update() {
    const chosen = new Set([triggerType.value, frequency.value]);
    for (const el of form.querySelectorAll("[data-show-for]")) {
      el.hidden = !el.dataset.showFor.split(" ").some((value) => chosen.has(value));
    }
  }
  triggerType.addEventListener("change", update);
  frequency.addEventListener("change", update);
  update();
})();
