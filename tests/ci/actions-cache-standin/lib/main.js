// Stand-in for the main step of the all-in-one actions/cache@v4 (tests only).
// Restores like restore.js, and keeps the keys in the action's state for the post step,
// as the real action does (its only output is cache-hit).
'use strict';
const { load, paths, list } = require('./common');
const core = load('@actions/core');
const cache = load('@actions/cache');

async function run() {
  const key = core.getInput('key', { required: true });
  const restoreKeys = list(core, 'restore-keys');
  const crossOs = core.getBooleanInput('enableCrossOsArchive');
  const failOnMiss = core.getBooleanInput('fail-on-cache-miss');
  const lookupOnly = core.getBooleanInput('lookup-only');
  core.saveState('CACHE_KEY', key);
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
  core.saveState('CACHE_RESULT', matched);
  core.setOutput('cache-hit', String(matched === key));
  core.info(`Cache restored from key: ${matched}`);
}

run().catch((err) => core.setFailed(err.message));
