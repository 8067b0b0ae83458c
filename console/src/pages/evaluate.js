import { html } from "htm/preact";
export function EvaluatePage() {
  return html`<div><h1 tabindex="-1">Evaluate</h1></div>`;
}
