import { html } from "htm/preact";
import { get } from "../api.js";
import { ErrorBox, Status, usePoll, when } from "../ui.js";

export function JobsPage() {
  const [page, error] = usePoll(() => get("/fine_tuning/jobs?limit=100"), 5, []);
  return html`<div>
    <h1 tabindex="-1">Fine-tuning jobs</h1>
    <p><a class="button" href="#/jobs/new">New job</a></p>
    <${ErrorBox} error=${error} />
    ${page && !page.data.length && html`<p>No jobs yet. Upload files, then start one.</p>`}
    ${page &&
    page.data.length > 0 &&
    html`<div class="scroll"><table class="list">
      <thead>
        <tr><th scope="col">Job</th><th scope="col">Model</th><th scope="col">Method</th><th scope="col">Status</th><th scope="col">Steps</th><th scope="col">Created</th></tr>
      </thead>
      <tbody>
        ${page.data.map(
          (job) => html`<tr>
            <td><a href=${`#/jobs/${job.id}`}>${job.id}</a>${job.user_provided_suffix ? ` (${job.user_provided_suffix})` : ""}</td>
            <td>${job.model}</td>
            <td>${job.method.type}</td>
            <td><${Status} status=${job.status} /></td>
            <td>${job.trained_steps} / ${job.total_steps || "?"}</td>
            <td>${when(job.created_at)}</td>
          </tr>`,
        )}
      </tbody>
    </table></div>`}
  </div>`;
}
