// Stand-in for the post step of the all-in-one actions/cache@v4 (tests only).
// Runs at the end of the job when it succeeded (post-if: success()); saves under the
// primary key unless that exact key was restored, like the real action.
'use strict';
const { load, paths } = require('./common');
const core = load('@actions/core');
const cache = load('@actions/cache');

async function run() {
  const key = core.getState('CACHE_KEY') || core.getInput('key');
  const restored = core.getState('CACHE_RESULT');
  if (!key) {
    core.info('Key is not specified; not saving cache.');
    return;
  }
  if (restored && restored === key) {
    core.info(`Cache hit occurred on the primary key ${key}, not saving cache.`);
    return;
  }
  if (!cache.isFeatureAvailable()) {
    core.warning('Cache service is not available (ACTIONS_CACHE_URL is not set)');
    return;
  }
  const chunk = core.getInput('upload-chunk-size');
  const options = chunk ? { uploadChunkSize: Number(chunk) } : {};
  const id = await cache.saveCache(paths(core), key, options, core.getBooleanInput('enableCrossOsArchive'));
  if (id !== -1) {
    core.info(`Cache saved with key: ${key}`);
  }
}

run().catch((err) => core.warning(err.message));
