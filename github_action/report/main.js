// Main step of the madcache report hook: nothing to do now; the work is in post.js.
'use strict';
