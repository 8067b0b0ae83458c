import { html } from "htm/preact";
import { useEffect, useRef, useState } from "preact/hooks";
import { get, listAll, post } from "../api.js";
import { ErrorBox, FileSelect, SavedGraderSelect, ModelOptions, usePoll } from "../ui.js";

const METHODS = [
  ["reinforcement", "Reinforcement (grader rewards)"],
  ["reinforcement_sft", "Reinforcement with SFT warm-up (ReFT)"],
  ["supervised", "Supervised (reference answers)"],
];
const WARMUP_FIELDS = ["sft_warmup_epochs", "sft_answer_field"];

/** The API's message, split by field: "method.reinforcement.hyperparameters.group_size:
 * Input should be ...; ..." -> {group_size: that part, word for word}; the rest under "_". */
export function fieldErrors(message) {
  const out = {};
  for (const part of message.split("; ")) {
    const match = part.match(/^method\.\w+\.hyperparameters\.(\w+): /);
    if (match) out[match[1]] = part;
    else out._ = out._ ? `${out._}; ${part}` : part;
  }
  return out;
}

function HyperField({ field, value, error, onChange }) {
  const id = `hp-${field.name}`;
  const placeholder = field.auto ? "auto" : field.default === null || field.default === undefined ? "" : String(field.default);
  let input;
  if (field.choices.length)
    input = html`<select id=${id} value=${value ?? ""} onChange=${(e) => onChange(e.target.value || undefined)} aria-invalid=${error ? "true" : "false"} aria-describedby=${`${id}-help ${id}-error`}>
      <option value="">${placeholder ? `default (${placeholder})` : "default"}</option>
      ${field.choices.map((c) => html`<option value=${c}>${c}</option>`)}
    </select>`;
  else if (field.type === "boolean")
    input = html`<select id=${id} value=${value === undefined ? "" : String(value)} onChange=${(e) => onChange(e.target.value === "" ? undefined : e.target.value === "true")} aria-invalid=${error ? "true" : "false"} aria-describedby=${`${id}-help ${id}-error`}>
      <option value="">${field.auto ? "auto" : `default (${field.default})`}</option><option value="true">true</option><option value="false">false</option>
    </select>`;
  else if (field.type === "array")
    input = html`<input id=${id} placeholder="names, comma-separated" value=${(value || []).join(", ")}
      aria-invalid=${error ? "true" : "false"} aria-describedby=${`${id}-help ${id}-error`}
      onChange=${(e) => {
        const items = e.target.value.split(",").map((item) => item.trim()).filter(Boolean);
        onChange(items.length ? items : undefined);
      }} />`;
  else
    input = html`<input id=${id} inputmode=${field.type === "string" ? "text" : "decimal"} placeholder=${placeholder} value=${value ?? ""}
      aria-invalid=${error ? "true" : "false"} aria-describedby=${`${id}-help ${id}-error`}
      onInput=${(e) => {
        const raw = e.target.value.trim();
        if (raw === "") onChange(undefined);
        else if (field.type === "string" || raw === "auto") onChange(raw);
        // Not a finite number: sent as typed, so the API names the field (JSON has no Infinity).
        else onChange(Number.isFinite(Number(raw)) ? Number(raw) : raw);
      }} />`;
  const bounds = [
    field.minimum !== undefined && `≥ ${field.minimum}`,
    field.exclusive_minimum !== undefined && `> ${field.exclusive_minimum}`,
    field.maximum !== undefined && `≤ ${field.maximum}`,
  ].filter(Boolean);
  return html`<div class="hp">
    <label for=${id}>${field.name}</label>
    ${input}
    <small id=${`${id}-help`}>${field.description}${bounds.length ? ` (${bounds.join(", ")})` : ""}</small>
    <span id=${`${id}-error`} class="error-text" role=${error ? "alert" : undefined}>${error || ""}</span>
  </div>`;
}

export function NewJobPage({ params }) {
  const [models] = usePoll(() => get("/models"), 0, []);
  const [files] = usePoll(() => listAll("/files"), 0, []);
  const [saved] = usePoll(() => get("/graders?limit=100"), 0, []);
  const [catalogue, catalogueError] = usePoll(() => get("/fine_tuning/hyperparameters"), 0, []);
  const [model, setModel] = useState(params.get("model") || "");
  const [training, setTraining] = useState(params.get("training_file") || "");
  const [validation, setValidation] = useState(params.get("validation_file") || "");
  const [method, setMethod] = useState("reinforcement");
  const [graderText, setGraderText] = useState(
    JSON.stringify({ type: "string_check", name: "exact", input: "{{sample.output_text}}", reference: "{{item.answer}}", operation: "eq" }, null, 2),
  );
  const [answerField, setAnswerField] = useState("answer");
  const [suffix, setSuffix] = useState("");
  const [hyper, setHyper] = useState({});
  const [errors, setErrors] = useState({});
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const timer = useRef(null);
  const latest = useRef(0);

  useEffect(() => {
    if (!model && models && models.data.length) setModel(models.data[0].id);
  }, [models]);

  function shownFields() {
    const fields = (catalogue && catalogue[method === "supervised" ? "supervised" : "reinforcement"]) || [];
    return fields.filter((f) => method === "reinforcement_sft" || !WARMUP_FIELDS.includes(f.name));
  }

  function grader() {
    try {
      return JSON.parse(graderText);
    } catch {
      return null;
    }
  }

  function body() {
    // Only the fields this method shows: a value typed under another method stays out.
    const names = new Set(shownFields().map((f) => f.name));
    const values = Object.fromEntries(Object.entries(hyper).filter(([k, v]) => v !== undefined && names.has(k)));
    if (method === "supervised")
      return { type: "supervised", supervised: { hyperparameters: values, answer_field: answerField } };
    if (method === "reinforcement") for (const name of WARMUP_FIELDS) delete values[name];
    return { type: "reinforcement", reinforcement: { grader: grader() || {}, hyperparameters: values } };
  }

  // Check as the API will, a moment after each change: same messages, next to the field.
  useEffect(() => {
    clearTimeout(timer.current);
    timer.current = setTimeout(async () => {
      const asked = ++latest.current; // answers may come back out of order: keep the newest
      try {
        await post("/fine_tuning/hyperparameters/validate", { method: body() });
        if (asked === latest.current) setErrors({});
      } catch (err) {
        if (asked === latest.current) setErrors(err.status === 400 ? fieldErrors(err.message) : {});
      }
    }, 250);
    return () => clearTimeout(timer.current);
  }, [hyper, method, answerField, graderText, catalogue]);

  async function submit(event) {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const job = await post("/fine_tuning/jobs", {
        model,
        training_file: training,
        validation_file: validation || undefined,
        suffix: suffix || undefined,
        method: body(),
      });
      location.hash = `#/jobs/${job.id}`;
    } catch (err) {
      setError(err);
      if (err.status === 400) setErrors(fieldErrors(err.message));
    } finally {
      setBusy(false);
    }
  }

  const kind = method === "supervised" ? "supervised" : "reinforcement";
  const shown = shownFields();
  const field = (f) =>
    html`<${HyperField} key=${f.name} field=${f} value=${hyper[f.name]} error=${errors[f.name]} onChange=${(v) => setHyper({ ...hyper, [f.name]: v })} />`;
  const warmup = shown.filter((f) => WARMUP_FIELDS.includes(f.name));
  return html`<div>
    <h1 tabindex="-1">New fine-tuning job</h1>
    <form onSubmit=${submit} class="new-job">
      <div class="form-grid">
        <label for="job-model">Base model</label>
        <select id="job-model" value=${model} onChange=${(e) => setModel(e.target.value)} required>
          <${ModelOptions} models=${models} value=${model} />
        </select>
        <label for="job-training">Training file</label>
        <${FileSelect} id="job-training" files=${files} value=${training} onChange=${setTraining} />
        <label for="job-validation">Validation file</label>
        <${FileSelect} id="job-validation" files=${files} value=${validation} onChange=${setValidation} optional=${true} />
        <label for="job-method">Method</label>
        <select id="job-method" value=${method} onChange=${(e) => setMethod(e.target.value)}>
          ${METHODS.map(([value, label]) => html`<option value=${value}>${label}</option>`)}
        </select>
        <label for="job-suffix">Suffix</label>
        <input id="job-suffix" value=${suffix} maxlength="64" pattern="[A-Za-z0-9_\\-]*" onInput=${(e) => setSuffix(e.target.value)} />
      </div>
      ${kind === "reinforcement" &&
      html`<fieldset>
        <legend>Grader</legend>
        <${SavedGraderSelect} id="job-saved-grader" saved=${saved} onLoad=${setGraderText} />
        <label for="job-grader">Grader spec (JSON; build and try one on the Graders page)</label>
        <textarea id="job-grader" class="code" rows="7" spellcheck="false" value=${graderText} onInput=${(e) => setGraderText(e.target.value)}
          aria-invalid=${grader() ? "false" : "true"}></textarea>
        ${!grader() && html`<p class="error-text">The grader spec is not valid JSON.</p>`}
      </fieldset>`}
      ${kind === "supervised" &&
      html`<div class="form-grid">
        <label for="job-answer-field">Answer field</label>
        <input id="job-answer-field" value=${answerField} onInput=${(e) => setAnswerField(e.target.value)} />
      </div>`}
      <fieldset>
        <legend>Hyperparameters</legend>
        <${ErrorBox} error=${catalogueError} />
        ${warmup.length > 0 && html`<div class="hp-grid">${warmup.map(field)}</div>`}
        <div class="hp-grid">${shown.filter((f) => f.openai && !WARMUP_FIELDS.includes(f.name)).map(field)}</div>
        <details>
          <summary>More (${shown.filter((f) => !f.openai && !WARMUP_FIELDS.includes(f.name)).length} of ours)</summary>
          <div class="hp-grid">${shown.filter((f) => !f.openai && !WARMUP_FIELDS.includes(f.name)).map(field)}</div>
        </details>
        ${errors._ && html`<p class="error-text" role="alert">${errors._}</p>`}
      </fieldset>
      <${ErrorBox} error=${error} />
      <button type="submit" disabled=${busy || !training || !model || (kind === "reinforcement" && !grader())}>
        ${busy ? "Creating…" : "Create job"}
      </button>
    </form>
  </div>`;
}
