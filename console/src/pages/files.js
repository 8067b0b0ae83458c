import { html } from "htm/preact";
import { useRef, useState } from "preact/hooks";
import { del, fileRows, listAll, uploadFile } from "../api.js";
import { ErrorBox, seg, usePoll, when } from "../ui.js";

function BadLines({ error }) {
  if (!error.lines || !error.lines.length) return html`<${ErrorBox} error=${error} />`;
  return html`<div class="error" role="alert">
    <strong>${error.lines.length + (error.lines_left_out || 0)} bad line${error.lines.length > 1 ? "s" : ""}; nothing was stored.</strong>
    ${error.lines_left_out > 0 && html`<p>The first ${error.lines.length} are listed; ${error.lines_left_out} more are not.</p>`}
    <div class="scroll"><table class="bad-lines">
      <thead>
        <tr><th scope="col">Line</th><th scope="col">Field</th><th scope="col">Reason</th></tr>
      </thead>
      <tbody>
        ${error.lines.map(
          (p) => html`<tr><td>${p.line || "file"}</td><td><code>${p.field || "(line)"}</code></td><td>${p.reason}</td></tr>`,
        )}
      </tbody>
    </table></div>
  </div>`;
}

function Upload({ onDone }) {
  const [uploads, setUploads] = useState([]);
  const [over, setOver] = useState(false);

  const counter = useRef(0);
  function update(key, patch) {
    setUploads((list) => list.map((u) => (u.key === key ? { ...u, ...patch } : u)));
  }

  async function start(files) {
    // Each upload keeps its own key: two drops in a row cannot mix up their rows.
    const added = [...files].map((file) => ({ key: ++counter.current, name: file.name, progress: 0, state: "uploading" }));
    setUploads((list) => [...list, ...added]);
    await Promise.all(
      [...files].map(async (file, i) => {
        const key = added[i].key;
        try {
          const stored = await uploadFile(file, (p) => update(key, { progress: p }));
          update(key, { state: "stored", progress: 1, id: stored.id });
        } catch (err) {
          update(key, { state: "rejected", error: err });
        }
      }),
    );
    onDone();
  }

  return html`<section aria-labelledby="upload-heading">
    <h2 id="upload-heading">Upload JSONL</h2>
    <label
      class=${`drop ${over ? "over" : ""}`}
      onDragOver=${(e) => (e.preventDefault(), setOver(true))}
      onDragLeave=${() => setOver(false)}
      onDrop=${(e) => (e.preventDefault(), setOver(false), start(e.dataTransfer.files))}
    >
      <span>Drop .jsonl files here, or choose them</span>
      <input
        type="file"
        accept=".jsonl,.json,application/jsonl"
        multiple
        onChange=${(e) => (start(e.target.files), (e.target.value = ""))}
      />
    </label>
    <ul class="uploads" aria-live="polite">
      ${uploads.map(
        (u) => html`<li key=${u.key} class=${`upload-${u.state}`}>
          <span class="name">${u.name}</span>
          <progress max="1" value=${u.progress} aria-label=${`upload of ${u.name}`}></progress>
          <span>${u.state === "stored" ? `stored as ${u.id}` : u.state}</span>
          ${u.error && html`<${BadLines} error=${u.error} />`}
        </li>`,
      )}
    </ul>
  </section>`;
}

function Preview({ file }) {
  const [rows, error] = usePoll(() => fileRows(file.id, 5), 0, [file.id]);
  return html`<section class="preview" aria-label=${`first rows of ${file.filename}`}>
    <h3>${file.filename}: first rows</h3>
    <${ErrorBox} error=${error} />
    ${rows === null && !error && html`<p>Loading…</p>`}
    ${rows &&
    html`<ol>
      ${rows.map((row) => html`<li><pre>${JSON.stringify(row, null, 1)}</pre></li>`)}
    </ol>`}
  </section>`;
}

export function FilesPage() {
  const [files, error, reload] = usePoll(() => listAll("/files"), 0, []);
  const [shown, setShown] = useState(null);
  const [problem, setProblem] = useState(null);

  async function remove(file) {
    if (!confirm(`Delete ${file.filename} (${file.id})?`)) return;
    try {
      await del(`/files/${seg(file.id)}`);
      setProblem(null);
      reload();
    } catch (err) {
      setProblem(err);
    }
  }

  return html`<div>
    <h1 tabindex="-1">Files</h1>
    <${Upload} onDone=${reload} />
    <section aria-labelledby="files-heading">
      <h2 id="files-heading">Your files</h2>
      <${ErrorBox} error=${error || problem} />
      ${files && !files.length && html`<p>No files yet.</p>`}
      ${files &&
      files.length > 0 &&
      html`<div class="scroll"><table class="list">
        <thead>
          <tr><th scope="col">Name</th><th scope="col">Id</th><th scope="col">Bytes</th><th scope="col">Uploaded</th><th scope="col"><span class="sr-only">Actions</span></th></tr>
        </thead>
        <tbody>
          ${files.map(
            (f) => html`<tr>
              <td>${f.filename}</td>
              <td><code>${f.id}</code></td>
              <td>${f.bytes}</td>
              <td>${when(f.created_at)}</td>
              <td class="actions">
                <button onClick=${() => setShown(shown && shown.id === f.id ? null : f)}>
                  ${shown && shown.id === f.id ? "Hide" : "Preview"}
                </button>
                <button class="danger" onClick=${() => remove(f)}>Delete</button>
              </td>
            </tr>`,
          )}
        </tbody>
      </table></div>`}
      ${shown && html`<${Preview} file=${shown} />`}
    </section>
  </div>`;
}
