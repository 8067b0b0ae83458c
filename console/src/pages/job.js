import { html } from "htm/preact";
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { get, post } from "../api.js";
import { LineChart } from "../chart.js";
import { ErrorBox, Status, duration, num, seg, usePoll, when } from "../ui.js";

const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
const isEvalMetric = (name) => /^(valid_|pass@|greedy_pass@|top@|eval_seconds)/.test(name);

// Charts a person can add; the reward chart is always there.
const EXTRA_CHARTS = [
  ["kl", "KL and entropy", ["kl", "entropy", "approx_kl"]],
  ["length", "Response length (tokens)", ["response_length_mean", "valid_response_length_mean"]],
  ["time", "Step time breakdown (s)", ["step_seconds", "generate_seconds", "grade_seconds", "train_seconds", "weight_sync_seconds"]],
  ["loss", "Loss", ["loss", "policy_loss", "sft_loss", "value_loss"]],
  ["pass", "Validation pass rates", ["pass@1", "greedy_pass@1", "top@1", "top@5"]],
];

/** Every metrics record of a job, fetched incrementally (pages of the metrics path until
 * has_more is false). A step has at most two rows, its training record and its evaluation
 * record; a newer record of the same kind replaces the older one whole (a job that resumes
 * from a checkpoint records its later steps again). */
function useMetrics(jobId, live) {
  const store = useRef(null);
  const [version, setVersion] = useState(0);
  const [error, setError] = useState(null);
  if (!store.current || store.current.jobId !== jobId) store.current = { jobId, lastSeq: 0, train: new Map(), valid: new Map() };
  useEffect(() => {
    let timer = null;
    let cancelled = false;
    async function load() {
      const s = store.current;
      try {
        let changed = false;
        for (;;) {
          const page = await get(`/fine_tuning/jobs/${seg(jobId)}/metrics?after_seq=${s.lastSeq}`);
          if (cancelled) return;
          for (const record of page.data) {
            const isEval = Object.keys(record.values).some(isEvalMetric);
            (isEval ? s.valid : s.train).set(record.step, { ...record.values, time: record.created_at });
          }
          s.lastSeq = page.last_seq;
          changed = changed || page.data.length > 0;
          if (!page.has_more) break;
        }
        if (changed) setVersion((v) => v + 1);
        setError(null);
      } catch (err) {
        if (!cancelled) setError(err);
      }
      if (!cancelled && live) timer = setTimeout(load, 2000);
    }
    load();
    return () => {
      cancelled = true;
      clearTimeout(timer);
    };
  }, [jobId, live]);
  const rows = useMemo(() => {
    const { train, valid } = store.current;
    const steps = [...new Set([...train.keys(), ...valid.keys()])].sort((a, b) => a - b);
    return steps.map((step) => {
      const t = train.get(step);
      return { ...valid.get(step), ...t, step, time: t ? t.time : null };
    });
  }, [version, jobId]);
  return [rows, error];
}

function columns(rows, names) {
  const steps = rows.map((r) => r.step);
  const series = names
    .filter((name) => rows.some((r) => r[name] != null))
    .map((name) => ({ label: name, values: rows.map((r) => (r[name] == null ? null : r[name])), points: isEvalMetric(name) }));
  return { steps, series };
}

function eta(job, rows) {
  if (FINISHED.has(job.status) || job.status === "paused" || !job.total_steps) return null;
  const recent = rows.filter((r) => r.time != null && r.step > 0).slice(-20);
  if (recent.length < 2) return null;
  // The steps' own durations when recorded (pauses and restarts do not count), else their pace.
  const timed = recent.filter((r) => r.step_seconds != null);
  const perStep = timed.length >= 2
    ? timed.reduce((sum, r) => sum + r.step_seconds, 0) / timed.length
    : (recent[recent.length - 1].time - recent[0].time) / Math.max(1, recent[recent.length - 1].step - recent[0].step);
  return perStep * Math.max(0, job.total_steps - job.trained_steps);
}

function Controls({ job, onChange }) {
  const [error, setError] = useState(null);
  async function act(verb) {
    if (verb === "cancel" && !confirm(`Cancel ${job.id}? It cannot be resumed.`)) return;
    try {
      await post(`/fine_tuning/jobs/${seg(job.id)}/${verb}`);
      onChange();
      setError(null);
    } catch (err) {
      setError(err);
    }
  }
  const running = ["validating_files", "queued", "running"].includes(job.status);
  return html`<div class="buttons">
    ${running && html`<button onClick=${() => act("pause")}>Pause</button>`}
    ${job.status === "paused" && html`<button onClick=${() => act("resume")}>Resume</button>`}
    ${!FINISHED.has(job.status) && html`<button class="danger" onClick=${() => act("cancel")}>Cancel</button>`}
    <${ErrorBox} error=${error} />
  </div>`;
}

function Events({ jobId, live }) {
  const [page, error] = usePoll(() => get(`/fine_tuning/jobs/${seg(jobId)}/events?limit=40`), live ? 3 : 0, [jobId]);
  return html`<section aria-labelledby="events-heading">
    <h2 id="events-heading">Events</h2>
    <${ErrorBox} error=${error} />
    <ol class="events" aria-live="off">
      ${page &&
      page.data.map(
        (e) => html`<li class=${`level-${e.level}`}><time>${when(e.created_at)}</time> <span>${e.message}</span></li>`,
      )}
    </ol>
  </section>`;
}

// Validation scores first, then the rest by name.
const FIRST = ["valid_reward_mean", "valid_greedy_reward_mean", "pass@1", "greedy_pass@1"];
function byInterest(a, b) {
  const rank = (n) => (FIRST.includes(n) ? FIRST.indexOf(n) : /^(pass@|top@)/.test(n) ? FIRST.length : FIRST.length + 1);
  return rank(a) - rank(b) || a.localeCompare(b);
}

function Checkpoints({ job, live }) {
  const [page, error] = usePoll(() => get(`/fine_tuning/jobs/${seg(job.id)}/checkpoints?limit=100`), live ? 10 : 0, [job.id]);
  const names = page ? [...new Set(page.data.flatMap((c) => Object.keys(c.metrics)))].filter((n) => n !== "step").sort(byInterest) : [];
  const compare = (ckpt) => `#/evaluate?a=${encodeURIComponent(job.model)}&b=${encodeURIComponent(ckpt.fine_tuned_model_checkpoint)}&file=${encodeURIComponent(job.validation_file || job.training_file)}&job=${job.id}`;
  return html`<section aria-labelledby="ckpt-heading">
    <h2 id="ckpt-heading">Checkpoints</h2>
    <${ErrorBox} error=${error} />
    ${page && !page.data.length && html`<p>No checkpoints yet.</p>`}
    ${page &&
    page.data.length > 0 &&
    html`<div class="scroll"><table class="list">
      <thead><tr><th scope="col">Step</th><th scope="col">Model name</th>${names.map((n) => html`<th scope="col">${n}</th>`)}<th scope="col"><span class="sr-only">Actions</span></th></tr></thead>
      <tbody>
        ${page.data.map(
          (c) => html`<tr>
            <td>${c.step_number}</td>
            <td><code>${c.fine_tuned_model_checkpoint}</code></td>
            ${names.map((n) => html`<td>${num(c.metrics[n])}</td>`)}
            <td><a href=${compare(c)}>Evaluate vs base</a></td>
          </tr>`,
        )}
      </tbody>
    </table></div>`}
  </section>`;
}

export function JobPage({ jobId }) {
  const finished = useRef(false); // stop polling the job once it has ended
  const [job, error, reload] = usePoll(() => get(`/fine_tuning/jobs/${seg(jobId)}`), 2, [jobId], !finished.current);
  const live = !job || !FINISHED.has(job.status);
  finished.current = !live;
  const [rows, metricsError] = useMetrics(jobId, live);
  const [extra, setExtra] = useState(new Set());
  if (!job) return html`<div><h1 tabindex="-1">Job ${jobId}</h1><${ErrorBox} error=${error} />${!error && html`<p>Loading…</p>`}</div>`;
  const reward = columns(rows, ["train_reward_mean", "valid_reward_mean", "valid_greedy_reward_mean", "sft_loss"].filter((n) => n !== "sft_loss" || job.method.type === "supervised"));
  const left = eta(job, rows);
  const progress = job.total_steps ? job.trained_steps / job.total_steps : 0;
  return html`<div>
    <h1 tabindex="-1">Job <code>${job.id}</code></h1>
    <div class="summary">
      <dl>
        <dt>Status</dt><dd><${Status} status=${job.status} /></dd>
        <dt>Step</dt><dd><span class="steps">${job.trained_steps} / ${job.total_steps || "?"}</span>
          <progress max="1" value=${progress} aria-label="training progress"></progress></dd>
        <dt>ETA</dt><dd>${left == null ? "–" : duration(left)}</dd>
        <dt>Model</dt><dd>${job.model}</dd>
        <dt>Method</dt><dd>${job.method.type}</dd>
        <dt>Fine-tuned model</dt><dd>${job.fine_tuned_model ? html`<code>${job.fine_tuned_model}</code>` : "–"}</dd>
        <dt>Created</dt><dd>${when(job.created_at)}</dd>
      </dl>
      <${Controls} job=${job} onChange=${reload} />
      ${job.error && html`<${ErrorBox} error=${{ message: job.error.message, param: job.error.param }} />`}
      ${job.fine_tuned_model &&
      html`<p><a href=${`#/evaluate?a=${encodeURIComponent(job.model)}&b=${encodeURIComponent(job.fine_tuned_model)}&file=${encodeURIComponent(job.validation_file || job.training_file)}&job=${job.id}`}>Evaluate base vs fine-tuned</a></p>`}
    </div>
    <${ErrorBox} error=${error || metricsError} />
    <${LineChart} title="Reward" steps=${reward.steps} series=${reward.series} />
    <fieldset class="toggles">
      <legend>More charts</legend>
      ${EXTRA_CHARTS.map(
        ([key, label]) => html`<label class="inline"><input type="checkbox" checked=${extra.has(key)}
          onChange=${(e) => {
            const next = new Set(extra);
            e.target.checked ? next.add(key) : next.delete(key);
            setExtra(next);
          }} /> ${label}</label>`,
      )}
    </fieldset>
    ${EXTRA_CHARTS.filter(([key]) => extra.has(key)).map(([key, label, names]) => {
      const data = columns(rows, names);
      return data.series.length
        ? html`<${LineChart} key=${key} title=${label} steps=${data.steps} series=${data.series} />`
        : html`<p key=${key}>${label}: nothing recorded yet.</p>`;
    })}
    <${Checkpoints} job=${job} live=${live} />
    <${Events} jobId=${jobId} live=${live} />
  </div>`;
}
