'use strict';
// OpenAI grader templates: {{item.a.b}}, {{sample.output_text}}, {{sample.output_json.x}}.
// A missing field is a TemplateError (a per-sample TEMPLATE error), never "".

const PLACEHOLDER = /\{\{([\s\S]*?)\}\}/g;
const REFERENCE = /^(item|sample)((?:\.[^.\s{}]+)+)$/;

class TemplateError extends Error {}

function templateProblems(text) {
  const problems = [];
  for (const match of text.matchAll(PLACEHOLDER)) {
    const parsed = REFERENCE.exec(match[1].trim());
    if (!parsed) {
      problems.push(`template '${match[0]}' must be {{item.<field>}} or {{sample.<field>}}`);
      continue;
    }
    const path = parsed[2].slice(1).split('.');
    if (parsed[1] === 'sample' && !['output_text', 'output_json'].includes(path[0])) {
      problems.push(`template '${match[0]}': sample has only output_text and output_json`);
    }
  }
  if (text.replace(PLACEHOLDER, '').includes('{{')) problems.push("template has '{{' without a closing '}}'");
  return problems;
}

function formatValue(value) {
  if (typeof value === 'string') return value;
  if (typeof value === 'number') return String(value); // 4 -> "4", 0.5 -> "0.5"
  return JSON.stringify(value);
}

function lookup(root, namespace, path) {
  let value = root;
  let walked = namespace;
  for (const key of path) {
    if (value !== null && typeof value === 'object' && !Array.isArray(value) && Object.hasOwn(value, key)) {
      value = value[key];
    } else if (Array.isArray(value) && /^\d+$/.test(key) && Number(key) < value.length) {
      value = value[Number(key)];
    } else {
      throw new TemplateError(`{{${walked}.${key}}}: ${walked} has no field '${key}'`);
    }
    walked = `${walked}.${key}`;
  }
  return value;
}

function render(text, sample, item) {
  return text.replace(PLACEHOLDER, (whole, inner) => {
    const parsed = REFERENCE.exec(inner.trim());
    if (!parsed) return whole;
    const path = parsed[2].slice(1).split('.');
    if (parsed[1] === 'item') return formatValue(lookup(item, 'item', path));
    if (path[0] === 'output_text') return sample.output_text;
    if (sample.output_json === null) {
      throw new TemplateError('{{sample.output_json...}}: the sample has no output_json (the answer is not a JSON object)');
    }
    return formatValue(lookup(sample.output_json, 'sample.output_json', path.slice(1)));
  });
}

module.exports = { TemplateError, templateProblems, render };
