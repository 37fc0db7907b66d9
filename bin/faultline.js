#!/usr/bin/env node
// The `faultline` command: the compiled CLI (npm install builds dist/).
import '../dist/cli/main.js'
