#!/usr/bin/env node
// Recovery after pruning (issue 6, must-show 2): prune stories260K (--kv-heads 0.25 --mlp 0.25),
// then train the pruned model for the same token budget two ways — distillation from stories260K
// (forward KL, --alpha 0) and plain cross-entropy fine-tuning (--alpha 1) — with everything else
// equal, and report held-out perplexity of teacher, pruned, distilled and CE-finetuned.
//
// Data: ../shared/data/tinystories-valid.txt is split at the paragraph break nearest its middle.
// The second half is held out: it is only ever scored (chunks512, the README's protocol), never
// trained on or used to pick settings. The first half is the training text, except its last ~10%
// (cut at a paragraph break), which is the validation text the learning-rate search scores. Both
// arms search the same learning rates on the same validation text and keep their best.
//
// The held-out half holds all of the file's mojibake (`â€œ`-style sequences, byte-fallback tokens;
// the first half has none), so each model is also scored on the held-out paragraphs that are plain
// ASCII (heldout-ascii.txt, chunks512): that column shows what the comparison is on clean text.
//
// Held-out scoring also runs the teacher as `eval --baseline`, so every row has its mean
// KL(teacher ‖ model) and top-1 agreement with the teacher besides its perplexity.
// `--mix A` adds one more row: distillation with `--alpha A` (KD + A·CE) at the distill arm's best
// learning rate (not searched on its own; outside the equal-search comparison).
//
// Run after `npm run build`:
//   node bench/distill-recovery.js [--tokens N] [--lrs 1e-3,3e-3] [--seq-len 256] [--batch 8]
//                                  [--device cpu] [--mix A] [--keep DIR]
// With --keep DIR the work folder is kept, and a later run with the same DIR reuses each training
// run whose report shows the same student weights and settings (so the table can be re-scored).
// Writes bench/results/<date>-distill-recovery.json and prints the table. On the GPU machine, with
// the bundled CLI (scripts/gpu/bundle.sh scripts/gpu/llmopt-cli.ts) and the data copied there:
//   node bench/distill-recovery.js --device cuda --cli .gpu/cli/bin/llmopt.mjs \
//     --model .gpu/data/stories260K --text .gpu/data/tinystories-valid.txt --results $OUT

import { execSync, spawnSync } from 'node:child_process';
import { cpus, loadavg, tmpdir } from 'node:os';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const shared = path.resolve(root, '../shared');

function flag(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : fallback;
}
const teacher = path.resolve(flag('--model', path.join(shared, 'models/stories260K')));
const source = path.resolve(flag('--text', path.join(shared, 'data/tinystories-valid.txt')));
const cli = path.resolve(flag('--cli', path.join(root, 'bin/llmopt.js')));
const resultsDir = path.resolve(flag('--results', path.join(root, 'bench/results')));
const tokens = Number(flag('--tokens', '1000000'));
const lrs = flag('--lrs', '1e-3,3e-3').split(',').map(Number);
const seqLen = Number(flag('--seq-len', '256'));
const batch = Number(flag('--batch', '8'));
const device = flag('--device', 'cpu');
const keep = flag('--keep');
const mix = flag('--mix') !== undefined ? Number(flag('--mix')) : undefined;
const EVAL_WINDOW = 512;
const CURVE_COLUMNS = ['step', 'tokens', 'lr', 'loss', 'distill', 'ce', 'grad_norm'];

const work = keep ?? mkdtempSync(path.join(tmpdir(), 'llmopt-distill-recovery-'));
mkdirSync(work, { recursive: true });
const commands = [];

/** Runs the CLI; returns parsed --json stdout. Throws with stderr on failure. */
function commandLine(args) {
  return `node ${path.relative(root, cli)} ${args.map((a) => (a.startsWith(work) ? `<work>${a.slice(work.length)}` : a.startsWith(shared) ? `../shared${a.slice(shared.length)}` : a)).join(' ')}`;
}

function llmopt(args) {
  const line = commandLine(args);
  process.stderr.write(`$ ${line}\n`);
  const t0 = performance.now();
  const r = spawnSync(process.execPath, [cli, ...args, '--json'], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 28 });
  const wall = (performance.now() - t0) / 1000;
  if (r.status !== 0) throw new Error(`${line}: exit ${r.status}`);
  commands.push({ command: line, wall_s: wall });
  return { json: JSON.parse(r.stdout), wall };
}

function gitCommit() {
  try {
    const run = (cmd) => execSync(cmd, { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    return `${run('git rev-parse HEAD')}${run('git status --porcelain --untracked-files=no') !== '' ? ' (with uncommitted changes)' : ''}`;
  } catch {
    return null;
  }
}

/** Index of the "\n\n" paragraph break nearest `at` (the text after it starts a paragraph). */
function breakNear(text, at) {
  const after = text.indexOf('\n\n', at);
  const before = text.lastIndexOf('\n\n', at);
  const best = after < 0 ? before : before < 0 ? after : at - before <= after - at ? before : after;
  return best + 2;
}

const started = performance.now();
const text = readFileSync(source, 'utf8');
const half = breakNear(text, Math.floor(text.length / 2));
const trainPart = text.slice(0, half);
const valCut = breakNear(trainPart, Math.floor(trainPart.length * 0.9));
const files = { train: path.join(work, 'train.txt'), val: path.join(work, 'val.txt'), heldout: path.join(work, 'heldout.txt'), heldoutAscii: path.join(work, 'heldout-ascii.txt') };
writeFileSync(files.train, trainPart.slice(0, valCut));
writeFileSync(files.val, trainPart.slice(valCut));
writeFileSync(files.heldout, text.slice(half));
const heldoutParagraphs = text.slice(half).split('\n\n');
const asciiParagraphs = heldoutParagraphs.filter((p) => /^[\x00-\x7f]*$/.test(p));
writeFileSync(files.heldoutAscii, asciiParagraphs.join('\n\n'));
const split = {
  source: 'tinystories-valid.txt',
  train_chars: [0, valCut],
  val_chars: [valCut, half],
  heldout_chars: [half, text.length],
  heldout_ascii: `${asciiParagraphs.length} of the held-out half's ${heldoutParagraphs.length} paragraphs (those without a non-ASCII character)`,
  non_ascii_chars: { train_and_val: [...trainPart].filter((c) => c > '\x7f').length, heldout: [...text.slice(half)].filter((c) => c > '\x7f').length },
};

try {
  // 1. Prune.
  const pruned = path.join(work, 'pruned');
  const prune = llmopt(['prune', teacher, '--kv-heads', '0.25', '--mlp', '0.25', '--allow-indivisible-heads', '-o', pruned, '--device', device, '--force']);

  // 2. Held-out perplexity of a model (chunks512 over the whole held-out half), against the teacher.
  const heldout = (model) => {
    const r = llmopt(['eval', model, '--data', files.heldout, '--seq-len', String(EVAL_WINDOW), '--device', device, ...(model === teacher ? [] : ['--baseline', teacher])]);
    const ascii = llmopt(['eval', model, '--data', files.heldoutAscii, '--seq-len', String(EVAL_WINDOW), '--device', device]);
    const m = r.json.metrics;
    return {
      ppl: m.ppl,
      kld_mean: m.kld_mean ?? 0,
      top1: m.top1 ?? 1,
      tokens_scored: r.json.protocol.tokens_scored,
      protocol: r.json.protocol.name,
      ascii_ppl: ascii.json.metrics.ppl,
      ascii_tokens_scored: ascii.json.protocol.tokens_scored,
    };
  };
  const teacherEval = heldout(teacher);
  const prunedEval = heldout(pruned);
  const prunedSha = createHash('sha256').update(readFileSync(path.join(pruned, 'model.safetensors'))).digest('hex');

  // 3. Both arms, the same learning-rate grid, picked on the validation text.
  const train = (name, lr, alpha) => {
    const out = path.join(work, name);
    const args = [
      'distill', '--teacher', teacher, '--student', pruned, '--data', files.train, '-o', out, '--force',
      '--tokens', String(tokens), '--seq-len', String(seqLen), '--batch', String(batch), '--lr', String(lr),
      '--eval-data', files.val, '--eval-seq-len', String(EVAL_WINDOW), '--save-every', '0', '--device', device, '--alpha', String(alpha),
    ];
    const reportFile = path.join(out, 'llmopt-report.json');
    if (keep && existsSync(reportFile)) {
      const old = JSON.parse(readFileSync(reportFile, 'utf8'));
      const s = old.settings;
      if (old.inputs.student.weights[0].sha256 === prunedSha && s.lr === lr && s.alpha === alpha && s.seq_len === seqLen && s.batch === batch && s.steps === Math.ceil(tokens / (batch * seqLen))) {
        process.stderr.write(`reusing ${out} (same student weights and settings)\n`);
        commands.push({ command: commandLine(args), wall_s: old.timings_s.total, reused_from: old.created });
        return { lr, out, val_ppl: old.eval.points.at(-1).ppl, wall_s: old.timings_s.total, report: old };
      }
    }
    const r = llmopt(args);
    return { lr, out, val_ppl: r.json.eval.points.at(-1).ppl, wall_s: r.wall, report: r.json };
  };
  const arms = { distill: [], ce: [] };
  for (const [arm, alpha] of [['distill', 0], ['ce', 1]]) {
    for (const lr of lrs) arms[arm].push(train(`${arm}-lr${lr}`, lr, alpha));
  }
  const best = Object.fromEntries(Object.entries(arms).map(([arm, runs]) => [arm, runs.reduce((a, b) => (b.val_ppl < a.val_ppl ? b : a))]));
  if (mix !== undefined) best.mix = train(`mix${mix}-lr${best.distill.lr}`, best.distill.lr, mix);
  const bestEval = Object.fromEntries(Object.entries(best).map(([arm, run]) => [arm, heldout(run.out)]));

  const gap = (ppl) => (prunedEval.ppl - ppl) / (prunedEval.ppl - teacherEval.ppl);
  const gapAscii = (ppl) => (prunedEval.ascii_ppl - ppl) / (prunedEval.ascii_ppl - teacherEval.ascii_ppl);
  const row = (name, params, ev, extra = {}) => ({
    model: name,
    parameters: params,
    heldout_ppl: ev.ppl,
    gap_recovered: gap(ev.ppl),
    heldout_ascii_ppl: ev.ascii_ppl,
    gap_recovered_ascii: gapAscii(ev.ascii_ppl),
    kld_mean: ev.kld_mean,
    top1: ev.top1,
    ...extra,
  });
  const armName = { distill: 'distilled (forward KL)', ce: 'CE fine-tuned (--alpha 1)', mix: `KD + CE (--alpha ${mix}, distill's lr)` };
  const rep = (arm) => best[arm].report;
  const rows = [
    row('teacher (stories260K)', rep('distill').inputs.teacher.parameters, teacherEval, { val_ppl: rep('distill').eval.teacher.ppl }),
    row('pruned (KV 25% + MLP 25%)', rep('distill').inputs.student.parameters, prunedEval, { val_ppl: rep('distill').eval.points[0].ppl }),
    ...Object.keys(best).map((arm) =>
      row(armName[arm], rep(arm).inputs.student.parameters, bestEval[arm], {
        lr: best[arm].lr,
        tokens: rep(arm).settings.tokens,
        steps: rep(arm).settings.steps,
        epochs: rep(arm).settings.epochs,
        val_ppl: best[arm].val_ppl,
        train_s: rep(arm).timings_s.train,
        wall_s: best[arm].wall_s,
        tokens_per_s: rep(arm).tokens_per_s,
      }),
    ),
  ];

  const date = new Date().toISOString().slice(0, 10);
  const result = {
    what: 'stories260K pruned (--kv-heads 0.25 --mlp 0.25), then distilled vs CE-finetuned at equal tokens; held-out ppl',
    created: new Date().toISOString(),
    machine: { cpus: cpus().length, cpu: cpus()[0]?.model, loadavg: loadavg(), device },
    commit: gitCommit(),
    split,
    eval_protocol: `chunks${EVAL_WINDOW} over the held-out half (${teacherEval.tokens_scored} tokens scored) and over its ASCII-only paragraphs (${teacherEval.ascii_tokens_scored} tokens scored)`,
    settings: { tokens, seq_len: seqLen, batch, lrs, mix: mix ?? null, selection: 'per arm, the lr with the lowest validation ppl (chunks512 on val.txt)' },
    rows,
    lr_search: Object.fromEntries(Object.entries(arms).map(([arm, runs]) => [arm, runs.map((r) => ({ lr: r.lr, val_ppl: r.val_ppl, final_loss: r.report.curve.at(-1).loss, wall_s: r.wall_s }))])),
    curves: Object.fromEntries(
      Object.entries(best).map(([arm, run]) => [
        arm,
        {
          columns: CURVE_COLUMNS,
          curve: run.report.curve.map((p) => CURVE_COLUMNS.map((c) => Number(p[c].toPrecision(6)))),
          evals: run.report.eval.points,
        },
      ]),
    ),
    prune: { parameters: prune.json.parameters, plan: prune.json.plan },
    commands,
    wall_s: (performance.now() - started) / 1000,
    /** Training runs reused from --keep: their own wall time (see commands), not in wall_s. */
    reused_wall_s: commands.filter((c) => c.reused_from !== undefined).reduce((a, c) => a + c.wall_s, 0),
  };
  mkdirSync(resultsDir, { recursive: true });
  const outFile = path.join(resultsDir, `${date}-distill-recovery.json`);
  // One curve point per line: [1, 2048, …] arrays of numbers are not spread over lines.
  writeFileSync(outFile, `${JSON.stringify(result, null, 2).replace(/\[\s+(-?[\d.e+-]+(?:,\s+-?[\d.e+-]+)*)\s+\]/g, (_, xs) => `[${xs.split(/,\s+/).join(', ')}]`)}\n`);

  const f = (x, d = 4) => x.toFixed(d);
  console.log(`\nheld-out ppl: ${result.eval_protocol}; ${tokens.toLocaleString('en-US')}-token budget per arm, seq ${seqLen}, batch ${batch}, device ${device}`);
  console.log('| model | params | held-out ppl | gap recovered | ASCII-only ppl | gap recovered | KL(teacher ‖ model) | top-1 = teacher | val ppl | lr | tokens | train s | tokens/s |');
  console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of rows) {
    const trained = r.lr !== undefined;
    const pct = (x) => (trained ? `${(100 * x).toFixed(1)}%` : '');
    console.log(`| ${r.model} | ${r.parameters.toLocaleString('en-US')} | ${f(r.heldout_ppl)} | ${pct(r.gap_recovered)} | ${f(r.heldout_ascii_ppl)} | ${pct(r.gap_recovered_ascii)} | ${f(r.kld_mean)} | ${(100 * r.top1).toFixed(1)}% | ${f(r.val_ppl)} | ${r.lr ?? ''} | ${r.tokens?.toLocaleString('en-US') ?? ''} | ${trained ? r.train_s.toFixed(0) : ''} | ${trained ? Math.round(r.tokens_per_s).toLocaleString('en-US') : ''} |`);
  }
  console.log('\nlearning-rate search (validation ppl, chunks512 on val.txt):');
  for (const [arm, runs] of Object.entries(result.lr_search)) console.log(`  ${arm}: ${runs.map((r) => `lr ${r.lr} → ${f(r.val_ppl)}`).join(', ')}`);
  console.log(`\nwrote ${path.relative(root, outFile)} (${result.wall_s.toFixed(0)} s)`);
} finally {
  if (!keep) rmSync(work, { recursive: true, force: true });
}
