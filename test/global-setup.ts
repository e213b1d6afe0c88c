// Builds dist/ once per test run: the CLI tests spawn `node bin/llmopt.js`, which runs the compiled code.
// tsc still emits when it finds type errors; those are reported here and fail `npm test` in its
// typecheck step, so a type error elsewhere does not stop unrelated test files from running.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export default function buildOnce(): void {
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  // Incremental, with the build info inside dist/ so that deleting dist/ forces a full build.
  const r = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.build.json', '--incremental', '--tsBuildInfoFile', 'dist/.tsbuildinfo'], {
    cwd: root,
    encoding: 'utf8',
  });
  if (r.status !== 0) {
    process.stderr.write(`global-setup: tsc -p tsconfig.build.json reported errors (dist/ was still emitted):\n${r.stdout}${r.stderr}`);
  }
}
