// Stand-in for the main step of the all-in-one actions/cache@v4 (tests only).
// Restores like restore.js, and keeps the keys in the action's state for the post step,
// as the real action does (its only output is cache-hit).
'use strict';
const { load, restore } = require('./common');
const core = load('@actions/core');
const cache = load('@actions/cache');

restore(core, cache, {
  key: (key) => core.saveState('CACHE_KEY', key),
  matched: (matched) => core.saveState('CACHE_RESULT', matched),
}).catch((err) => core.setFailed(err.message));
