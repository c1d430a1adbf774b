// Post step of the madcache report hook (no dependencies). It runs after the post hook and the
// post step of actions/cache (post steps run in reverse order), also when the job failed: a
// regression fails the job, and that is when the table matters most.
'use strict';
const path = require('path');
const { spawnSync } = require('child_process');

const helper = path.join(__dirname, '..', 'lib', 'madcache_gha.py');
const env = Object.assign({}, process.env, {
  MADCACHE_GHA_IN_PATH: process.env.INPUT_PATH || '.madcache',
  MADCACHE_GHA_IN_PR_COMMENT: process.env['INPUT_PR-COMMENT'] || 'false',
  MADCACHE_GHA_IN_GITHUB_TOKEN: process.env['INPUT_GITHUB-TOKEN'] || '',
});
const proc = spawnSync('python3', [helper, 'report'], { env, stdio: 'inherit' });
if (proc.error) {
  console.log(`::warning title=madcache::could not run python3 ${helper} report: ${proc.error.message}`);
} else if (proc.status !== 0) {
  console.log(`::warning title=madcache::${helper} report exited with ${proc.status}`);
}
