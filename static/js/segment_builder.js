// The visual condition builder of the segment form, and its Preview button. No framework.
//
// The "Condition (JSON)" textarea stays the form's source of truth: every visual edit rewrites it
// as pretty JSON, and switching JSON → Visual parses it. A condition the builder cannot show
// exactly (not JSON, an unknown key, a value it has no control for) stays on JSON with a message,
// so nothing typed is ever dropped. Without JavaScript the form is the plain textarea.
//
// `TimonierConditionBuilder.mount(container, config)` mounts the same builder on any element holding
// that markup (the workflow builder's step panels do), so one builder serves segments and workflows.
(() => {
function mount(form, config) {
  const textarea = form.querySelector("[data-condition-json]");
  const builder = form.querySelector("[data-builder]");
  const message = form.querySelector("[data-builder-message]");
  const modeSwitch = form.querySelector("[data-mode-switch]");
  const help = form.querySelector("[data-json-help]");

  const TYPES = { trait: "Trait", event: "Event", segment: "In segment", and: "All of (AND)", or: "Any of (OR)", not: "Not" };
  const KEYS = {
    trait: ["type", "name", "op", "value"],
    event: ["type", "event_name", "count", "within", "between", "where"],
    segment: ["type", "segment_id"],
    and: ["type", "conditions"],
    or: ["type", "conditions"],
    not: ["type", "condition"],
  };
  const OPERATOR_LABELS = {
    equals: "equals", not_equals: "does not equal", greater_than: "greater than", less_than: "less than",
    greater_than_or_equals: "greater than or equal to", less_than_or_equals: "less than or equal to",
    contains: "contains", not_contains: "does not contain", starts_with: "starts with", ends_with: "ends with",
    in: "is one of", not_in: "is not one of", is_set: "is set", is_not_set: "is not set",
  };
  const COUNT_LABELS = {
    equals: "exactly", not_equals: "other than", greater_than: "more than", less_than: "fewer than",
    greater_than_or_equals: "at least", less_than_or_equals: "at most",
  };
  const ORDERING = ["greater_than", "less_than", "greater_than_or_equals", "less_than_or_equals"];
  const STRINGS = ["starts_with", "ends_with"];
  const NUMBER = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$/;

  let root = null;
  // The value type a person picked for a comparison (Text, Number, True/false), by node.
  const kinds = new WeakMap();

  // --- What the builder can show ---------------------------------------------------------------

  const isObject = (value) => value !== null && typeof value === "object" && !Array.isArray(value);
  const isScalar = (value) => typeof value === "string" || typeof value === "boolean" || (typeof value === "number" && Number.isFinite(value));
  const kindOf = (value) => (typeof value === "number" ? "number" : typeof value === "boolean" ? "boolean" : "text");
  const join = (path, key) => (path === "$" ? key : `${path}.${key}`);

  function extraKey(node, allowed) {
    return Object.keys(node).find((key) => !allowed.includes(key));
  }

  // Why the builder cannot show `node` exactly (a "path: reason" text), or "" if it can.
  function unshowable(node, path) {
    if (!isObject(node)) return `${path}: not an object`;
    if (!(node.type in KEYS)) return `${join(path, "type")}: unknown condition type ${JSON.stringify(node.type)}`;
    const extra = extraKey(node, KEYS[node.type]);
    if (extra !== undefined) return `${join(path, extra)}: unknown key`;
    if (node.type === "trait") {
      if (typeof node.name !== "string") return `${join(path, "name")}: not a text`;
      return unshowableComparison(node, path);
    }
    if (node.type === "segment") {
      return node.segment_id === null || Number.isInteger(node.segment_id) ? "" : `${join(path, "segment_id")}: not a segment id`;
    }
    if (node.type === "not") return unshowable(node.condition, join(path, "condition"));
    if (node.type === "and" || node.type === "or") {
      if (!Array.isArray(node.conditions)) return `${join(path, "conditions")}: not a list`;
      for (let i = 0; i < node.conditions.length; i++) {
        const reason = unshowable(node.conditions[i], `${join(path, "conditions")}[${i}]`);
        if (reason) return reason;
      }
      return "";
    }
    return unshowableEvent(node, path);
  }

  function unshowableEvent(node, path) {
    if (typeof node.event_name !== "string") return `${join(path, "event_name")}: not a text`;
    const count = node.count;
    if (count !== undefined) {
      if (!isObject(count) || extraKey(count, ["op", "value"]) !== undefined || !(count.op in COUNT_LABELS)
          || !(count.value === null || Number.isInteger(count.value))) return `${join(path, "count")}: not a count the builder knows`;
    }
    const within = node.within;
    if (within !== undefined) {
      if (node.between !== undefined) return `${join(path, "between")}: both "within" and "between"`;
      if (!isObject(within) || extraKey(within, ["value", "unit"]) !== undefined || !config.units.includes(within.unit)
          || !(within.value === null || Number.isInteger(within.value))) return `${join(path, "within")}: not a window the builder knows`;
    }
    const between = node.between;
    if (between !== undefined) {
      if (!isObject(between) || extraKey(between, ["from", "to"]) !== undefined
          || typeof between.from !== "string" || typeof between.to !== "string") return `${join(path, "between")}: not two dates`;
    }
    if (node.where !== undefined) {
      if (!Array.isArray(node.where)) return `${join(path, "where")}: not a list`;
      for (let i = 0; i < node.where.length; i++) {
        const item = node.where[i];
        const itemPath = `${join(path, "where")}[${i}]`;
        if (!isObject(item) || extraKey(item, ["name", "op", "value"]) !== undefined || typeof item.name !== "string") {
          return `${itemPath}: not a property filter`;
        }
        const reason = unshowableComparison(item, itemPath);
        if (reason) return reason;
      }
    }
    return "";
  }

  function unshowableComparison(node, path) {
    const op = node.op;
    if (!config.operators.includes(op)) return `${join(path, "op")}: unknown operator ${JSON.stringify(op)}`;
    const value = node.value;
    const where = join(path, "value");
    if (config.presence_operators.includes(op)) return value === undefined ? "" : `${where}: a value with "${op}"`;
    if (value === undefined) return `${where}: missing`;
    if (config.list_operators.includes(op)) {
      if (!Array.isArray(value)) return `${where}: not a list`;
      if (!value.every(isScalar) || new Set(value.map(kindOf)).size > 1) return `${where}: a list of mixed values`;
      const odd = value.find((item) => typeof item === "string" && (item.includes(",") || item.trim() !== item || item === ""));
      return odd === undefined ? "" : `${where}: the item ${JSON.stringify(odd)} (commas, blanks) is only editable as JSON`;
    }
    if (ORDERING.includes(op)) {
      if (typeof value === "string" && NUMBER.test(value.trim())) return `${where}: a number written as text`;
      return typeof value === "string" || (typeof value === "number" && Number.isFinite(value)) ? "" : `${where}: not a number or a date`;
    }
    if (STRINGS.includes(op)) return typeof value === "string" ? "" : `${where}: not a text`;
    return isScalar(value) ? "" : `${where}: not a text, a number or true/false`;
  }

  // --- The model -------------------------------------------------------------------------------

  function defaults(type) {
    switch (type) {
      case "trait": return { type, name: "", op: "equals", value: "" };
      case "event": return { type, event_name: "" };
      case "segment": return { type, segment_id: config.segments.length ? config.segments[0].id : null };
      case "not": return { type, condition: defaults("trait") };
      default: return { type, conditions: [defaults("trait")] };
    }
  }

  const isGroup = (node) => node.type === "and" || node.type === "or";

  // The node that replaces `node` when its type select changes to `type`, keeping what fits.
  function retype(node, type) {
    if (node.type === type) return node;
    if (type === "and" || type === "or") {
      if (isGroup(node)) return { type, conditions: node.conditions };
      return { type, conditions: [node.type === "not" ? node.condition : node] };
    }
    if (type === "not") return { type, condition: node };
    if (node.type === "not" && node.condition.type === type) return node.condition;
    if (isGroup(node) && node.conditions.length === 1 && node.conditions[0].type === type) return node.conditions[0];
    return defaults(type);
  }

  function commit() {
    textarea.value = JSON.stringify(root, null, 2);
    textarea.dispatchEvent(new Event("input", { bubbles: true }));
  }

  function parseNumber(text) {
    return NUMBER.test(text.trim()) ? Number(text.trim()) : null;
  }

  function typed(text, kind) {
    if (kind === "number") {
      const number = parseNumber(text);
      return number === null ? text : number;
    }
    if (kind === "boolean") return text === "true";
    return text;
  }

  // The op of a comparison changed: give its value the shape the new operator takes.
  function reshapeValue(node, op) {
    const before = node.value;
    node.op = op;
    if (config.presence_operators.includes(op)) {
      delete node.value;
    } else if (config.list_operators.includes(op)) {
      node.value = Array.isArray(before) ? before : before === undefined || before === "" ? [] : [before];
    } else {
      const single = Array.isArray(before) ? before[0] : before;
      if (single === undefined || (STRINGS.includes(op) && typeof single !== "string")) node.value = single === undefined ? "" : String(single);
      else if (ORDERING.includes(op) && typeof single === "boolean") node.value = "";
      else node.value = single;
    }
  }

  // --- Rendering -------------------------------------------------------------------------------

  function element(tag, attributes = {}, children = []) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes)) {
      if (key === "text") el.textContent = value;
      else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else if (value !== undefined && value !== null && value !== false) el.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children) if (child) el.append(child);
    return el;
  }

  function select(label, control, options, current, onChange) {
    const el = element("select", { "aria-label": label, "data-control": control, onchange: () => onChange(el.value) });
    for (const [value, text] of options) el.append(element("option", { value, text }));
    el.value = current;
    return el;
  }

  function input(label, control, value, onInput, attributes = {}) {
    const el = element("input", { type: "text", "aria-label": label, "data-control": control, ...attributes });
    el.value = value;
    el.addEventListener("input", () => onInput(el.value, el));
    return el;
  }

  function button(text, label, onClick, className = "button secondary small") {
    return element("button", { type: "button", class: className, text, "aria-label": label, onclick: onClick });
  }

  // Re-render everything, keeping the focus on the same control of the same condition.
  function render() {
    const active = document.activeElement;
    const focusKey = active && builder.contains(active) ? [active.closest("[data-path]")?.dataset.path, active.dataset.control] : null;
    builder.replaceChildren(nodeEditor(root, "$", (replacement) => { root = replacement; }, null));
    if (focusKey) {
      const again = [...builder.querySelectorAll(`[data-control="${focusKey[1]}"]`)].find((el) => el.closest("[data-path]")?.dataset.path === focusKey[0]);
      if (again) again.focus();
    }
  }

  function changed() {
    commit();
    render();
  }

  function nodeEditor(node, path, replace, remove) {
    const box = element("div", { class: `cond-node cond-${node.type}`, "data-path": path, "data-type": node.type });
    const typeSelect = select("Condition type", "type", Object.entries(TYPES), node.type, (type) => {
      if ((type === "trait" || type === "event" || type === "segment") && isGroup(node) && node.conditions.length > 1
          && !window.confirm(`Replace this group and its ${node.conditions.length} conditions?`)) {
        typeSelect.value = node.type;
        return;
      }
      replace(retype(node, type));
      changed();
    });
    const head = element("div", { class: "cond-head" }, [typeSelect]);
    box.append(head);
    if (node.type === "trait") {
      head.append(input("Trait", "name", node.name, (text) => { node.name = text; commit(); }, { placeholder: "plan" }));
      comparisonEditor(node, head);
    } else if (node.type === "event") {
      eventEditor(node, box, head);
    } else if (node.type === "segment") {
      const options = config.segments.map((segment) => [String(segment.id), segment.name]);
      if (node.segment_id !== null && !config.segments.some((segment) => segment.id === node.segment_id)) {
        options.push([String(node.segment_id), `#${node.segment_id} (not a segment you can pick)`]);
      }
      if (!options.length) options.push(["", "No other segment in this project"]);
      head.append(select("Segment", "segment", options, node.segment_id === null ? "" : String(node.segment_id), (value) => {
        node.segment_id = value === "" ? null : Number(value);
        changed();
      }));
    } else if (node.type === "not") {
      box.append(element("div", { class: "cond-children" }, [
        nodeEditor(node.condition, join(path, "condition"), (replacement) => { node.condition = replacement; }, null),
      ]));
    } else {
      const list = element("ol", { class: "cond-children" });
      node.conditions.forEach((child, index) => {
        const childPath = `${join(path, "conditions")}[${index}]`;
        list.append(element("li", {}, [nodeEditor(child, childPath, (replacement) => { node.conditions[index] = replacement; }, () => {
          node.conditions.splice(index, 1);
          changed();
        })]));
      });
      box.append(list);
      box.append(element("div", { class: "cond-actions" }, [
        button("Add condition", "Add condition", () => { node.conditions.push(defaults("trait")); changed(); }),
        button("Add group", "Add group", () => { node.conditions.push(defaults("and")); changed(); }),
      ]));
    }
    if (remove) head.append(button("Remove", "Remove condition", remove, "button danger small cond-remove"));
    return box;
  }

  function comparisonEditor(node, container) {
    const ops = config.operators.map((op) => [op, OPERATOR_LABELS[op] || op]);
    container.append(select("Operator", "op", ops, node.op, (op) => { reshapeValue(node, op); changed(); }));
    const op = node.op;
    if (config.presence_operators.includes(op)) return;
    const list = config.list_operators.includes(op);
    const hasKinds = !ORDERING.includes(op) && !STRINGS.includes(op);
    let kind = kinds.get(node) || kindOf(list ? node.value[0] : node.value);
    if (!hasKinds) kind = "text";
    if (hasKinds) {
      const kindOptions = [["text", "Text"], ["number", "Number"], ["boolean", "True/false"]];
      container.append(select("Value type", "kind", kindOptions, kind, (next) => {
        kinds.set(node, next);
        if (list) node.value = node.value.map((item) => typed(String(item), next));
        else node.value = next === "boolean" ? node.value === true || node.value === "true" : typed(String(node.value), next);
        changed();
      }));
    }
    if (kind === "boolean" && !list) {
      container.append(select("Value", "value", [["true", "true"], ["false", "false"]], String(node.value), (value) => {
        node.value = value === "true";
        changed();
      }));
      return;
    }
    if (list) {
      const text = node.value.map(String).join(", ");
      container.append(input("Value", "value", text, (value, el) => {
        const items = value.split(",").map((item) => item.trim()).filter((item) => item !== "");
        node.value = items.map((item) => (kind === "boolean" ? item === "true" : typed(item, kind)));
        el.toggleAttribute("aria-invalid", kind === "number" && node.value.some((item) => typeof item !== "number"));
        commit();
      }, { placeholder: kind === "number" ? "1, 2, 3" : "a, b, c", class: "cond-value wide" }));
      return;
    }
    const placeholder = ORDERING.includes(op) ? "a number or YYYY-MM-DD" : "";
    container.append(input("Value", "value", node.value === undefined ? "" : String(node.value), (value, el) => {
      if (ORDERING.includes(op)) {
        const number = parseNumber(value);
        node.value = number === null ? value : number;
      } else {
        node.value = typed(value, kind);
        el.toggleAttribute("aria-invalid", kind === "number" && typeof node.value !== "number");
      }
      commit();
    }, { placeholder, class: "cond-value" }));
  }

  function integerOrNull(text) {
    return /^[0-9]+$/.test(text.trim()) ? Number(text.trim()) : null;
  }

  function eventEditor(node, box, head) {
    head.append(input("Event", "event_name", node.event_name, (text) => { node.event_name = text; commit(); }, { placeholder: "purchase" }));
    const countOptions = [["", "at least once"], ...config.count_operators.map((op) => [op, COUNT_LABELS[op] || op])];
    const countRow = element("div", { class: "cond-row" }, [element("span", { class: "muted", text: "performed" })]);
    countRow.append(select("How many times", "count_op", countOptions, node.count ? node.count.op : "", (op) => {
      if (!op) delete node.count;
      else node.count = { op, value: node.count ? node.count.value : 1 };
      changed();
    }));
    if (node.count) {
      countRow.append(input("Count", "count_value", node.count.value === null ? "" : String(node.count.value), (text) => {
        node.count.value = integerOrNull(text);
        commit();
      }, { inputmode: "numeric", class: "cond-number" }));
      countRow.append(element("span", { class: "muted", text: "times" }));
    }
    const when = node.within ? "within" : node.between ? "between" : "";
    countRow.append(select("When", "when", [["", "at any time"], ["within", "in the last"], ["between", "between"]], when, (value) => {
      delete node.within;
      delete node.between;
      if (value === "within") node.within = { value: 30, unit: "days" };
      if (value === "between") node.between = { from: "", to: "" };
      changed();
    }));
    if (node.within) {
      countRow.append(input("Window length", "within_value", node.within.value === null ? "" : String(node.within.value), (text) => {
        node.within.value = integerOrNull(text);
        commit();
      }, { inputmode: "numeric", class: "cond-number" }));
      countRow.append(select("Window unit", "within_unit", config.units.map((unit) => [unit, unit]), node.within.unit, (unit) => {
        node.within.unit = unit;
        changed();
      }));
    }
    if (node.between) {
      countRow.append(input("From", "between_from", node.between.from, (text) => { node.between.from = text; commit(); }, { placeholder: "YYYY-MM-DD", class: "cond-date" }));
      countRow.append(element("span", { class: "muted", text: "and" }));
      countRow.append(input("To", "between_to", node.between.to, (text) => { node.between.to = text; commit(); }, { placeholder: "YYYY-MM-DD", class: "cond-date" }));
    }
    box.append(countRow);
    const filters = element("ol", { class: "cond-filters" });
    (node.where || []).forEach((filter, index) => {
      const row = element("li", { class: "cond-row", "data-path": `${join(box.dataset.path, "where")}[${index}]` }, [element("span", { class: "muted", text: index ? "and" : "where" })]);
      row.append(input("Property", "name", filter.name, (text) => { filter.name = text; commit(); }, { placeholder: "amount" }));
      comparisonEditor(filter, row);
      row.append(button("Remove", "Remove filter", () => {
        node.where.splice(index, 1);
        if (!node.where.length) delete node.where;
        changed();
      }, "button danger small"));
      filters.append(row);
    });
    box.append(filters);
    box.append(element("div", { class: "cond-actions" }, [
      button("Add property filter", "Add property filter", () => {
        node.where = node.where || [];
        node.where.push({ name: "", op: "equals", value: "" });
        changed();
      }),
    ]));
  }

  // --- Switching between Visual and JSON -------------------------------------------------------

  function say(text) {
    message.textContent = text;
    message.hidden = !text;
  }

  function showMode(visual) {
    builder.hidden = !visual;
    textarea.hidden = visual;
    if (help) help.hidden = visual;
    for (const el of modeSwitch.querySelectorAll("[data-mode]")) {
      el.setAttribute("aria-pressed", String((el.dataset.mode === "visual") === visual));
    }
  }

  function toVisual() {
    const text = textarea.value.trim();
    let parsed;
    if (text === "") {
      parsed = defaults("trait");
    } else {
      try {
        parsed = JSON.parse(text);
      } catch (err) {
        say(`The condition is not valid JSON (${err.message}): fix it here, or empty the field to start over in the visual editor.`);
        textarea.focus();
        return;
      }
      const reason = unshowable(parsed, "$");
      if (reason) {
        say(`The visual editor cannot show this condition (${reason}): edit it here as JSON.`);
        textarea.focus();
        return;
      }
    }
    say("");
    root = parsed;
    render();
    showMode(true);
  }

  function toJson() {
    say("");
    showMode(false);
  }

  modeSwitch.hidden = false;
  modeSwitch.addEventListener("click", (event) => {
    const target = event.target.closest("[data-mode]");
    if (!target) return;
    if (target.dataset.mode === "visual") {
      if (builder.hidden) toVisual();
    } else if (!builder.hidden) {
      toJson();
    }
  });

  // --- Preview ---------------------------------------------------------------------------------

  const preview = form.querySelector("[data-preview]");
  if (!preview) return;
  const previewResult = preview.querySelector("[data-preview-result]");
  const previewErrors = preview.querySelector("[data-preview-errors]");
  preview.hidden = false;
  preview.querySelector("[data-preview-button]").addEventListener("click", async () => {
    const token = form.querySelector("[name=csrfmiddlewaretoken]").value;
    const body = new FormData();
    body.append("condition", textarea.value);
    body.append("csrfmiddlewaretoken", token);
    previewResult.textContent = "Counting…";
    previewErrors.replaceChildren();
    previewErrors.hidden = true;
    try {
      const response = await fetch(form.dataset.previewUrl, {
        method: "POST", body, credentials: "same-origin", headers: { "X-CSRFToken": token, Accept: "application/json" },
      });
      const answer = await response.json();
      if (answer.errors) {
        previewResult.textContent = "The condition has problems:";
        for (const error of answer.errors) previewErrors.append(element("li", { text: `Condition (JSON): ${error}` }));
        previewErrors.hidden = false;
      } else {
        previewResult.textContent = `${answer.count.toLocaleString("en")} customer${answer.count === 1 ? " matches" : "s match"}`;
      }
    } catch (err) {
      previewResult.textContent = `Preview failed (${err.message}): try again.`;
    }
  });
  textarea.addEventListener("input", () => {
    if (previewResult.textContent) previewResult.textContent = "";
    previewErrors.hidden = true;
  });
}

window.TimonierConditionBuilder = { mount };
const segmentForm = document.querySelector("[data-segment-form]");
if (segmentForm) mount(segmentForm, JSON.parse(document.getElementById("segment-builder-config").textContent));
})();
