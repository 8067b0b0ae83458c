// Small pieces every page uses: error boxes, polling, formatting.
import { html } from "htm/preact";
import { useEffect, useRef, useState } from "preact/hooks";

export function ErrorBox({ error }) {
  if (!error) return null;
  return html`<div class="error" role="alert">
    <strong>${error.status ? `Error ${error.status}` : "Error"}${error.param ? ` (${error.param})` : ""}:</strong>
    <pre>${error.message}</pre>
  </div>`;
}

/** Calls `load` now and every `seconds` while `active`; returns [value, error, reload]. */
export function usePoll(load, seconds, deps, active = true) {
  const [value, setValue] = useState(null);
  const [error, setError] = useState(null);
  const [tick, setTick] = useState(0);
  const alive = useRef(true);
  useEffect(() => {
    alive.current = true;
    let timer = null;
    async function run() {
      try {
        const result = await load();
        if (!alive.current) return;
        setValue(result);
        setError(null);
      } catch (err) {
        if (alive.current) setError(err);
      }
      if (alive.current && active && seconds) timer = setTimeout(run, seconds * 1000);
    }
    run();
    return () => {
      alive.current = false;
      clearTimeout(timer);
    };
  }, [...deps, active, tick]);
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
    ${(files || []).map((f) => html`<option value=${f.id}>${f.filename} (${f.id})</option>`)}
  </select>`;
}
