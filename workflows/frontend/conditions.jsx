// A condition field of a step panel: the segments' own visual condition builder
// (static/js/segment_builder.js, loaded on the builder page), mounted on the markup it expects,
// with its JSON textarea as the source of truth, exactly as on the segment form.
import React, { useEffect, useRef } from "react";

function element(tag, attributes = {}, text = "") {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) el.setAttribute(key, value);
  if (text) el.textContent = text;
  return el;
}

let counter = 0;

export function ConditionField({ label, value, onChange, config }) {
  const ref = useRef(null);
  const onChangeRef = useRef(onChange);
  onChangeRef.current = onChange;

  useEffect(() => {
    const box = ref.current;
    counter += 1;
    const id = `wf-condition-${counter}`;
    const head = element("div", { class: "condition-head" });
    head.append(element("label", { for: id }, `${label} (JSON)`));
    const modes = element("div", { class: "mode-switch", role: "group", "aria-label": `${label} editor`, "data-mode-switch": "" });
    modes.hidden = true;
    modes.append(
      element("button", { type: "button", class: "button secondary small", "data-mode": "visual", "aria-pressed": "false" }, "Visual"),
      element("button", { type: "button", class: "button secondary small", "data-mode": "json", "aria-pressed": "true" }, "JSON"),
    );
    head.append(modes);
    const message = element("p", { class: "builder-message", role: "status", "data-builder-message": "" });
    message.hidden = true;
    const builder = element("div", { class: "builder", "data-builder": "" });
    builder.hidden = true;
    const textarea = element("textarea", { id, rows: "6", spellcheck: "false", class: "mono", "data-condition-json": "" });
    textarea.value = value === undefined || value === null ? "" : JSON.stringify(value, null, 2);
    const invalid = element("p", { class: "errorlist", role: "alert" });
    invalid.hidden = true;
    box.replaceChildren(head, message, builder, textarea, invalid);
    textarea.addEventListener("input", () => {
      const text = textarea.value.trim();
      if (text === "") {
        invalid.hidden = true;
        onChangeRef.current(null, "");
        return;
      }
      try {
        const parsed = JSON.parse(text);
        invalid.hidden = true;
        onChangeRef.current(parsed, "");
      } catch (err) {
        invalid.textContent = `${label}: not valid JSON (${err.message})`;
        invalid.hidden = false;
        onChangeRef.current(undefined, `${label}: not valid JSON`);
      }
    });
    if (window.TimonierConditionBuilder) {
      window.TimonierConditionBuilder.mount(box, config);
      modes.querySelector("[data-mode=visual]").click();
    }
    return () => box.replaceChildren();
    // Mounted once: the builder owns this element's children from here on, React never renders them.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, []);

  return <div className="field condition-field wf-condition" ref={ref} />;
}
