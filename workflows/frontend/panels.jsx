// The configuration panel of a step (and of the trigger), each with its own Save.
//
// A panel edits a copy of its step; Save hands the copy to the builder, which puts it in the
// definition and saves the workflow's draft. Fields map one to one onto docs/workflows.md.
import React, { useState } from "react";

import { ConditionField } from "./conditions.jsx";
import { TYPE_LABELS } from "./graph.js";

const UNITS = ["seconds", "minutes", "hours", "days", "weeks"];
const DAYS = [["mon", "Mon"], ["tue", "Tue"], ["wed", "Wed"], ["thu", "Thu"], ["fri", "Fri"], ["sat", "Sat"], ["sun", "Sun"]];
const METHODS = ["POST", "PUT", "PATCH", "DELETE", "GET"];
const DEFAULT_CONDITION = () => ({ type: "trait", name: "", op: "equals", value: "" });

const clone = (value) => JSON.parse(JSON.stringify(value));

let fieldIds = 0;
function useFieldId() {
  const [id] = useState(() => {
    fieldIds += 1;
    return `wf-field-${fieldIds}`;
  });
  return id;
}

function Field({ label, help, children }) {
  const id = useFieldId();
  return (
    <div className="field">
      <label htmlFor={id}>{label}</label>
      {children(id)}
      {help ? <div className="help">{help}</div> : null}
    </div>
  );
}

function TextField({ label, value, onChange, help, ...rest }) {
  return (
    <Field label={label} help={help}>
      {(id) => <input id={id} type="text" value={value ?? ""} onChange={(e) => onChange(e.target.value)} {...rest} />}
    </Field>
  );
}

function SelectField({ label, value, onChange, options, help }) {
  return (
    <Field label={label} help={help}>
      {(id) => (
        <select id={id} value={value ?? ""} onChange={(e) => onChange(e.target.value)}>
          {options.map(([key, text]) => (
            <option key={key} value={key}>{text}</option>
          ))}
        </select>
      )}
    </Field>
  );
}

function integerOr(text, fallback) {
  return /^-?[0-9]+$/.test(String(text).trim()) ? Number(text) : fallback;
}

function DurationFields({ label, value, onChange }) {
  const duration = value || { value: 1, unit: "days" };
  return (
    <fieldset className="wf-inline">
      <legend>{label}</legend>
      <Field label="Amount">
        {(id) => (
          <input
            id={id}
            type="number"
            min="1"
            value={duration.value ?? ""}
            onChange={(e) => onChange({ ...duration, value: integerOr(e.target.value, e.target.value) })}
          />
        )}
      </Field>
      <SelectField label="Unit" value={duration.unit} options={UNITS.map((u) => [u, u])} onChange={(unit) => onChange({ ...duration, unit })} />
    </fieldset>
  );
}

// Rows of [name, value] pairs edited as a list (webhook headers, response traits, event matches).
function PairsField({ legend, names, pairs, onChange, addLabel }) {
  return (
    <fieldset className="wf-pairs">
      <legend>{legend}</legend>
      {pairs.map((pair, index) => (
        <div className="wf-pair" key={index}>
          <input type="text" aria-label={`${names[0]} ${index + 1}`} placeholder={names[0]} value={pair[0]}
            onChange={(e) => onChange(pairs.map((p, i) => (i === index ? [e.target.value, p[1]] : p)))} />
          <input type="text" aria-label={`${names[1]} ${index + 1}`} placeholder={names[1]} value={pair[1]}
            onChange={(e) => onChange(pairs.map((p, i) => (i === index ? [p[0], e.target.value] : p)))} />
          <button type="button" className="button danger small" aria-label={`Remove ${names[0]} ${index + 1}`}
            onClick={() => onChange(pairs.filter((_, i) => i !== index))}>×</button>
        </div>
      ))}
      <button type="button" className="button secondary small" onClick={() => onChange([...pairs, ["", ""]])}>{addLabel}</button>
    </fieldset>
  );
}

const toPairs = (object) => Object.entries(object || {});
const fromPairs = (pairs) => Object.fromEntries(pairs);

function EmailFields({ step, set, config }) {
  const options = [["", "Choose a published template"], ...config.templates.map((t) => [String(t.id), t.name])];
  if (step.template_id && !config.templates.some((t) => t.id === step.template_id)) {
    options.push([String(step.template_id), `#${step.template_id} (not a published template of this project)`]);
  }
  const chosen = config.templates.find((t) => t.id === step.template_id);
  return (
    <>
      <SelectField label="Template" value={step.template_id ? String(step.template_id) : ""} options={options}
        onChange={(value) => set({ template_id: value ? Number(value) : null })}
        help={config.templates.length ? "" : "No published template yet: publish one under Email Templates first."} />
      {chosen ? <p><a href={chosen.previewUrl} target="_blank" rel="noopener">Preview {chosen.name}</a></p> : null}
    </>
  );
}

function DelayFields({ step, set }) {
  const mode = step.until ? "until" : "duration";
  const until = step.until || {};
  const days = until.days || [];
  return (
    <>
      <SelectField label="Wait" value={mode} options={[["duration", "For a duration"], ["until", "Until a time of day"]]}
        onChange={(value) => (value === "until"
          ? set({ duration: undefined, until: { time: "09:00" } })
          : set({ until: undefined, duration: { value: 1, unit: "days" } }))} />
      {mode === "duration" ? (
        <DurationFields label="Duration" value={step.duration} onChange={(duration) => set({ duration })} />
      ) : (
        <>
          <Field label="Time of day" help="In the customer's timezone trait, else the project's time zone.">
            {(id) => <input id={id} type="time" value={until.time || ""} onChange={(e) => set({ until: { ...until, time: e.target.value } })} />}
          </Field>
          <fieldset className="wf-days">
            <legend>Days (none: every day)</legend>
            {DAYS.map(([key, text]) => (
              <label key={key}>
                <input type="checkbox" checked={days.includes(key)} onChange={(e) => {
                  const next = e.target.checked ? DAYS.map(([k]) => k).filter((k) => k === key || days.includes(k)) : days.filter((k) => k !== key);
                  const { days: _old, ...rest } = until;
                  set({ until: next.length ? { ...rest, days: next } : rest });
                }} /> {text}
              </label>
            ))}
          </fieldset>
        </>
      )}
    </>
  );
}

function WaitUntilFields({ step, set, config, setInvalid }) {
  const mode = step.event ? "event" : "condition";
  const event = step.event || { event_name: "", match: [] };
  return (
    <>
      <SelectField label="Wait for" value={mode} options={[["condition", "A condition on the customer"], ["event", "A later event"]]}
        onChange={(value) => (value === "event"
          ? set({ condition: undefined, event: { event_name: "", match: [] } })
          : set({ event: undefined, condition: DEFAULT_CONDITION() }))} />
      {mode === "condition" ? (
        <ConditionField key="condition" label="Condition" value={step.condition} config={config.conditions}
          onChange={(condition, error) => { setInvalid("condition", error); if (condition !== undefined) set({ condition }); }} />
      ) : (
        <>
          <TextField label="Event name" value={event.event_name} placeholder="order_completed"
            onChange={(event_name) => set({ event: { ...event, event_name } })} />
          <PairsField legend="With the same property as the trigger event" names={["Event property", "Trigger property"]}
            addLabel="Add match" pairs={(event.match || []).map((m) => [m.property, m.trigger_property])}
            onChange={(pairs) => set({ event: { ...event, match: pairs.map(([property, trigger_property]) => ({ property, trigger_property })) } })} />
        </>
      )}
      <DurationFields label="Timeout" value={step.timeout} onChange={(timeout) => set({ timeout })} />
    </>
  );
}

function SplitFields({ step, set, config, setInvalid }) {
  const branches = step.branches || [];
  const update = (index, patch) => set({ branches: branches.map((b, i) => (i === index ? { ...b, ...patch } : b)) });
  return (
    <>
      {branches.map((branch, index) => (
        <fieldset className="wf-branch" key={branch.uid || index}>
          <legend>Branch {index + 1}</legend>
          <TextField label="Key" value={branch.key} onChange={(key) => update(index, { key })} />
          <TextField label="Branch name" value={branch.name} onChange={(name) => update(index, { name })} />
          <ConditionField label="Condition" value={branch.condition} config={config.conditions}
            onChange={(condition, error) => { setInvalid(`branch${index}`, error); if (condition !== undefined) update(index, { condition }); }} />
          <button type="button" className="button danger small" onClick={() => set({ branches: branches.filter((_, i) => i !== index) })}>Remove branch</button>
        </fieldset>
      ))}
      <button type="button" className="button secondary small" onClick={() => {
        const taken = new Set(branches.map((b) => b.key));
        let n = branches.length + 1;
        while (taken.has(`branch_${n}`)) n += 1;
        set({ branches: [...branches, { key: `branch_${n}`, name: `Branch ${n}`, condition: DEFAULT_CONDITION() }] });
      }}>Add branch</button>
      <p className="muted">Checked in order; a customer matching none takes Else.</p>
    </>
  );
}

function CohortFields({ step, set }) {
  const cohorts = step.cohorts || [];
  const total = cohorts.reduce((sum, c) => sum + (Number(c.weight) || 0), 0);
  const update = (index, patch) => set({ cohorts: cohorts.map((c, i) => (i === index ? { ...c, ...patch } : c)) });
  return (
    <>
      {cohorts.map((cohort, index) => (
        <fieldset className="wf-inline" key={index}>
          <legend>Cohort {index + 1}</legend>
          <TextField label="Key" value={cohort.key} onChange={(key) => update(index, { key })} />
          <TextField label="Cohort name" value={cohort.name} onChange={(name) => update(index, { name })} />
          <Field label="Weight (%)">
            {(id) => <input id={id} type="number" min="0" max="100" value={cohort.weight ?? ""}
              onChange={(e) => update(index, { weight: integerOr(e.target.value, e.target.value) })} />}
          </Field>
          <button type="button" className="button danger small" onClick={() => set({ cohorts: cohorts.filter((_, i) => i !== index) })}>Remove</button>
        </fieldset>
      ))}
      <button type="button" className="button secondary small" onClick={() => {
        const taken = new Set(cohorts.map((c) => c.key));
        let n = cohorts.length;
        while (taken.has(String.fromCharCode(97 + n))) n += 1;
        const key = String.fromCharCode(97 + n);
        set({ cohorts: [...cohorts, { key, name: key.toUpperCase(), weight: 0 }] });
      }}>Add cohort</button>
      <p className={total === 100 ? "muted" : "errorlist"}>Weights add up to {total} (they must make 100).</p>
    </>
  );
}

function AttributeFields({ step, set, setInvalid }) {
  const [text, setText] = useState(step.value === undefined ? "" : typeof step.value === "string" ? step.value : JSON.stringify(step.value));
  return (
    <>
      <SelectField label="Action" value={step.action || "set"} options={[["set", "Set"], ["unset", "Unset"], ["increment", "Increment"]]}
        onChange={(action) => set(action === "unset" ? { action, value: undefined } : { action, value: action === "increment" ? 1 : "" })} />
      <TextField label="Trait" value={step.trait} placeholder="plan or address.city" onChange={(trait) => set({ trait })} />
      {step.action !== "unset" ? (
        <Field label="Value" help={step.action === "increment" ? "A number to add." : "Text, or JSON (a number, true, a list…)."}>
          {(id) => <input id={id} type="text" value={text} onChange={(e) => {
            setText(e.target.value);
            let value = e.target.value;
            try {
              value = JSON.parse(e.target.value);
            } catch {
              // Plain text is a string value.
            }
            if (step.action === "increment" && typeof value !== "number") setInvalid("value", "Value: not a number");
            else setInvalid("value", "");
            set({ value });
          }} />}
        </Field>
      ) : null}
    </>
  );
}

function WebhookFields({ step, set, config }) {
  const [test, setTest] = useState(null);
  const sendTest = async () => {
    setTest({ pending: true });
    try {
      const response = await fetch(config.webhookTestUrl, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": config.csrfToken, Accept: "application/json" },
        body: JSON.stringify({ step }),
      });
      const answer = await response.json();
      setTest(response.ok ? answer : { error: answer.message || `HTTP ${response.status}` });
    } catch (err) {
      setTest({ error: `The test could not be sent (${err.message})` });
    }
  };
  return (
    <>
      <SelectField label="Method" value={step.method || "POST"} options={METHODS.map((m) => [m, m])} onChange={(method) => set({ method })} />
      <TextField label="URL" value={step.url} placeholder="https://example.com/hooks/purchase" onChange={(url) => set({ url })}
        help="Liquid allowed, for example {{ customer.id }}." />
      <PairsField legend="Headers" names={["Header", "Value"]} addLabel="Add header" pairs={toPairs(step.headers)}
        onChange={(pairs) => set({ headers: fromPairs(pairs) })} />
      <Field label="Body" help="JSON with Liquid over customer, event (the trigger event) and data.">
        {(id) => <textarea id={id} rows="6" className="mono" spellCheck="false" value={step.body || ""} onChange={(e) => set({ body: e.target.value })} />}
      </Field>
      <PairsField legend="Response fields into traits" names={["Trait", "JSON path"]} addLabel="Add trait mapping"
        pairs={toPairs(step.response_traits)}
        onChange={(pairs) => set({ response_traits: pairs.length ? fromPairs(pairs) : undefined })} />
      <div className="wf-test">
        <button type="button" className="button secondary" onClick={sendTest} disabled={test && test.pending}>Send test</button>
        {test && !test.pending ? (
          <div className="wf-test-result" role="status" data-testid="webhook-test-result">
            {test.status ? <p><strong>HTTP {test.status}</strong>{test.latency_ms !== undefined ? ` in ${test.latency_ms} ms` : ""}</p> : null}
            {test.error ? <p className="errorlist">{test.error}</p> : null}
            {test.body ? <pre>{test.body}</pre> : null}
          </div>
        ) : null}
        {test && test.pending ? <span role="status">Sending…</span> : null}
      </div>
    </>
  );
}

const FIELDS = {
  email: EmailFields,
  delay: DelayFields,
  wait_until: WaitUntilFields,
  branch: ({ step, set, config, setInvalid }) => (
    <ConditionField label="Condition" value={step.condition} config={config.conditions}
      onChange={(condition, error) => { setInvalid("condition", error); if (condition !== undefined) set({ condition }); }} />
  ),
  split: SplitFields,
  random_cohort: CohortFields,
  update_attribute: AttributeFields,
  webhook: WebhookFields,
  exit: () => <p className="muted">The run ends here.</p>,
};

// Keys set to undefined are dropped, so the saved step carries only the fields of its mode.
function withoutUndefined(object) {
  return Object.fromEntries(Object.entries(object).filter(([, value]) => value !== undefined));
}

function usePanelState(initial, onDirty) {
  const [draft, setDraft] = useState(() => clone(initial));
  const [invalid, setInvalidState] = useState({});
  const set = (patch) => {
    setDraft((current) => withoutUndefined({ ...current, ...patch }));
    onDirty(true);
  };
  const setInvalid = (key, error) => setInvalidState((current) => ({ ...current, [key]: error }));
  const errors = Object.values(invalid).filter(Boolean);
  return { draft, set, setInvalid, errors };
}

function PanelFrame({ title, subtitle, problems, errors, onSave, onClose, children, extraActions }) {
  return (
    <aside className="wf-panel" aria-label="Step configuration" data-testid="step-panel">
      <div className="wf-panel-head">
        <h2>{title}</h2>
        <button type="button" className="button secondary small" aria-label="Close panel" onClick={onClose}>×</button>
      </div>
      {subtitle ? <p className="muted mono">{subtitle}</p> : null}
      {problems.length ? (
        <ul className="errorlist wf-panel-problems" role="alert">{problems.map((p) => <li key={p}>{p}</li>)}</ul>
      ) : null}
      <form noValidate onSubmit={(e) => { e.preventDefault(); if (!errors.length) onSave(); }}>
        {children}
        {errors.length ? <ul className="errorlist" role="alert">{errors.map((e) => <li key={e}>{e}</li>)}</ul> : null}
        <div className="form-actions">
          <button type="submit" className="button" disabled={errors.length > 0}>Save</button>
          {extraActions}
        </div>
      </form>
    </aside>
  );
}

export function StepPanel({ step, problems, config, onSave, onDelete, onClose, onDirty }) {
  const { draft, set, setInvalid, errors } = usePanelState(step, onDirty);
  const Fields = FIELDS[step.type] || (() => <p className="muted">This step type has no settings here.</p>);
  return (
    <PanelFrame title={TYPE_LABELS[step.type] || step.type} subtitle={`Step ${step.id}`} problems={problems} errors={errors}
      onClose={onClose} onSave={() => onSave(draft)}
      extraActions={<button type="button" className="button danger" onClick={onDelete}>Delete step</button>}>
      <TextField label="Step name" value={draft.name} placeholder={TYPE_LABELS[step.type]} onChange={(name) => set({ name })} />
      <Fields step={draft} set={set} config={config} setInvalid={setInvalid} />
    </PanelFrame>
  );
}

// The trigger node's panel: the trigger in words (set on the New Workflow form), and the
// workflow-wide exit condition and goal, which are conditions like the steps'.
export function TriggerPanel({ definition, problems, config, onSave, onClose, onDirty }) {
  const initial = { exit_condition: definition.exit_condition ?? null, goal: definition.goal ?? null };
  const { draft, set, setInvalid, errors } = usePanelState(initial, onDirty);
  const goal = draft.goal;
  return (
    <PanelFrame title="Trigger" problems={problems} errors={errors} onClose={onClose} onSave={() => onSave(draft)}>
      <p data-testid="trigger-text">{config.triggerText}</p>
      <p className="muted">{config.frequencyText}</p>
      <label className="wf-check">
        <input type="checkbox" checked={draft.exit_condition !== null}
          onChange={(e) => set({ exit_condition: e.target.checked ? DEFAULT_CONDITION() : null })} /> Exit condition
      </label>
      {draft.exit_condition !== null ? (
        <ConditionField label="Exit condition" value={draft.exit_condition} config={config.conditions}
          onChange={(condition, error) => { setInvalid("exit", error); if (condition !== undefined) set({ exit_condition: condition }); }} />
      ) : null}
      <label className="wf-check">
        <input type="checkbox" checked={goal !== null}
          onChange={(e) => set({ goal: e.target.checked ? { condition: DEFAULT_CONDITION(), within_days: 7, exit_on_conversion: true } : null })} /> Goal
      </label>
      {goal !== null ? (
        <>
          <ConditionField label="Goal condition" value={goal.condition} config={config.conditions}
            onChange={(condition, error) => { setInvalid("goal", error); if (condition !== undefined) set({ goal: { ...goal, condition } }); }} />
          <Field label="Within days">
            {(id) => <input id={id} type="number" min="1" value={goal.within_days ?? ""}
              onChange={(e) => set({ goal: { ...goal, within_days: integerOr(e.target.value, e.target.value) } })} />}
          </Field>
          <label className="wf-check">
            <input type="checkbox" checked={Boolean(goal.exit_on_conversion)}
              onChange={(e) => set({ goal: { ...goal, exit_on_conversion: e.target.checked } })} /> End the run on conversion
          </label>
        </>
      ) : null}
    </PanelFrame>
  );
}
