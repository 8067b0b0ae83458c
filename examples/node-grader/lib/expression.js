'use strict';
// calculate_output of multi graders, parsed by hand (never eval): + - * / ^ ( ) with the
// usual precedence (^ is power, right-associative, binds tighter than unary minus),
// numbers, sub-grader names, and min max abs floor ceil exp sqrt log.

const MAX_LENGTH = 4096;
const MAX_TOKENS = 512;
const MAX_DEPTH = 64;
const TOKEN = /\s*(?:(\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|([A-Za-z_][A-Za-z0-9_]*)|(\S))/y;

class ExpressionSyntaxError extends Error {}
class ExpressionError extends Error {}

const FUNCTIONS = {
  min: [(...a) => Math.min(...a), 1, Infinity],
  max: [(...a) => Math.max(...a), 1, Infinity],
  abs: [Math.abs, 1, 1],
  floor: [Math.floor, 1, 1],
  ceil: [Math.ceil, 1, 1],
  exp: [Math.exp, 1, 1],
  sqrt: [Math.sqrt, 1, 1],
  log: [Math.log, 1, 1],
};

function tokenize(text) {
  const tokens = [];
  TOKEN.lastIndex = 0;
  while (TOKEN.lastIndex < text.length) {
    const start = TOKEN.lastIndex;
    const match = TOKEN.exec(text);
    if (!match) break; // only whitespace is left
    const position = match.index + match[0].length - (match[1] || match[2] || match[3]).length;
    if (match[1] !== undefined) tokens.push(['number', match[1], position]);
    else if (match[2] !== undefined) tokens.push(['name', match[2], position]);
    else if ('+-*/^(),'.includes(match[3])) tokens.push(['op', match[3], position]);
    else throw new ExpressionSyntaxError(`unexpected character '${match[3]}' at position ${position}`);
    if (TOKEN.lastIndex === start) break;
  }
  if (tokens.length > MAX_TOKENS) throw new ExpressionSyntaxError(`expression has more than ${MAX_TOKENS} tokens`);
  tokens.push(['end', '', text.length]);
  return tokens;
}

function checked(name, fn) {
  return (...args) => {
    const result = fn(...args);
    if (!Number.isFinite(result)) throw new ExpressionError(`${name}(${args.join(', ')}) is not a finite number`);
    return result;
  };
}

function parse(text, names) {
  if (text.length > MAX_LENGTH) throw new ExpressionSyntaxError(`expression is longer than ${MAX_LENGTH} characters`);
  if (!text.trim()) throw new ExpressionSyntaxError('expression is empty');
  const tokens = tokenize(text);
  let index = 0;
  let depth = 0;
  const peek = () => tokens[index];
  const isOp = (value) => peek()[0] === 'op' && peek()[1] === value;
  const describe = (token) => (token[0] === 'end' ? 'end of expression' : `'${token[1]}'`);
  const nest = () => {
    depth += 1;
    if (depth > MAX_DEPTH) throw new ExpressionSyntaxError(`expression nests deeper than ${MAX_DEPTH} levels`);
  };
  const expect = (value) => {
    const token = tokens[index++];
    if (token[0] !== 'op' || token[1] !== value) {
      throw new ExpressionSyntaxError(`expected '${value}' at position ${token[2]}, found ${describe(token)}`);
    }
  };

  function expr() {
    let node = term();
    while (isOp('+') || isOp('-')) {
      const op = tokens[index++][1];
      const left = node;
      const right = term();
      node = op === '+' ? (v) => left(v) + right(v) : (v) => left(v) - right(v);
    }
    return node;
  }
  function term() {
    let node = unary();
    while (isOp('*') || isOp('/')) {
      const op = tokens[index++][1];
      const left = node;
      const right = unary();
      node = op === '*' ? (v) => left(v) * right(v) : (v) => {
        const denominator = right(v);
        if (denominator === 0) throw new ExpressionError('division by zero');
        return left(v) / denominator;
      };
    }
    return node;
  }
  function unary() {
    if (isOp('-') || isOp('+')) {
      const op = tokens[index++][1];
      nest();
      const operand = unary();
      depth -= 1;
      return op === '-' ? (v) => -operand(v) : operand;
    }
    return power();
  }
  function power() {
    const base = atom();
    if (!isOp('^')) return base;
    index += 1;
    nest();
    const exponent = unary();
    depth -= 1;
    return (v) => {
      const [b, e] = [base(v), exponent(v)];
      const result = b ** e;
      if (!Number.isFinite(result)) throw new ExpressionError(`${b} ^ ${e} is not a finite real number`);
      return result;
    };
  }
  function atom() {
    const [kind, value, position] = tokens[index++];
    if (kind === 'number') {
      const constant = Number(value);
      if (!Number.isFinite(constant)) throw new ExpressionSyntaxError(`number '${value}' at position ${position} is too large`);
      return () => constant;
    }
    if (kind === 'name') {
      if (isOp('(')) return call(value, position);
      if (!names.has(value)) {
        if (Object.hasOwn(FUNCTIONS, value)) {
          throw new ExpressionSyntaxError(`function '${value}' at position ${position} needs arguments in ( )`);
        }
        throw new ExpressionSyntaxError(`unknown name '${value}' at position ${position}; known: ${[...names].sort().join(', ')}`);
      }
      return (v) => v[value];
    }
    if (kind === 'op' && value === '(') {
      nest();
      const node = expr();
      depth -= 1;
      expect(')');
      return node;
    }
    throw new ExpressionSyntaxError(`expected a number, a name or '(' at position ${position}, found ${describe([kind, value])}`);
  }
  function call(name, position) {
    if (!Object.hasOwn(FUNCTIONS, name)) {
      throw new ExpressionSyntaxError(`unknown function '${name}' at position ${position}; known: ${Object.keys(FUNCTIONS).sort().join(', ')}`);
    }
    const [fn, low, high] = FUNCTIONS[name];
    expect('(');
    nest();
    const args = [expr()];
    while (isOp(',')) {
      index += 1;
      args.push(expr());
    }
    depth -= 1;
    expect(')');
    if (args.length < low || args.length > high) {
      throw new ExpressionSyntaxError(`${name}() at position ${position} takes ${low === high ? low : `at least ${low}`} argument(s), got ${args.length}`);
    }
    const safe = checked(name, fn);
    return (v) => safe(...args.map((arg) => arg(v)));
  }

  const root = expr();
  if (peek()[0] !== 'end') throw new ExpressionSyntaxError(`unexpected '${peek()[1]}' at position ${peek()[2]}`);
  return (variables) => {
    const result = root(variables);
    if (!Number.isFinite(result)) throw new ExpressionError(`calculate_output gave ${result}, not a finite number`);
    return result;
  };
}

module.exports = { parse, ExpressionSyntaxError, ExpressionError };
