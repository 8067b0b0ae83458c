'use strict';
// Registered graders, in memory, scoped by tenant: another tenant's id is not found.

const crypto = require('node:crypto');

class GraderError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

class Registry {
  constructor() {
    this.byTenant = new Map();
  }

  graders(tenant) {
    if (!this.byTenant.has(tenant)) this.byTenant.set(tenant, []);
    return this.byTenant.get(tenant);
  }

  create(tenant, name, type, spec) {
    const list = this.graders(tenant);
    if (list.some((g) => g.name === name)) throw new GraderError('ALREADY_EXISTS', `tenant '${tenant}' already has a grader named '${name}'`);
    const grader = { id: `grader-${crypto.randomUUID().replaceAll('-', '')}`, tenant, name, type, spec, created: new Date() };
    list.push(grader);
    return grader;
  }

  get(tenant, id) {
    const grader = this.graders(tenant).find((g) => g.id === id);
    if (!grader) throw new GraderError('NOT_FOUND', `grader '${id}' not found`);
    return grader;
  }

  list(tenant, limit, offset) {
    return [...this.graders(tenant)].reverse().slice(offset, offset + limit); // newest first
  }

  delete(tenant, id) {
    const list = this.graders(tenant);
    const index = list.findIndex((g) => g.id === id);
    if (index < 0) throw new GraderError('NOT_FOUND', `grader '${id}' not found`);
    list.splice(index, 1);
  }
}

module.exports = { Registry, GraderError };
