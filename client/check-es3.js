#!/usr/bin/env node
// Parses each file given as ES3 (what IE6-8 accept) and fails on the first error.
// "allowReserved: never" also refuses reserved words as property names (x.delete, {class: 1}).
"use strict";
var fs = require("fs");
var acorn = require("acorn");

var failed = false;
process.argv.slice(2).forEach(function (file) {
    var src = fs.readFileSync(file, "utf8");
    try {
        acorn.parse(src, { ecmaVersion: 3, allowReserved: "never", sourceType: "script", locations: true });
        // ES3 allows [1,] but old IE counts the hole (length 2): refuse trailing commas everywhere.
        var prev = null;
        var tokens = acorn.tokenizer(src, { ecmaVersion: 3, allowReserved: "never", locations: true });
        for (var tok = tokens.getToken(); tok.type !== acorn.tokTypes.eof; tok = tokens.getToken()) {
            if (prev && prev.type === acorn.tokTypes.comma &&
                    (tok.type === acorn.tokTypes.bracketR || tok.type === acorn.tokTypes.braceR)) {
                throw new Error("trailing comma (" + tok.loc.start.line + ":" + tok.loc.start.column + ")");
            }
            prev = tok;
        }
        console.log("ES3 OK: " + file);
    } catch (err) {
        failed = true;
        console.error("ES3 FAIL: " + file + ": " + err.message);
    }
});
process.exit(failed ? 1 : 0);
