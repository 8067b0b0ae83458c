'use strict';
// Validation of grader specs with a JSON path per problem. This implementation runs
// string_check and multi; the other OpenAI types (and our extra ones) are known, so
// ListGraderTypes lists them as disabled and Grade answers FAILED_PRECONDITION.

const { templateProblems } = require('./templates');
const { parse, ExpressionSyntaxError } = require('./expression');

const SUPPORTED = ['string_check', 'multi'];
const KNOWN = ['string_check', 'text_similarity', 'python', 'score_model', 'label_model', 'multi',
  'math_equivalence', 'ranked_list', 'json_check'];
const OPERATIONS = ['eq', 'ne', 'like', 'ilike'];

const join = (prefix, field) => [prefix, field].filter(Boolean).join('.');
const isObject = (value) => value !== null && typeof value === 'object' && !Array.isArray(value);

function checkFields(spec, prefix, allowed, issues) {
  for (const key of Object.keys(spec)) {
    if (!allowed.includes(key)) issues.push({ field: join(prefix, key), message: 'unknown field' });
  }
  if (typeof spec.name !== 'string' || spec.name.length === 0) {
    issues.push({ field: join(prefix, 'name'), message: spec.name === undefined ? 'required field is missing' : 'must be a non-empty string' });
  }
}

function checkStringCheck(spec, prefix, issues) {
  checkFields(spec, prefix, ['type', 'name', 'input', 'reference', 'operation'], issues);
  for (const key of ['input', 'reference']) {
    if (typeof spec[key] !== 'string') {
      issues.push({ field: join(prefix, key), message: spec[key] === undefined ? 'required field is missing' : 'must be a string' });
    } else {
      for (const problem of templateProblems(spec[key])) issues.push({ field: join(prefix, key), message: problem });
    }
  }
  if (!OPERATIONS.includes(spec.operation)) {
    issues.push({ field: join(prefix, 'operation'), message: `must be one of ${OPERATIONS.join(', ')}` });
  }
}

function checkType(spec, prefix, issues) {
  if (!KNOWN.includes(spec.type)) {
    const found = spec.type === undefined ? 'is missing' : `'${spec.type}' is unknown`;
    issues.push({ field: join(prefix, 'type'), message: `grader type ${found}; expected one of ${KNOWN.join(', ')}` });
    return false;
  }
  return true;
}

// Problems that make the spec invalid (INVALID_ARGUMENT).
function specIssues(spec, prefix = '') {
  const issues = [];
  if (!isObject(spec)) return [{ field: prefix, message: 'a grader spec must be a JSON object' }];
  if (!checkType(spec, prefix, issues)) return issues;
  if (spec.type === 'string_check') checkStringCheck(spec, prefix, issues);
  if (spec.type === 'multi') {
    if (prefix) return [{ field: join(prefix, 'type'), message: 'a multi grader cannot contain another multi' }];
    checkFields(spec, prefix, ['type', 'name', 'graders', 'calculate_output'], issues);
    const graders = isObject(spec.graders) ? spec.graders : {};
    if (!isObject(spec.graders) || Object.keys(graders).length === 0) {
      issues.push({ field: 'graders', message: 'must be an object with at least one named grader' });
    }
    for (const [name, sub] of Object.entries(graders)) issues.push(...specIssues(sub, `graders.${name}`));
    if (typeof spec.calculate_output !== 'string') {
      issues.push({ field: 'calculate_output', message: 'required field is missing' });
    } else {
      try {
        parse(spec.calculate_output, new Set(Object.keys(graders)));
      } catch (error) {
        if (!(error instanceof ExpressionSyntaxError)) throw error;
        issues.push({ field: 'calculate_output', message: error.message });
      }
    }
  }
  return issues;
}

// Types the spec uses that this server cannot run (FAILED_PRECONDITION).
function unsupportedIssues(spec) {
  const parts = spec.type === 'multi' ? Object.entries(spec.graders) : [['', spec]];
  return parts
    .filter(([, part]) => !SUPPORTED.includes(part.type))
    .map(([name, part]) => ({
      field: name ? `graders.${name}.type` : 'type',
      message: `${part.type} graders are not supported by this implementation`,
    }));
}

module.exports = { KNOWN, SUPPORTED, specIssues, unsupportedIssues };
