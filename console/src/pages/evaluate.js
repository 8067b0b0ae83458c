import { html } from "htm/preact";
import { useEffect, useState } from "preact/hooks";
import { get, listAll, post } from "../api.js";
import { ErrorBox, FileSelect, SavedGraderSelect, ModelOptions, Status, num, seg, usePoll, when } from "../ui.js";

const DONE = new Set(["completed", "failed", "canceled"]);
const DEFAULT_GRADER = { type: "string_check", name: "exact", input: "{{sample.output_text}}", reference: "{{item.answer}}", operation: "eq" };

function lastUser(item) {
  const messages = item.messages || [];
  const user = [...messages].reverse().find((m) => m.role === "user");
  if (!user) return "";
  return typeof user.content === "string" ? user.content : (user.content || []).map((p) => p.text || "").join("");
}

function reference(item) {
  const { messages, ...rest } = item;
  return JSON.stringify(rest);
}

function Setup({ params, onStarted }) {
  const [models] = usePoll(() => get("/models"), 0, []);
  const [files] = usePoll(() => listAll("/files"), 0, []);
  const [saved] = usePoll(() => get("/graders?limit=100"), 0, []);
  const [a, setA] = useState(params.get("a") || "");
  const [b, setB] = useState(params.get("b") || "");
  const [file, setFile] = useState(params.get("file") || "");
  const [graderText, setGraderText] = useState(JSON.stringify(DEFAULT_GRADER, null, 2));
  const [n, setN] = useState(4);
  const [temperature, setTemperature] = useState(1.0);
  const [maxTokens, setMaxTokens] = useState(64);
  const [maxTurns, setMaxTurns] = useState(0);
  const [toolServers, setToolServers] = useState("");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    const jobId = params.get("job");
    if (!jobId) return;
    get(`/fine_tuning/jobs/${seg(jobId)}`)
      .then((job) => {
        const rl = job.method.reinforcement;
        if (rl && rl.grader) setGraderText(JSON.stringify(rl.grader, null, 2));
        if (rl && rl.hyperparameters && rl.hyperparameters.max_new_tokens) setMaxTokens(rl.hyperparameters.max_new_tokens);
        // A tool-using job's model is evaluated with its tools, as its validation ran.
        if (rl && rl.hyperparameters && rl.hyperparameters.max_turns > 1) setMaxTurns(rl.hyperparameters.max_turns);
        if (rl && rl.hyperparameters && (rl.hyperparameters.tool_servers || []).length) setToolServers(rl.hyperparameters.tool_servers.join(","));
      })
      .catch(setError);
  }, [params.get("job")]);
  useEffect(() => {
    if (models && models.data.length) {
      if (!a) setA(models.data[0].id);
      if (!b) setB(models.data[models.data.length - 1].id);
    }
  }, [models]);

  async function start(event) {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      let grader;
      try {
        grader = JSON.parse(graderText);
      } catch (err) {
        throw Object.assign(new Error(`grader: not valid JSON: ${err.message}`), { param: "grader" });
      }
      const evaluation = await post("/evals", {
        name: `console: ${a} vs ${b}`,
        data_source_config: { type: "custom", item_schema: { type: "object" }, include_sample_schema: true },
        testing_criteria: [grader],
      });
      const sampling = { n: Number(n), temperature: Number(temperature), max_completion_tokens: Number(maxTokens) };
      const servers = toolServers.split(",").map((s) => s.trim()).filter(Boolean);
      if (Number(maxTurns) > 1 || servers.length) Object.assign(sampling, { max_turns: Number(maxTurns), tool_servers: servers });
      const runs = [];
      for (const model of [a, b]) {
        runs.push(
          await post(`/evals/${evaluation.id}/runs`, {
            name: model,
            data_source: {
              type: "completions",
              source: { type: "file_id", id: file },
              model,
              input_messages: { type: "item_reference", item_reference: "item.messages" },
              sampling_params: sampling,
            },
          }),
        );
      }
      onStarted(evaluation.id, runs.map((r) => r.id));
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }

  return html`<form onSubmit=${start}>
    <div class="form-grid">
      <label for="eval-a">Model A</label>
      <select id="eval-a" value=${a} onChange=${(e) => setA(e.target.value)}><${ModelOptions} models=${models} value=${a} /></select>
      <label for="eval-b">Model B</label>
      <select id="eval-b" value=${b} onChange=${(e) => setB(e.target.value)}><${ModelOptions} models=${models} value=${b} /></select>
      <label for="eval-file">Validation file</label>
      <${FileSelect} id="eval-file" files=${files} value=${file} onChange=${setFile} />
      <label for="eval-n">Samples per example (pass@k)</label>
      <input id="eval-n" type="number" min="1" max="64" value=${n} onInput=${(e) => setN(e.target.value)} />
      <label for="eval-temperature">Temperature of the samples</label>
      <input id="eval-temperature" type="number" min="0" max="2" step="0.1" value=${temperature} onInput=${(e) => setTemperature(e.target.value)} />
      <label for="eval-max-tokens">Max new tokens</label>
      <input id="eval-max-tokens" type="number" min="1" value=${maxTokens} onInput=${(e) => setMaxTokens(e.target.value)} />
      <label for="eval-max-turns">Max turns (tool-using episodes; 0: one turn)</label>
      <input id="eval-max-turns" type="number" min="0" value=${maxTurns} onInput=${(e) => setMaxTurns(e.target.value)} />
      <label for="eval-tool-servers">Tool servers (comma-separated)</label>
      <input id="eval-tool-servers" type="text" value=${toolServers} onInput=${(e) => setToolServers(e.target.value)} />
    </div>
    <${SavedGraderSelect} id="eval-saved-grader" saved=${saved} onLoad=${setGraderText} />
    <label for="eval-grader">Grader spec (JSON)</label>
    <textarea id="eval-grader" class="code" rows="6" spellcheck="false" value=${graderText} onInput=${(e) => setGraderText(e.target.value)}></textarea>
    <${ErrorBox} error=${error} />
    <div class="buttons"><button type="submit" disabled=${busy || !file || !a || !b}>${busy ? "Starting…" : "Run evaluation"}</button></div>
  </form>`;
}

function MetricsTable({ runs }) {
  const names = [...new Set(runs.flatMap((r) => Object.keys(r.metrics || {})))].sort();
  return html`<div class="scroll"><table class="list compare" aria-label="metrics side by side">
    <thead>
      <tr><th scope="col">Metric</th>${runs.map((r, i) => html`<th scope="col">${"AB"[i]}: <code>${r.model}</code></th>`)}${runs.length === 2 && html`<th scope="col">B − A</th>`}</tr>
    </thead>
    <tbody>
      ${names.map((name) => {
        const values = runs.map((r) => (r.metrics || {})[name]);
        const diff = values.length === 2 && values[0] != null && values[1] != null ? values[1] - values[0] : null;
        const lowerIsBetter = name.endsWith("errors");
        const better = diff == null || diff === 0 ? "" : (diff > 0) !== lowerIsBetter ? "better" : "worse";
        return html`<tr data-metric=${name}>
          <th scope="row">${name}</th>
          ${values.map((v) => html`<td>${num(v)}</td>`)}
          ${runs.length === 2 && html`<td class=${better}>${diff == null ? "–" : (diff > 0 ? "+" : "") + num(diff)}</td>`}
        </tr>`;
      })}
      <tr>
        <th scope="row">examples passed / failed / errored</th>
        ${runs.map((r) => html`<td>${r.result_counts.passed} / ${r.result_counts.failed} / ${r.result_counts.errored}</td>`)}
        ${runs.length === 2 && html`<td></td>`}
      </tr>
    </tbody>
  </table></div>
  <p class="hint">An example passes, fails or errs by its greedy answer; grader_errors counts every failed grading, samples too.</p>`;
}

function Answer({ graded }) {
  if (!graded) return html`<td>–</td>`;
  return html`<td class=${graded.error ? "" : graded.passed ? "better" : "worse"}>
    <pre>${graded.output_text}</pre>
    <small>${graded.error ? `error: ${graded.error.message || graded.error.code || graded.error}` : `score ${num(graded.score)}${graded.passed ? ", passed" : ""}`}</small>
  </td>`;
}

const EXAMPLES_PAGE = 100;

function Examples({ evalId, runs }) {
  const [shown, setShown] = useState(EXAMPLES_PAGE);
  const [items, error] = usePoll(
    () => Promise.all(runs.map((r) => listAll(`/evals/${seg(evalId)}/runs/${seg(r.id)}/output_items`, shown))),
    0,
    [evalId, runs.map((r) => r.id).join(), shown],
  );
  const [open, setOpen] = useState(null);
  if (error) return html`<${ErrorBox} error=${error} />`;
  if (!items) return html`<p>Loading examples…</p>`;
  const byIndex = items.map((list) => new Map(list.map((item) => [item.datasource_item_id, item])));
  const indices = [...new Set(items.flatMap((list) => list.map((i) => i.datasource_item_id)))].sort((x, y) => x - y);
  return html`<div class="scroll"><table class="list examples" aria-label="answers side by side">
    <thead>
      <tr><th scope="col">#</th><th scope="col">Prompt</th><th scope="col">Expected</th>${runs.map((r, i) => html`<th scope="col">${"AB"[i]} greedy answer</th>`)}<th scope="col"><span class="sr-only">Samples</span></th></tr>
    </thead>
    <tbody>
      ${indices.map((index) => {
        const pair = byIndex.map((m) => m.get(index));
        const item = (pair.find(Boolean) || {}).datasource_item || {};
        return html`<tr data-example=${index}>
            <td>${index + 1}</td>
            <td><pre>${lastUser(item)}</pre></td>
            <td><code>${reference(item)}</code></td>
            ${pair.map((p) => html`<${Answer} graded=${p && p.greedy} />`)}
            <td><button class="link" aria-expanded=${open === index} aria-label=${`samples of example ${index + 1}`} onClick=${() => setOpen(open === index ? null : index)}>samples</button></td>
          </tr>
          ${open === index &&
          html`<tr><td></td><td colspan=${2 + runs.length + 1}>
            ${pair.map(
              (p, i) => html`<div><strong>${"AB"[i]}</strong>: ${p
                ? p.samples.map((s) => html`<span class="chip">${s.output_text} → ${s.error ? "error" : num(s.score)}</span>`)
                : "–"}</div>`,
            )}
          </td></tr>`}`;
      })}
    </tbody>
  </table></div>
  ${indices.length >= shown &&
  html`<button onClick=${() => setShown(shown + EXAMPLES_PAGE)}>Show ${EXAMPLES_PAGE} more examples</button>`}`;
}

function Results({ evalId, runIds }) {
  const [finished, setFinished] = useState(false);
  const [runs, error] = usePoll(
    () => Promise.all(runIds.map((id) => get(`/evals/${seg(evalId)}/runs/${seg(id)}`))),
    2,
    [evalId, runIds.join()],
    !finished,
  );
  useEffect(() => {
    if (runs && runs.every((r) => DONE.has(r.status))) setFinished(true);
  }, [runs]);
  if (error) return html`<${ErrorBox} error=${error} />`;
  if (!runs) return html`<p>Loading…</p>`;
  return html`<section aria-labelledby="results-heading">
    <h2 id="results-heading">Results</h2>
    <ul class="runs">
      ${runs.map(
        (r, i) => html`<li>
          <strong>${"AB"[i]}</strong> <code>${r.model}</code> <${Status} status=${r.status} />
          <progress max=${r.progress ? r.progress.items_total || 1 : 1} value=${r.progress ? r.progress.items_done : 0} aria-label=${`run ${"AB"[i]} progress`}></progress>
          ${r.progress && html`<span>${r.progress.items_done} / ${r.progress.items_total} examples</span>`}
          ${r.error && html`<${ErrorBox} error=${{ message: r.error.message }} />`}
        </li>`,
      )}
    </ul>
    <${MetricsTable} runs=${runs} />
    ${finished && html`<h2>Per example</h2><${Examples} evalId=${evalId} runs=${runs} />`}
  </section>`;
}

function Previous() {
  const [page, error] = usePoll(() => get("/evals?limit=20&order=desc"), 0, []);
  if (error) return html`<${ErrorBox} error=${error} />`;
  if (!page || !page.data.length) return null;
  return html`<section aria-labelledby="previous-heading">
    <h2 id="previous-heading">Earlier evaluations</h2>
    <ul>
      ${page.data.map(
        (e) => html`<li><button class="link" onClick=${async () => {
          const runs = await get(`/evals/${seg(e.id)}/runs?limit=10&order=asc`); // A was started first
          location.hash = `#/evaluate?eval=${e.id}&runs=${runs.data.map((r) => r.id).join(",")}`;
        }}>${e.name}</button> <small>${when(e.created_at)}</small></li>`,
      )}
    </ul>
  </section>`;
}

export function EvaluatePage({ params }) {
  const evalId = params.get("eval");
  const runIds = (params.get("runs") || "").split(",").filter(Boolean);
  return html`<div>
    <h1 tabindex="-1">Evaluate</h1>
    <p class="hint">Compare two models (a base model, a fine-tuned model or any checkpoint) on a validation file: each example gets one greedy answer and K samples, graded by the grader below.</p>
    ${evalId && runIds.length
      ? html`<p><a href="#/evaluate">New evaluation</a></p><${Results} evalId=${evalId} runIds=${runIds} />`
      : html`<${Setup} params=${params} onStarted=${(id, runs) => (location.hash = `#/evaluate?eval=${id}&runs=${runs.join(",")}`)} /><${Previous} />`}
  </div>`;
}
