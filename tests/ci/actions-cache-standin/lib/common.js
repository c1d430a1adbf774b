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

// The restore both restore actions do; `remember` records the primary key and
// the matched key their own way (outputs, or state for a post step).
async function restore(core, cache, remember) {
  const key = core.getInput('key', { required: true });
  const restoreKeys = list(core, 'restore-keys');
  const crossOs = core.getBooleanInput('enableCrossOsArchive');
  const failOnMiss = core.getBooleanInput('fail-on-cache-miss');
  const lookupOnly = core.getBooleanInput('lookup-only');
  remember.key(key);
  if (!cache.isFeatureAvailable()) {
    core.setFailed('Cache service is not available (ACTIONS_CACHE_URL is not set)');
    return;
  }
  const matched = await cache.restoreCache(paths(core), key, restoreKeys, { lookupOnly }, crossOs);
  if (!matched) {
    if (failOnMiss) {
      core.setFailed(`Failed to restore cache entry. Exiting as fail-on-cache-miss is set. Input key: ${key}`);
      return;
    }
    core.info(`Cache not found for input keys: ${[key, ...restoreKeys].join(', ')}`);
    core.setOutput('cache-hit', 'false');
    return;
  }
  remember.matched(matched);
  core.setOutput('cache-hit', String(matched === key));
  core.info(`Cache restored from key: ${matched}`);
}

// act's cache server speaks the v1 protocol (ACTIONS_CACHE_URL).
delete process.env.ACTIONS_CACHE_SERVICE_V2;

module.exports = { load, paths, list, restore };
