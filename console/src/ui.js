// Small pieces every page uses: error boxes, polling, formatting.
import { html } from "htm/preact";
import { useEffect, useState } from "preact/hooks";

export function ErrorBox({ error }) {
  if (!error) return null;
  return html`<div class="error" role="alert">
    <strong>${error.status ? `Error ${error.status}` : "Error"}${error.param ? ` (${error.param})` : ""}:</strong>
    <pre>${error.message}</pre>
  </div>`;
}

/** Calls `load` now and every `seconds` while `active`; returns [value, error, reload].
 * Each run of the effect has its own `cancelled` flag: an answer to an earlier run (other
 * deps, or before a reload) is dropped, and its timer never restarts. */
export function usePoll(load, seconds, deps, active = true) {
  const [value, setValue] = useState(null);
  const [error, setError] = useState(null);
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let cancelled = false;
    let timer = null;
    async function run() {
      try {
        const result = await load();
        if (cancelled) return;
        setValue(result);
        setError(null);
      } catch (err) {
        if (cancelled) return;
        setError(err);
      }
      if (!cancelled && active && seconds) timer = setTimeout(run, seconds * 1000);
    }
    run();
    return () => {
      cancelled = true;
      clearTimeout(timer);
    };
  }, [...deps, active, seconds, tick]);
  return [value, error, () => setTick((t) => t + 1)];
}

export function when(seconds) {
  if (!seconds) return "";
  return new Date(seconds * 1000).toLocaleString();
}

export function duration(seconds) {
  if (seconds == null || !isFinite(seconds)) return "";
  seconds = Math.max(0, Math.round(seconds));
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  return h ? `${h} h ${m} min` : m ? `${m} min ${s} s` : `${s} s`;
}

export function num(value, digits = 3) {
  if (value == null || Number.isNaN(value)) return "–";
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value)) return String(value);
  return value.toFixed(digits);
}

export function Status({ status }) {
  return html`<span class=${`status status-${status}`}>${status}</span>`;
}

/** A <select> of the tenant's files, newest first. */
export function FileSelect({ id, files, value, onChange, optional }) {
  return html`<select id=${id} value=${value} onChange=${(e) => onChange(e.target.value)}>
    <option value="">${optional ? "(none)" : "Choose a file…"}</option>
    ${(files || []).map((f) => html`<option value=${f.id} selected=${f.id === value}>${f.filename} (${f.id})</option>`)}
  </select>`;
}

/** <option>s of the models a key may use (GET /v1/models), `value` selected once they load. */
export function ModelOptions({ models, value }) {
  return (models ? models.data : []).map((m) => html`<option value=${m.id} selected=${m.id === value}>${m.id}</option>`);
}

/** A path segment from user input or the URL, safe to put in an API path. */
export const seg = encodeURIComponent;

/** "Saved grader" picker (GET /v1/graders): choosing one hands its spec, as JSON text, to `onLoad`. */
export function SavedGraderSelect({ id, saved, onLoad }) {
  if (!saved || !saved.data.length) return null;
  return html`<label for=${id}>Saved grader</label>
    <select id=${id} onChange=${(e) => {
      const g = saved.data.find((s) => s.id === e.target.value);
      if (g) onLoad(JSON.stringify(g.grader, null, 2));
    }}>
      <option value="">Choose one to load…</option>
      ${saved.data.map((g) => html`<option value=${g.id}>${g.name}</option>`)}
    </select>`;
}
