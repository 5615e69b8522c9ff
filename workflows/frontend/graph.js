// The workflow definition (docs/workflows.md) as a graph: step types, their outputs, new steps,
// edits that keep the edges consistent, dagre's layout, and validation problems by node.
//
// Everything here works on plain definition objects and returns new ones: the builder's state is
// the definition itself, so what it saves is exactly what the API takes.
import dagre from "@dagrejs/dagre";

export const TRIGGER = "trigger";

export const STEP_TYPES = [
  ["email", "Email"],
  ["delay", "Time Delay"],
  ["wait_until", "Wait Until"],
  ["branch", "True/False Branch"],
  ["split", "Multi-Split"],
  ["random_cohort", "Random Cohort"],
  ["update_attribute", "Update Attribute"],
  ["webhook", "Webhook"],
  ["exit", "Exit"],
];
export const TYPE_LABELS = Object.fromEntries(STEP_TYPES);

export const NODE_WIDTH = 240;
export const NODE_HEIGHT = 96;

const DEFAULT_CONDITION = () => ({ type: "trait", name: "", op: "equals", value: "" });

// The named outputs of a step, in the order the node shows them (docs/workflows.md, "Steps").
export function outputs(step) {
  switch (step.type) {
    case "email":
    case "delay":
    case "update_attribute":
      return [{ key: "next", label: "" }];
    case "wait_until":
      return [{ key: "met", label: "Met" }, { key: "timeout", label: "Timeout" }];
    case "branch":
      return [{ key: "yes", label: "Yes" }, { key: "no", label: "No" }];
    case "split":
      return [
        ...(step.branches || []).map((branch) => ({ key: branch.key, label: branch.name || branch.key })),
        { key: "else", label: "Else" },
      ];
    case "random_cohort":
      return (step.cohorts || []).map((cohort) => ({
        key: cohort.key,
        label: `${cohort.name || cohort.key} ${cohort.weight}%`,
      }));
    case "webhook":
      return [{ key: "next", label: "OK" }, { key: "failure", label: "Failure" }];
    default:
      return [];
  }
}

export const TRIGGER_OUTPUTS = [{ key: "next", label: "" }];

export function outputsOf(definition, nodeId) {
  if (nodeId === TRIGGER) return TRIGGER_OUTPUTS;
  const step = definition.steps.find((item) => item.id === nodeId);
  return step ? outputs(step) : [];
}

const outputOf = (edge) => edge.output || "next";

export function newStep(type, definition) {
  const taken = new Set(definition.steps.map((step) => step.id));
  let n = 1;
  while (taken.has(`${type}_${n}`)) n += 1;
  const id = `${type}_${n}`;
  const base = { id, type, name: "" };
  switch (type) {
    case "email":
      return { ...base, template_id: null };
    case "delay":
      return { ...base, duration: { value: 1, unit: "days" } };
    case "wait_until":
      return { ...base, condition: DEFAULT_CONDITION(), timeout: { value: 1, unit: "days" } };
    case "branch":
      return { ...base, condition: DEFAULT_CONDITION() };
    case "split":
      return { ...base, branches: [{ key: "branch_1", name: "Branch 1", condition: DEFAULT_CONDITION() }] };
    case "random_cohort":
      return {
        ...base,
        cohorts: [
          { key: "a", name: "A", weight: 50 },
          { key: "b", name: "B", weight: 50 },
        ],
      };
    case "update_attribute":
      return { ...base, action: "set", trait: "", value: "" };
    case "webhook":
      return { ...base, method: "POST", url: "", headers: {}, body: "" };
    default:
      return base;
  }
}

export function normalised(definition) {
  const value = definition && typeof definition === "object" && !Array.isArray(definition) ? definition : {};
  return {
    ...value,
    steps: Array.isArray(value.steps) ? value.steps : [],
    edges: Array.isArray(value.edges) ? value.edges : [],
    layout: value.layout && typeof value.layout === "object" && !Array.isArray(value.layout) ? value.layout : {},
  };
}

function edgeFor(from, output, to) {
  return output === "next" ? { from, to } : { from, output, to };
}

// Where Add Step attaches a new step: the selected node's first free output, else the newest
// step (then the trigger) with one; null when every output is taken.
export function freeOutput(definition, selectedId) {
  const taken = new Set(definition.edges.map((edge) => `${edge.from}\u0000${outputOf(edge)}`));
  const candidates = [];
  if (selectedId) candidates.push(selectedId);
  candidates.push(...definition.steps.map((step) => step.id).reverse(), TRIGGER);
  for (const nodeId of candidates) {
    const free = outputsOf(definition, nodeId).find((output) => !taken.has(`${nodeId}\u0000${output.key}`));
    if (free) return { from: nodeId, output: free.key };
  }
  return null;
}

export function addStep(definition, type, selectedId) {
  const step = newStep(type, definition);
  const attach = freeOutput(definition, selectedId);
  const edges = attach ? [...definition.edges, edgeFor(attach.from, attach.output, step.id)] : definition.edges;
  return { definition: layoutAll({ ...definition, steps: [...definition.steps, step], edges }), step };
}

// A new step on the edge at `index`: from → step (the edge's output) → to (the step's first output).
export function insertStep(definition, type, index) {
  const edge = definition.edges[index];
  const step = newStep(type, definition);
  const first = outputs(step)[0];
  const replaced = [edgeFor(edge.from, outputOf(edge), step.id)];
  if (first) replaced.push(edgeFor(step.id, first.key, edge.to));
  const edges = [...definition.edges.slice(0, index), ...replaced, ...definition.edges.slice(index + 1)];
  return { definition: layoutAll({ ...definition, steps: [...definition.steps, step], edges }), step };
}

// Deleting a step removes its edges; a step with one way in and one way out is bridged, so
// deleting a delay in the middle of a chain keeps the chain.
export function deleteStep(definition, stepId) {
  const incoming = definition.edges.filter((edge) => edge.to === stepId);
  const outgoing = definition.edges.filter((edge) => edge.from === stepId);
  let edges = definition.edges.filter((edge) => edge.to !== stepId && edge.from !== stepId);
  if (incoming.length === 1 && outgoing.length === 1 && outgoing[0].to !== stepId) {
    edges = [...edges, edgeFor(incoming[0].from, outputOf(incoming[0]), outgoing[0].to)];
  }
  const { [stepId]: _removed, ...layout } = definition.layout;
  return { ...definition, steps: definition.steps.filter((step) => step.id !== stepId), edges, layout };
}

// A connection drawn from an output replaces that output's edge (each output has at most one).
export function connect(definition, from, output, to) {
  const edges = definition.edges.filter((edge) => !(edge.from === from && outputOf(edge) === output));
  return { ...definition, edges: [...edges, edgeFor(from, output, to)] };
}

export function removeEdges(definition, keys) {
  const drop = new Set(keys);
  return { ...definition, edges: definition.edges.filter((edge, index) => !drop.has(edgeKey(edge, index))) };
}

export const edgeKey = (edge, index) => `e${index}:${edge.from}:${outputOf(edge)}`;

// A step saved from its panel: a changed id or changed outputs carry the edges along, and
// edges of outputs that no longer exist (a removed split branch) are dropped.
export function replaceStep(definition, oldId, step) {
  const keys = new Set(outputs(step).map((output) => output.key));
  const edges = definition.edges
    .map((edge) => ({
      ...edge,
      from: edge.from === oldId ? step.id : edge.from,
      to: edge.to === oldId ? step.id : edge.to,
    }))
    .filter((edge) => edge.from !== step.id || keys.has(outputOf(edge)));
  const layout = { ...definition.layout };
  if (oldId !== step.id && layout[oldId]) {
    layout[step.id] = layout[oldId];
    delete layout[oldId];
  }
  return { ...definition, steps: definition.steps.map((item) => (item.id === oldId ? step : item)), edges, layout };
}

// dagre's top-to-bottom arrangement of every node, written into `layout`.
export function layoutAll(definition) {
  const graph = new dagre.graphlib.Graph();
  graph.setGraph({ rankdir: "TB", nodesep: 50, ranksep: 80 });
  graph.setDefaultEdgeLabel(() => ({}));
  for (const id of [TRIGGER, ...definition.steps.map((step) => step.id)]) {
    graph.setNode(id, { width: NODE_WIDTH, height: NODE_HEIGHT });
  }
  for (const edge of definition.edges) {
    if (graph.hasNode(edge.from) && graph.hasNode(edge.to)) graph.setEdge(edge.from, edge.to);
  }
  dagre.layout(graph);
  const layout = {};
  for (const id of graph.nodes()) {
    const node = graph.node(id);
    layout[id] = { x: Math.round(node.x - NODE_WIDTH / 2), y: Math.round(node.y - NODE_HEIGHT / 2) };
  }
  return { ...definition, layout };
}

// Validation problems ("steps[2].template_id: …", JSON paths into `definition`) by the node they
// concern; the ones no node owns stay in `general`. The paths index the definition that was
// checked, so they are mapped to ids right away, before the next edit moves the indices.
export function problemsByNode(problems, definition) {
  const byNode = {};
  const general = [];
  const add = (id, text) => {
    (byNode[id] = byNode[id] || []).push(text);
  };
  for (const problem of problems || []) {
    const step = /^steps\[(\d+)\]/.exec(problem);
    const edge = /^edges\[(\d+)\]/.exec(problem);
    if (step && definition.steps[Number(step[1])]) {
      add(definition.steps[Number(step[1])].id, problem);
    } else if (edge && definition.edges[Number(edge[1])]) {
      add(definition.edges[Number(edge[1])].from, problem);
    } else if (/^(trigger|frequency|exit_condition|goal)\b/.test(problem)) {
      add(TRIGGER, problem);
    } else {
      general.push(problem);
    }
  }
  return { byNode, general };
}

const UNITS = { seconds: "second", minutes: "minute", hours: "hour", days: "day", weeks: "week" };

export function durationText(duration) {
  if (!duration || typeof duration !== "object") return "";
  const unit = UNITS[duration.unit] || duration.unit;
  return `${duration.value} ${unit}${duration.value === 1 ? "" : "s"}`;
}

const plural = (count, one, many) => `${count} ${count === 1 ? one : many}`;

// One line under the node's title saying what the step does.
export function summary(step, templates) {
  switch (step.type) {
    case "email": {
      const template = templates.find((item) => item.id === step.template_id);
      if (template) return template.name;
      return step.template_id ? `template #${step.template_id}` : "No template chosen";
    }
    case "delay":
      if (step.until) return `until ${step.until.time || "?"}${step.until.days ? ` on ${step.until.days.join(", ")}` : ""}`;
      return `wait ${durationText(step.duration)}`;
    case "wait_until":
      return `${step.event ? `for ${step.event.event_name || "an event"}` : "until a condition holds"}, at most ${durationText(step.timeout)}`;
    case "branch":
      return "if the condition holds";
    case "split":
      return `${plural((step.branches || []).length, "branch", "branches")}, then else`;
    case "random_cohort":
      return `${plural((step.cohorts || []).length, "cohort", "cohorts")}`;
    case "update_attribute":
      return `${step.action || "set"} ${step.trait || "?"}`;
    case "webhook":
      return `${step.method || "POST"} ${step.url || "(no URL)"}`;
    case "exit":
      return "ends the run";
    default:
      return "";
  }
}
