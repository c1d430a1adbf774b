// Post step of the madcache post hook (no dependencies). Post steps run in reverse order,
// so this one runs just before the post step of actions/cache@v4 that the madcache action
// used earlier: `madcache_gha.py post` sets an unchanged cache aside so nothing is uploaded.
'use strict';
const path = require('path');
const { spawnSync } = require('child_process');

const helper = path.join(__dirname, '..', 'lib', 'madcache_gha.py');
const env = Object.assign({}, process.env, {
  MADCACHE_GHA_IN_PATH: process.env.INPUT_PATH || '.madcache',
});
const proc = spawnSync('python3', [helper, 'post'], { env, stdio: 'inherit' });
if (proc.error) {
  console.log(`::warning title=madcache::could not run python3 ${helper} post: ${proc.error.message}`);
} else if (proc.status !== 0) {
  console.log(`::warning title=madcache::${helper} post exited with ${proc.status}`);
}
