/* The template page's preview: switch the iframe between desktop and mobile widths. */
document.addEventListener("DOMContentLoaded", () => {
  const frame = document.querySelector(".email-preview-frame iframe");
  if (!frame) return;
  for (const button of document.querySelectorAll("[data-preview-width]")) {
    button.addEventListener("click", () => {
      frame.dataset.width = button.dataset.previewWidth;
      for (const other of document.querySelectorAll("[data-preview-width]")) {
        other.setAttribute("aria-pressed", String(other === button));
      }
    });
  }
});
