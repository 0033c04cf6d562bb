#!/usr/bin/env node
// Regenerates polysocket.min.js from polysocket.js with terser (npm ci first).
// Output stays ES3-parseable (ie8 mode keeps reserved-word properties quoted); check-es3.js checks it.
"use strict";
var fs = require("fs");
var path = require("path");
var terser = require("terser");

var dir = __dirname;
var out = process.argv[2] || path.join(dir, "polysocket.min.js");
var src = fs.readFileSync(path.join(dir, "polysocket.js"), "utf8");

terser.minify(src, {
    ecma: 5,
    ie8: true,
    compress: { passes: 2 },
    mangle: true,
    format: { comments: /^!/, ascii_only: true }
}).then(function (result) {
    fs.writeFileSync(out, result.code + "\n");
    console.log("wrote " + out + " (" + result.code.length + " bytes)");
}, function (err) {
    console.error(err);
    process.exit(1);
});
