import { html } from "htm/preact";
import { useState } from "preact/hooks";
import { del, fileRows, get, listAll, post } from "../api.js";
import { ErrorBox, FileSelect, num, seg, usePoll } from "../ui.js";

// Types with a form; every type (these too) can be edited as JSON.
const FORMS = {
  string_check: {
    template: { type: "string_check", name: "exact", input: "{{sample.output_text}}", reference: "{{item.answer}}", operation: "eq" },
    fields: [
      ["input", "text"],
      ["reference", "text"],
      ["operation", ["eq", "ne", "like", "ilike"]],
    ],
  },
  text_similarity: {
    template: {
      type: "text_similarity",
      name: "similar",
      input: "{{sample.output_text}}",
      reference: "{{item.answer}}",
      evaluation_metric: "fuzzy_match",
      pass_threshold: 0.8,
    },
    fields: [
      ["input", "text"],
      ["reference", "text"],
      ["evaluation_metric", ["fuzzy_match", "bleu", "gleu", "meteor", "rouge_1", "rouge_2", "rouge_3", "rouge_4", "rouge_5", "rouge_l"]],
      ["pass_threshold", "number"],
    ],
  },
  math_equivalence: {
    template: { type: "math_equivalence", name: "math", input: "{{sample.output_text}}", reference: "{{item.answer}}" },
    fields: [
      ["input", "text"],
      ["reference", "text"],
      ["float_rounding", "number"],
    ],
  },
  ranked_list: {
    template: { type: "ranked_list", name: "ranking", input: "{{sample.output_text}}", reference: "{{item.answer}}", score_metric: "top@1" },
    fields: [
      ["input", "text"],
      ["reference", "text"],
      ["score_metric", ["top@1", "top@5", "top@max", "reciprocal_rank"]],
    ],
  },
  python: {
    template: {
      type: "python",
      name: "python",
      source: "def grade(sample, item):\n    return 1.0 if sample['output_text'].strip() == str(item['answer']) else 0.0\n",
    },
    fields: [["source", "code"]],
  },
};
const JSON_ONLY = {
  json_check: { type: "json_check", name: "json", input: "{{sample.output_text}}", fields: { answer: "{{item.answer}}" } },
  score_model: {
    type: "score_model",
    name: "judge",
    model: "judge-model",
    input: [{ role: "user", content: "Score 0..1: {{sample.output_text}} vs {{item.answer}}" }],
    range: [0, 1],
  },
  label_model: {
    type: "label_model",
    name: "label",
    model: "judge-model",
    input: [{ role: "user", content: "Is '{{sample.output_text}}' correct for '{{item.answer}}'? yes/no" }],
    labels: ["yes", "no"],
    passing_labels: ["yes"],
  },
  multi: {
    type: "multi",
    name: "combined",
    graders: {
      exact: { type: "string_check", name: "exact", input: "{{sample.output_text}}", reference: "{{item.answer}}", operation: "eq" },
      close: { type: "text_similarity", name: "close", input: "{{sample.output_text}}", reference: "{{item.answer}}", evaluation_metric: "fuzzy_match" },
    },
    calculate_output: "0.7 * exact + 0.3 * close",
  },
};
const TEMPLATES = { ...Object.fromEntries(Object.entries(FORMS).map(([k, v]) => [k, v.template])), ...JSON_ONLY };

function GraderForm({ spec, onChange }) {
  const form = FORMS[spec.type];
  if (!form) return html`<p class="hint">${spec.type} graders are edited as JSON below.</p>`;
  const set = (name, value) => onChange({ ...spec, [name]: value });
  return html`<div class="form-grid">
    ${form.fields.map(([name, kind]) => {
      const id = `grader-${name}`;
      let input;
      if (Array.isArray(kind))
        input = html`<select id=${id} value=${spec[name] ?? kind[0]} onChange=${(e) => set(name, e.target.value)}>
          ${kind.map((choice) => html`<option value=${choice}>${choice}</option>`)}
        </select>`;
      else if (kind === "code")
        input = html`<textarea id=${id} class="code" rows="8" spellcheck="false" value=${spec[name] ?? ""} onInput=${(e) => set(name, e.target.value)}></textarea>`;
      else if (kind === "number")
        input = html`<input id=${id} type="number" step="any" value=${spec[name] ?? ""}
          onInput=${(e) => set(name, e.target.value === "" ? undefined : Number(e.target.value))} />`;
      else input = html`<input id=${id} value=${spec[name] ?? ""} onInput=${(e) => set(name, e.target.value)} />`;
      return html`<label for=${id}>${name}</label>${input}`;
    })}
  </div>`;
}

function Results({ results }) {
  if (!results) return null;
  return html`<div class="scroll"><table class="list results" aria-label="grading results">
    <thead>
      <tr><th scope="col">#</th><th scope="col">Answer</th><th scope="col">Score</th><th scope="col">Passed</th><th scope="col">Sub-scores</th><th scope="col">Errors</th></tr>
    </thead>
    <tbody>
      ${results.map(
        (r, i) => html`<tr>
          <td>${i + 1}</td>
          <td><code>${r.sample}</code></td>
          <td class="score">${r.error ? "–" : num(r.reward)}</td>
          <td>${r.error ? "" : r.passed ? "yes" : "no"}</td>
          <td>${r.scores && Object.entries(r.scores).map(([k, v]) => html`<span class="chip">${k}=${num(v)}</span>`)}</td>
          <td class="error-text">${r.error}</td>
        </tr>`,
      )}
    </tbody>
  </table></div>`;
}

export function GradersPage() {
  const [spec, setSpec] = useState(FORMS.string_check.template);
  const [text, setText] = useState(JSON.stringify(FORMS.string_check.template, null, 2));
  const [jsonError, setJsonError] = useState("");
  const [checked, setChecked] = useState(null);
  const [error, setError] = useState(null);
  const [fileId, setFileId] = useState("");
  const [pasted, setPasted] = useState('{"answer": "42"}');
  const [samples, setSamples] = useState("42\n41");
  const [results, setResults] = useState(null);
  const [busy, setBusy] = useState(false);
  const [files] = usePoll(() => listAll("/files"), 0, []);
  const [saved, savedError, reloadSaved] = usePoll(() => get("/graders?limit=100"), 0, []);

  function fromForm(next) {
    setSpec(next);
    setText(JSON.stringify(next, null, 2));
    setChecked(null);
  }
  function fromJson(value) {
    setText(value);
    setChecked(null);
    try {
      const parsed = JSON.parse(value);
      if (typeof parsed !== "object" || Array.isArray(parsed) || !parsed) throw new Error("a grader spec is a JSON object");
      setSpec(parsed);
      setJsonError("");
    } catch (err) {
      setJsonError(err.message);
    }
  }

  async function guarded(action) {
    setBusy(true);
    setError(null);
    try {
      await action();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }

  const validate = () =>
    guarded(async () => {
      await post("/fine_tuning/alpha/graders/validate", { grader: spec });
      setChecked("valid");
    });

  const run = () =>
    guarded(async () => {
      let items;
      if (fileId) items = (await fileRows(fileId, 5)).map(({ messages, ...rest }) => rest);
      else {
        try {
          const parsed = JSON.parse(pasted);
          items = Array.isArray(parsed) ? parsed : [parsed];
        } catch (err) {
          throw Object.assign(new Error(`sample item: not JSON: ${err.message}`), { param: "item" });
        }
      }
      const answers = samples.split("\n");
      const rows = [];
      const answersGiven = answers.filter((a, i) => a !== "" || i === 0);
      for (let i = 0; i < Math.max(items.length, answersGiven.length); i++) {
        const item = items[i % items.length] || {};
        const sample = answersGiven[i % answersGiven.length] ?? "";
        const out = await post("/fine_tuning/alpha/graders/run", { grader: spec, item, model_sample: sample });
        const flags = out.metadata.errors || {};
        rows.push({
          sample,
          reward: out.reward,
          passed: out.metadata.passed,
          scores: out.metadata.scores,
          error: flags.details || "",
        });
      }
      setResults(rows);
    });

  const save = () =>
    guarded(async () => {
      await post("/graders", { name: spec.name || spec.type, grader: spec });
      reloadSaved();
    });

  return html`<div>
    <h1 tabindex="-1">Graders</h1>
    <div class="columns">
      <section aria-labelledby="edit-heading">
        <h2 id="edit-heading">Grader</h2>
        <div class="form-grid">
          <label for="grader-type">type</label>
          <select id="grader-type" value=${spec.type} onChange=${(e) => fromForm({ ...TEMPLATES[e.target.value], name: spec.name })}>
            ${Object.keys(TEMPLATES).map((t) => html`<option value=${t}>${t}</option>`)}
          </select>
          <label for="grader-name">name</label>
          <input id="grader-name" value=${spec.name ?? ""} onInput=${(e) => fromForm({ ...spec, name: e.target.value })} />
        </div>
        <${GraderForm} spec=${spec} onChange=${fromForm} />
        <label for="grader-json">Spec (JSON)</label>
        <textarea id="grader-json" class="code" rows="12" spellcheck="false" value=${text} onInput=${(e) => fromJson(e.target.value)}
          aria-invalid=${jsonError ? "true" : "false"} aria-describedby="grader-json-error"></textarea>
        <p id="grader-json-error" class="error-text" role="status">${jsonError && `Not valid JSON: ${jsonError}`}</p>
        <div class="buttons">
          <button onClick=${validate} disabled=${busy || !!jsonError}>Validate</button>
          <button onClick=${save} disabled=${busy || !!jsonError}>Save for my tenant</button>
          ${checked && html`<span class="ok" role="status">The spec is valid.</span>`}
        </div>
        <${ErrorBox} error=${error} />
      </section>
      <section aria-labelledby="try-heading">
        <h2 id="try-heading">Try it</h2>
        <label for="try-file">Rows from a file (first 5)</label>
        <${FileSelect} id="try-file" files=${files} value=${fileId} onChange=${setFileId} optional=${true} />
        ${!fileId &&
        html`<label for="try-item">…or a pasted item (a JSON object or a list of them)</label>
          <textarea id="try-item" class="code" rows="3" value=${pasted} onInput=${(e) => setPasted(e.target.value)}></textarea>`}
        <label for="try-samples">Model answers, one per line (used in turn)</label>
        <textarea id="try-samples" class="code" rows="3" value=${samples} onInput=${(e) => setSamples(e.target.value)}></textarea>
        <div class="buttons"><button onClick=${run} disabled=${busy || !!jsonError}>${busy ? "Running…" : "Run grader"}</button></div>
        <${Results} results=${results} />
      </section>
    </div>
    <section aria-labelledby="saved-heading">
      <h2 id="saved-heading">Saved graders</h2>
      <${ErrorBox} error=${savedError} />
      ${saved && !saved.data.length && html`<p>None saved yet.</p>`}
      <ul class="saved">
        ${saved &&
        saved.data.map(
          (g) => html`<li>
            <span>${g.name}</span> <code>${g.grader.type}</code>
            <button onClick=${() => fromForm(g.grader)}>Load</button>
            <button class="danger" onClick=${() => guarded(async () => (await del(`/graders/${seg(g.id)}`), reloadSaved()))}>Delete</button>
          </li>`,
        )}
      </ul>
    </section>
  </div>`;
}
