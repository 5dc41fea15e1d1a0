// Validates AsyncAPI documents with the AsyncAPI parser (the one the AsyncAPI CLI and Studio use).
// Usage: node tests/asyncapi/validate.mjs FILE...
// Prints one JSON line per file: {file, valid, diagnostics: [{severity, code, message, path}],
// channels: {id: address}, operations: {id: [action, channel address]}, payloadFiles: [...]}.
// Exits 1 when a file has an error-level diagnostic or cannot be parsed.
import { Parser, fromFile } from '@asyncapi/parser';

const SEVERITY = ['error', 'warning', 'information', 'hint'];

const parser = new Parser();
let failed = false;
for (const file of process.argv.slice(2)) {
  const { document, diagnostics } = await fromFile(parser, file).parse();
  const listed = diagnostics.map((d) => ({
    severity: SEVERITY[d.severity] ?? String(d.severity),
    code: String(d.code),
    message: d.message,
    path: d.path.join('/'),
  }));
  const valid = document !== undefined && !listed.some((d) => d.severity === 'error');
  failed ||= !valid;
  const report = { file, valid, diagnostics: listed, channels: {}, operations: {} };
  if (document !== undefined) {
    for (const channel of document.channels()) {
      report.channels[channel.id()] = channel.address();
    }
    for (const operation of document.operations()) {
      report.operations[operation.id()] = [operation.action(), operation.channels().all().map((c) => c.address())];
    }
  }
  console.log(JSON.stringify(report));
}
process.exit(failed ? 1 : 0);
