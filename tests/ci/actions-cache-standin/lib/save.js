// Stand-in for actions/cache/save@v4 (tests only).
'use strict';
const { load, paths } = require('./common');
const core = load('@actions/core');
const cache = load('@actions/cache');

async function run() {
  const key = core.getInput('key', { required: true });
  const crossOs = core.getBooleanInput('enableCrossOsArchive');
  const chunk = core.getInput('upload-chunk-size');
  const options = chunk ? { uploadChunkSize: Number(chunk) } : {};
  if (!cache.isFeatureAvailable()) {
    core.setFailed('Cache service is not available (ACTIONS_CACHE_URL is not set)');
    return;
  }
  const id = await cache.saveCache(paths(core), key, options, crossOs);
  if (id !== -1) {
    core.info(`Cache saved with key: ${key}`);
  }
}

run().catch((err) => core.setFailed(err.message));
