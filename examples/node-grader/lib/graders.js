'use strict';
// string_check (1.0 / 0.0, OpenAI semantics) and multi (calculate_output over
// sub-grader scores). A failure is a per-sample error with a kind, never a 0.

const { render, TemplateError } = require('./templates');
const { parse, ExpressionError } = require('./expression');

const OPERATIONS = {
  eq: (text, reference) => text === reference,
  ne: (text, reference) => text !== reference,
  like: (text, reference) => text.includes(reference),
  ilike: (text, reference) => text.toLowerCase().includes(reference.toLowerCase()),
};

const failed = (kind, message) => ({ error: { kind, message } });

function stringCheck(spec, pairs) {
  const check = OPERATIONS[spec.operation];
  return pairs.map(({ sample, item }) => {
    try {
      const ok = check(render(spec.input, sample, item), render(spec.reference, sample, item));
      return { score: ok ? 1 : 0, passed: ok, subScores: {} };
    } catch (error) {
      if (error instanceof TemplateError) return failed('GRADE_ERROR_KIND_TEMPLATE', error.message);
      throw error;
    }
  });
}

function multi(spec, pairs) {
  const names = Object.keys(spec.graders).sort();
  const evaluate = parse(spec.calculate_output, new Set(names));
  const columns = names.map((name) => gradeBatch(spec.graders[name], pairs));
  return pairs.map((_, row) => {
    const parts = names.map((name, column) => [name, columns[column][row]]);
    const subScores = Object.fromEntries(parts.filter(([, part]) => !part.error).map(([name, part]) => [name, part.score]));
    const failures = parts.filter(([, part]) => part.error);
    if (failures.length) {
      const message = failures.map(([name, part]) => `graders.${name}: ${part.error.message}`).join('; ');
      return { subScores, error: { kind: failures[0][1].error.kind, message } };
    }
    try {
      const score = evaluate(subScores);
      return { score, passed: parts.every(([, part]) => part.passed), subScores };
    } catch (error) {
      if (error instanceof ExpressionError) return failed('GRADE_ERROR_KIND_INVALID_SCORE', `calculate_output: ${error.message}`);
      throw error;
    }
  });
}

function gradeBatch(spec, pairs) {
  return spec.type === 'multi' ? multi(spec, pairs) : stringCheck(spec, pairs);
}

module.exports = { gradeBatch };
