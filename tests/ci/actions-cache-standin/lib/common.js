// Shared helpers of the stand-in (tests only).
'use strict';
const path = require('path');

function load(name) {
  // node_modules is installed at test time next to package.json (one level up).
  return require(path.join(__dirname, '..', 'node_modules', name));
}

function paths(core) {
  return core
    .getInput('path', { required: true })
    .split('\n')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

function list(core, name) {
  return core
    .getInput(name)
    .split('\n')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

// act's cache server speaks the v1 protocol (ACTIONS_CACHE_URL).
delete process.env.ACTIONS_CACHE_SERVICE_V2;

module.exports = { load, paths, list };
