// The workflow builder: a React Flow canvas over the workflow's draft definition.
//
// The definition (docs/workflows.md) is the state; nodes and edges are drawn from it, and every
// edit (add, insert on an edge, connect, delete, a panel's Save, a node moved) produces a new
// definition. Saving posts that definition as JSON to the platform (session + CSRF), which stores
// the draft and answers its validation problems; those are shown on the nodes they concern.
// Built into workflows/static/workflows/builder.js by scripts/vendor.py (esbuild), committed.
import "@xyflow/react/dist/style.css";

import {
  applyNodeChanges,
  Background,
  BaseEdge,
  Controls,
  EdgeLabelRenderer,
  getSmoothStepPath,
  Handle,
  MarkerType,
  Position,
  ReactFlow,
  ReactFlowProvider,
  useReactFlow,
} from "@xyflow/react";
import React, { createContext, useCallback, useContext, useEffect, useMemo, useRef, useState } from "react";
import { createRoot } from "react-dom/client";

import {
  addStep,
  connect,
  deleteStep,
  edgeKey,
  insertStep,
  layoutAll,
  normalised,
  outputs,
  outputsOf,
  problemsByNode,
  removeEdges,
  replaceStep,
  STEP_TYPES,
  summary,
  TRIGGER,
  TRIGGER_OUTPUTS,
  TYPE_LABELS,
} from "./graph.js";
import { StepPanel, TriggerPanel } from "./panels.jsx";

const Actions = createContext(null);

function StepNode({ id, data, selected }) {
  const outs = data.outputs;
  return (
    <div
      className={`wf-node wf-type-${data.type}${selected ? " selected" : ""}${data.problems.length ? " has-problems" : ""}`}
      data-testid="wf-node"
      data-step-id={id}
      data-step-type={data.type}
    >
      {id !== TRIGGER ? <Handle type="target" position={Position.Top} /> : null}
      <div className="wf-node-type">{data.typeLabel}</div>
      <div className="wf-node-name">{data.name}</div>
      <div className="wf-node-summary">{data.summary}</div>
      {data.problems.length ? (
        <ul className="wf-node-problems" role="alert" data-testid="node-problems">
          {data.problems.map((problem) => <li key={problem}>{problem}</li>)}
        </ul>
      ) : null}
      {outs.map((output, index) => {
        const left = `${((index + 1) / (outs.length + 1)) * 100}%`;
        return (
          <React.Fragment key={output.key}>
            <Handle type="source" position={Position.Bottom} id={output.key} style={{ left }} />
            {outs.length > 1 ? <span className="wf-handle-label" style={{ left }}>{output.label}</span> : null}
          </React.Fragment>
        );
      })}
    </div>
  );
}

function InsertableEdge(props) {
  const { id, sourceX, sourceY, targetX, targetY, sourcePosition, targetPosition, markerEnd, data } = props;
  const actions = useContext(Actions);
  const [path, labelX, labelY] = getSmoothStepPath({ sourceX, sourceY, targetX, targetY, sourcePosition, targetPosition });
  return (
    <>
      <BaseEdge id={id} path={path} markerEnd={markerEnd} />
      <EdgeLabelRenderer>
        <div
          className="wf-edge-label nodrag nopan"
          style={{ transform: `translate(-50%, -50%) translate(${labelX}px, ${labelY}px)` }}
          data-testid="wf-edge"
          data-edge={`${data.from}:${data.output}:${data.to}`}
        >
          {data.label ? <span className="wf-edge-output">{data.label}</span> : null}
          <button
            type="button"
            className="wf-edge-insert"
            aria-label={`Insert a step between ${data.from} and ${data.to}`}
            title="Insert a step here"
            onClick={() => actions.openInsert(data.index)}
          >+</button>
        </div>
      </EdgeLabelRenderer>
    </>
  );
}

const NODE_TYPES = { step: StepNode };
const EDGE_TYPES = { insertable: InsertableEdge };

function nodeData(definition, step, problems, config) {
  return {
    type: step.type,
    typeLabel: TYPE_LABELS[step.type] || step.type,
    name: step.name || TYPE_LABELS[step.type] || step.id,
    summary: summary(step, config.templates),
    outputs: outputs(step),
    problems: problems.byNode[step.id] || [],
  };
}

function buildNodes(definition, problems, selected, config, previous) {
  const before = new Map(previous.map((node) => [node.id, node]));
  const trigger = {
    id: TRIGGER,
    type: "step",
    deletable: false,
    position: definition.layout[TRIGGER] || { x: 0, y: 0 },
    data: {
      type: "trigger",
      typeLabel: "Trigger",
      name: config.triggerText,
      summary: config.frequencyText,
      outputs: TRIGGER_OUTPUTS,
      problems: problems.byNode[TRIGGER] || [],
    },
  };
  const steps = definition.steps.map((step) => ({
    id: step.id,
    type: "step",
    position: definition.layout[step.id] || { x: 0, y: 0 },
    data: nodeData(definition, step, problems, config),
  }));
  return [trigger, ...steps].map((node) => ({ ...before.get(node.id), ...node, selected: node.id === selected }));
}

function buildEdges(definition) {
  return definition.edges.map((edge, index) => {
    const output = edge.output || "next";
    const label = (outputsOf(definition, edge.from).find((item) => item.key === output) || {}).label || "";
    return {
      id: edgeKey(edge, index),
      source: edge.from,
      sourceHandle: output,
      target: edge.to,
      type: "insertable",
      markerEnd: { type: MarkerType.ArrowClosed },
      data: { index, label, from: edge.from, to: edge.to, output },
    };
  });
}

function initialDefinition(config) {
  const definition = normalised(config.definition);
  const ids = [TRIGGER, ...definition.steps.map((step) => step.id)];
  return ids.every((id) => definition.layout[id]) ? definition : layoutAll(definition);
}

function StepMenu({ menu, onChoose, onClose }) {
  const first = useRef(null);
  useEffect(() => {
    if (first.current) first.current.focus();
  }, [menu]);
  if (!menu) return null;
  return (
    <div className="wf-menu" role="menu" aria-label={menu.title} onKeyDown={(e) => { if (e.key === "Escape") onClose(); }}>
      <p className="muted">{menu.title}</p>
      {STEP_TYPES.map(([type, label], index) => (
        <button key={type} type="button" role="menuitem" ref={index === 0 ? first : null} onClick={() => onChoose(type)}>{label}</button>
      ))}
      <button type="button" className="wf-menu-cancel" onClick={onClose}>Cancel</button>
    </div>
  );
}

function Builder({ config }) {
  const flow = useReactFlow();
  const [definition, setDefinition] = useState(() => initialDefinition(config));
  const [savedText, setSavedText] = useState(() => JSON.stringify(normalised(config.definition)));
  const [problems, setProblems] = useState(() => problemsByNode(config.problems, normalised(config.definition)));
  const [selected, setSelected] = useState(null);
  const [panelDirty, setPanelDirty] = useState(false);
  const [menu, setMenu] = useState(null);
  const [status, setStatus] = useState("");
  const [unpublished, setUnpublished] = useState(config.hasUnpublishedChanges);
  const [nodes, setNodes] = useState([]);
  const publishForm = useRef(null);

  const dirty = panelDirty || JSON.stringify(definition) !== savedText;
  const dirtyRef = useRef(dirty);
  dirtyRef.current = dirty;

  useEffect(() => {
    setNodes((previous) => buildNodes(definition, problems, selected, config, previous));
  }, [definition, problems, selected, config]);
  const edges = useMemo(() => buildEdges(definition), [definition]);

  useEffect(() => {
    const warn = (event) => {
      if (!dirtyRef.current) return undefined;
      event.preventDefault();
      event.returnValue = "";
      return "";
    };
    window.addEventListener("beforeunload", warn);
    return () => window.removeEventListener("beforeunload", warn);
  }, []);

  const save = useCallback(async (next) => {
    setStatus("Saving…");
    let response;
    let answer = {};
    try {
      response = await fetch(config.saveUrl, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": config.csrfToken, Accept: "application/json" },
        body: JSON.stringify({ definition: next }),
      });
      answer = await response.json();
    } catch (err) {
      setStatus(`Not saved: ${err.message}`);
      return false;
    }
    if (!response.ok) {
      setStatus(`Not saved: ${answer.message || `HTTP ${response.status}`}`);
      return false;
    }
    setSavedText(JSON.stringify(next));
    setProblems(problemsByNode(answer.problems, next));
    setUnpublished(Boolean(answer.has_unpublished_changes));
    const count = answer.problems.length;
    setStatus(count ? `Saved, with ${count} problem${count === 1 ? "" : "s"} to fix before activating` : "Saved");
    return true;
  }, [config]);

  const change = (next) => {
    setDefinition(next);
    setStatus("");
  };

  const selectNode = (id) => {
    if (id === selected) return;
    if (panelDirty && !window.confirm("This step has unsaved changes. Discard them?")) return;
    setPanelDirty(false);
    setSelected(id);
  };

  const actions = useMemo(() => ({
    openInsert: (index) => setMenu({ mode: "insert", index, title: "Insert a step on this edge" }),
  }), []);

  const choose = (type) => {
    if (panelDirty && !window.confirm("The open step has unsaved changes. Discard them?")) return;
    const result = menu.mode === "insert" ? insertStep(definition, type, menu.index) : addStep(definition, type, selected);
    setMenu(null);
    change(result.definition);
    setPanelDirty(false);
    setSelected(result.step.id);
    window.requestAnimationFrame(() => flow.fitView({ padding: 0.2, maxZoom: 1, duration: 200 }));
  };

  const onNodesChange = (changes) => {
    // Removals go through onNodesDelete (which edits the definition), selection through `selected`.
    setNodes((current) => applyNodeChanges(changes.filter((c) => c.type !== "remove" && c.type !== "select"), current));
  };

  const onNodeDragStop = (_event, _node, dragged) => {
    const layout = { ...definition.layout };
    for (const node of dragged) layout[node.id] = { x: Math.round(node.position.x), y: Math.round(node.position.y) };
    change({ ...definition, layout });
  };

  const onNodesDelete = (deleted) => {
    let next = definition;
    for (const node of deleted) if (node.id !== TRIGGER) next = deleteStep(next, node.id);
    if (deleted.some((node) => node.id === selected)) {
      setSelected(null);
      setPanelDirty(false);
    }
    change(next);
  };

  const onEdgesDelete = (deleted) => change(removeEdges(definition, deleted.map((edge) => edge.id)));

  const onConnect = ({ source, sourceHandle, target }) => {
    if (target === TRIGGER || source === target) return;
    change(connect(definition, source, sourceHandle || "next", target));
  };

  const saveStep = async (oldId, step) => {
    const next = replaceStep(definition, oldId, step);
    change(next);
    setPanelDirty(false);
    await save(next);
  };

  const saveTrigger = async (patch) => {
    const next = { ...definition };
    for (const key of ["exit_condition", "goal"]) {
      if (patch[key] === null) delete next[key];
      else next[key] = patch[key];
    }
    change(next);
    setPanelDirty(false);
    await save(next);
  };

  const removeSelected = () => {
    if (!window.confirm("Delete this step? Its edges are removed too.")) return;
    const next = deleteStep(definition, selected);
    setSelected(null);
    setPanelDirty(false);
    change(next);
  };

  const publish = async () => {
    if (dirty && !(await save(definition))) return;
    dirtyRef.current = false;
    publishForm.current.submit();
  };

  const back = (event) => {
    if (dirty && !window.confirm("You have unsaved changes. Leave the builder without saving them?")) {
      event.preventDefault();
      return;
    }
    dirtyRef.current = false;
  };

  const selectedStep = definition.steps.find((step) => step.id === selected);
  const versionText = config.activeVersion
    ? `Version ${config.activeVersion} runs${config.runsOnOlderVersions ? ` · ${config.runsOnOlderVersions} run${config.runsOnOlderVersions === 1 ? "" : "s"} on older versions` : ""}`
    : "Draft: not activated yet";

  return (
    <Actions.Provider value={actions}>
      <div className="wf-builder">
        <div className="wf-bar">
          <a href={config.detailUrl} onClick={back}>← Back to workflow</a>
          <h1>{config.name}</h1>
          <span className="muted" data-testid="version-text">
            {versionText}{config.activeVersion && unpublished ? " · you are editing a draft" : ""}
          </span>
          <span className="spacer" />
          <span id="builder-status" role="status" aria-live="polite">{status || (dirty ? "Unsaved changes" : "")}</span>
          <div className="wf-add">
            <button type="button" className="button secondary" aria-haspopup="menu" aria-expanded={Boolean(menu)}
              onClick={() => setMenu(menu ? null : { mode: "add", title: "Add a step" })}>Add Step</button>
            <StepMenu menu={menu} onChoose={choose} onClose={() => setMenu(null)} />
          </div>
          <button type="button" className="button secondary" onClick={() => change(layoutAll(definition))}>Arrange</button>
          <button type="button" className="button" data-testid="save-workflow" onClick={() => save(definition)}>Save workflow</button>
          {config.activeVersion && (unpublished || dirty) ? (
            <button type="button" className="button" onClick={publish}>Publish changes</button>
          ) : null}
          <form ref={publishForm} method="post" action={config.activateUrl} hidden>
            <input type="hidden" name="csrfmiddlewaretoken" value={config.csrfToken} />
          </form>
        </div>
        {problems.general.length ? (
          <ul className="errorlist wf-general-problems" role="alert" data-testid="general-problems">
            {problems.general.map((problem) => <li key={problem}>{problem}</li>)}
          </ul>
        ) : null}
        <div className="wf-main">
          <div className="wf-canvas" data-testid="canvas">
            <ReactFlow
              nodes={nodes}
              edges={edges}
              nodeTypes={NODE_TYPES}
              edgeTypes={EDGE_TYPES}
              onNodesChange={onNodesChange}
              onNodeDragStop={onNodeDragStop}
              onNodesDelete={onNodesDelete}
              onEdgesDelete={onEdgesDelete}
              onConnect={onConnect}
              onNodeClick={(_event, node) => selectNode(node.id)}
              fitView
              fitViewOptions={{ padding: 0.2, maxZoom: 1 }}
              minZoom={0.2}
              maxZoom={2}
            >
              <Background gap={20} />
              <Controls showInteractive={false} />
            </ReactFlow>
          </div>
          {selected === TRIGGER ? (
            <TriggerPanel key={TRIGGER} definition={definition} problems={problems.byNode[TRIGGER] || []} config={config}
              onSave={saveTrigger} onClose={() => selectNode(null)} onDirty={setPanelDirty} />
          ) : null}
          {selectedStep ? (
            <StepPanel key={selectedStep.id} step={selectedStep} problems={problems.byNode[selectedStep.id] || []} config={config}
              onSave={(step) => saveStep(selectedStep.id, step)} onDelete={removeSelected} onClose={() => selectNode(null)}
              onDirty={setPanelDirty} />
          ) : null}
        </div>
      </div>
    </Actions.Provider>
  );
}

const mountPoint = document.getElementById("workflow-builder");
if (mountPoint) {
  const config = JSON.parse(document.getElementById("workflow-builder-config").textContent);
  config.csrfToken = document.querySelector("[name=csrfmiddlewaretoken]").value;
  createRoot(mountPoint).render(
    <ReactFlowProvider>
      <Builder config={config} />
    </ReactFlowProvider>,
  );
  document.body.dataset.builderReady = "";
}
