'use strict';
// rft.grader.v1 in Node.js, loading the contract straight from protos/.
//
//   node server.js --port 50060 [--host 127.0.0.1] [--protos ../../protos]
//
// Runs string_check and multi graders, validates specs with field paths, keeps a
// per-tenant registry in memory, and lists the other types as disabled. It is the
// proof that the learner can talk to any grader written against the contract.

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const { fromStruct, toStruct } = require('./lib/struct');
const { KNOWN, SUPPORTED, specIssues, unsupportedIssues } = require('./lib/spec');
const { gradeBatch } = require('./lib/graders');
const { Registry, GraderError } = require('./lib/registry');

const MAX_BATCH_ITEMS = 4096;
const TENANT = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const OPENAI_TYPES = ['string_check', 'text_similarity', 'python', 'score_model', 'label_model', 'multi'];

function option(name, fallback) {
  const index = process.argv.indexOf(`--${name}`);
  return index >= 0 ? process.argv[index + 1] : fallback;
}

function loadService(protosDir) {
  const definition = protoLoader.loadSync(path.join(protosDir, 'rft/grader/v1/grader.proto'), {
    keepCase: true, longs: String, enums: String, defaults: true, oneofs: true, includeDirs: [protosDir],
  });
  return grpc.loadPackageDefinition(definition).rft.grader.v1.GraderService;
}

const registry = new Registry();

function tenantOf(raw) {
  if (!raw) return 'default';
  if (!TENANT.test(raw)) throw new GraderError('INVALID_ARGUMENT', `tenant '${raw.slice(0, 80)}' is invalid`);
  return raw;
}

function runnable(spec) {
  const issues = specIssues(spec);
  if (issues.length) throw new GraderError('INVALID_ARGUMENT', issues.map((i) => `${i.field}: ${i.message}`).join('; '));
  const unsupported = unsupportedIssues(spec);
  if (unsupported.length) throw new GraderError('FAILED_PRECONDITION', unsupported.map((i) => `${i.field}: ${i.message}`).join('; '));
  return spec;
}

function sampleOf(sample) {
  let outputJson = sample.output_json ? fromStruct(sample.output_json) : null;
  const text = sample.output_text.trim();
  if (outputJson === null && text.startsWith('{')) {
    try {
      const parsed = JSON.parse(text);
      if (parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed)) outputJson = parsed;
    } catch { /* not JSON: output_json stays absent */ }
  }
  return { output_text: sample.output_text, output_json: outputJson };
}

function graderMessage(grader) {
  const millis = grader.created.getTime();
  return {
    id: grader.id, tenant: grader.tenant, name: grader.name, type: grader.type, spec: toStruct(grader.spec),
    create_time: { seconds: String(Math.floor(millis / 1000)), nanos: (millis % 1000) * 1e6 },
  };
}

function pageWindow(pageSize, token) {
  if (pageSize < 0) throw new GraderError('INVALID_ARGUMENT', 'page_size must not be negative');
  const limit = Math.min(pageSize || 50, 1000);
  if (!token) return [limit, 0];
  try {
    const offset = JSON.parse(Buffer.from(token, 'base64url').toString()).offset;
    if (Number.isInteger(offset) && offset >= 0) return [limit, offset];
  } catch { /* fall through */ }
  throw new GraderError('INVALID_ARGUMENT', `invalid page_token '${token}'`);
}

const handlers = {
  Grade(request) {
    const tenant = tenantOf(request.tenant);
    if (request.items.length > MAX_BATCH_ITEMS) {
      throw new GraderError('INVALID_ARGUMENT', `items: ${request.items.length} items; at most ${MAX_BATCH_ITEMS} are allowed`);
    }
    let spec;
    if (request.grader === 'grader_id') spec = registry.get(tenant, request.grader_id).spec;
    else if (request.grader === 'spec') spec = fromStruct(request.spec);
    else throw new GraderError('INVALID_ARGUMENT', 'grader: set spec or grader_id');
    runnable(spec);
    const started = process.hrtime.bigint();
    const pairs = request.items.map((item) => ({ sample: sampleOf(item.sample || { output_text: '' }), item: fromStruct(item.item) }));
    const outcomes = gradeBatch(spec, pairs);
    return {
      results: outcomes.map((o) => (o.error
        ? { sub_scores: o.subScores || {}, error: o.error }
        : { score: o.score, passed: o.passed, sub_scores: o.subScores, metrics: {} })),
      grader_type: spec.type,
      grade_seconds: Number(process.hrtime.bigint() - started) / 1e9,
    };
  },

  ValidateGrader(request) {
    tenantOf(request.tenant);
    const spec = fromStruct(request.spec);
    let issues = specIssues(spec);
    if (!issues.length) issues = unsupportedIssues(spec);
    return { valid: issues.length === 0, issues, grader_type: KNOWN.includes(spec.type) ? spec.type : '' };
  },

  RegisterGrader(request) {
    const tenant = tenantOf(request.tenant);
    if (!request.name || request.name.length > 256) throw new GraderError('INVALID_ARGUMENT', 'name: must be 1-256 characters');
    const spec = runnable(fromStruct(request.spec));
    return { grader: graderMessage(registry.create(tenant, request.name, spec.type, spec)) };
  },

  GetGrader(request) {
    return { grader: graderMessage(registry.get(tenantOf(request.tenant), request.grader_id)) };
  },

  ListGraders(request) {
    const tenant = tenantOf(request.tenant);
    const [limit, offset] = pageWindow(request.page_size, request.page_token);
    const graders = registry.list(tenant, limit, offset);
    const next = graders.length < limit ? '' : Buffer.from(JSON.stringify({ offset: offset + graders.length })).toString('base64url');
    return { graders: graders.map(graderMessage), next_page_token: next };
  },

  DeleteGrader(request) {
    registry.delete(tenantOf(request.tenant), request.grader_id);
    return {};
  },

  ListGraderTypes() {
    return {
      types: KNOWN.map((name) => {
        const enabled = SUPPORTED.includes(name);
        return {
          name, enabled, openai_compatible: OPENAI_TYPES.includes(name),
          description: enabled ? `${name} grader.` : `${name} grader. Disabled: not supported by the Node.js implementation.`,
        };
      }),
    };
  },
};

// Unary handlers: a GraderError becomes its status code; anything else is INTERNAL.
function unary(fn) {
  return (call, callback) => {
    try {
      callback(null, fn(call.request));
    } catch (error) {
      const code = error instanceof GraderError ? grpc.status[error.code] : grpc.status.INTERNAL;
      if (!(error instanceof GraderError)) console.error(error);
      callback({ code, details: error.message });
    }
  };
}

function main() {
  const protosDir = path.resolve(option('protos', path.join(__dirname, '..', '..', 'protos')));
  const host = option('host', '127.0.0.1');
  const port = option('port', '50060');
  const server = new grpc.Server({ 'grpc.max_receive_message_length': 64 * 1024 * 1024 });
  server.addService(loadService(protosDir).service, Object.fromEntries(
    Object.entries(handlers).map(([name, fn]) => [name, unary(fn)]),
  ));
  server.bindAsync(`${host}:${port}`, grpc.ServerCredentials.createInsecure(), (error, bound) => {
    if (error) {
      console.error(error.message);
      process.exit(1);
    }
    console.log(`rft node grader listening on ${host}:${bound}`);
  });
  const stop = () => server.tryShutdown(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main();
