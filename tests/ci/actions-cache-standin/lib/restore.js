// Stand-in for actions/cache/restore@v4 (tests only).
'use strict';
const { load, restore } = require('./common');
const core = load('@actions/core');
const cache = load('@actions/cache');

restore(core, cache, {
  key: (key) => core.setOutput('cache-primary-key', key),
  matched: (matched) => core.setOutput('cache-matched-key', matched),
}).catch((err) => core.setFailed(err.message));
