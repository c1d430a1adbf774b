// Main step of the madcache post hook: nothing to do now; the work is in post.js.
'use strict';
