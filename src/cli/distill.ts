// llmopt distill --teacher T --student S --data FILE|NAME -o OUT: knowledge distillation (the student
// trained to match the teacher's token distributions), with periodic eval perplexity, atomic
// checkpoints and --resume; writes a plain Hugging Face checkpoint plus llmopt-report.json.

import chalk from 'chalk';
import type { Command } from 'commander';
import { LOSS_KINDS, runDistill, type DistillPlan, type DistillReport, type RequestedSettings } from '../compress/distill/index.js';
import { LlmoptError } from '../errors.js';
import { openDevice, parseDTypeFlag, type OpenedDevice } from './device.js';
import { formatFloat, formatInt } from './format.js';
import { createProgress, type Progress } from './progress.js';

interface DistillFlags {
  teacher: string;
  student: string;
  data: string;
  output: string;
  tokens?: string;
  steps?: string;
  seqLen?: string;
  batch?: string;
  gradAccum?: string;
  lr?: string;
  warmup?: string;
  weightDecay?: string;
  clipGrad?: string;
  seed?: string;
  loss?: string;
  temperature?: string;
  alpha?: string;
  teacherTopk?: string;
  evalData?: string;
  evalEvery?: string;
  evalSeqLen?: string;
  evalMaxTokens?: string;
  saveEvery?: string;
  resume?: boolean;
  force?: boolean;
  device: string;
  dtype?: string;
  json?: boolean;
}

const NUMBER = /^\s*[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?\s*$/i;

/** A flag's number (1e-3 and 2e6 allowed); range checks happen in the library with the flag's name. */
function numberFlag(flag: string, value: string | undefined, integer = false): number | undefined {
  if (value === undefined) return undefined;
  const n = NUMBER.test(value) ? Number(value) : NaN;
  if (!Number.isFinite(n) || (integer && !Number.isSafeInteger(n))) throw new LlmoptError(`${flag} ${JSON.stringify(value)}: expected ${integer ? 'an integer' : 'a number'}`);
  return n;
}

const LOSS_NAMES: Record<string, string> = { kl: 'forward KL(teacher ‖ student)', 'reverse-kl': 'reverse KL(student ‖ teacher)', 'skew-kl': 'skew KL(teacher ‖ 0.1·teacher + 0.9·student)' };

const lrText = (x: number): string => x.toExponential(2).replace(/\.?0+e/, 'e');

function planLines(p: DistillPlan): string[] {
  const s = p.settings;
  const perStep = s.batch * s.grad_accum * s.seq_len;
  const total = s.steps * perStep;
  const lines = [
    `teacher    ${p.teacher.paths.dir} (${p.teacher.spec.architecture}, ${formatInt(p.teacher.parameters)} parameters)`,
    `student    ${p.student.paths.dir} (${p.student.spec.architecture}, ${formatInt(p.student.parameters)} parameters)`,
    `data       ${p.data.description}: ${formatInt(p.data.tokens.length)} tokens${p.data.records !== undefined ? ` from ${formatInt(p.data.records)} records` : ''}; ${formatInt(p.windowsPerEpoch)} windows of ${s.seq_len} per epoch`,
    `budget     ${formatInt(s.steps)} steps × ${s.batch * s.grad_accum} windows (batch ${s.batch} × accumulation ${s.grad_accum}) × ${s.seq_len} tokens = ${formatInt(total)} tokens (${(total / (p.windowsPerEpoch * s.seq_len)).toFixed(2)} epochs), seed ${s.seed}`,
    `optimizer  AdamW, lr ${lrText(s.lr)}${p.lrSource === 'default rule' ? ` (default for ${formatInt(p.student.parameters)} parameters)` : ''}, warmup ${s.warmup}, cosine to 10%, betas ${s.beta1}/${s.beta2}, weight decay ${s.weight_decay}, clip ${s.clip_grad > 0 ? s.clip_grad : 'off'}`,
    s.alpha === 1
      ? 'loss       cross-entropy on the next token only (--alpha 1: the teacher is not run)'
      : `loss       ${LOSS_NAMES[s.loss]}, temperature ${s.temperature}${s.alpha > 0 ? `, + ${s.alpha} × cross-entropy` : ''}; teacher ${s.teacher_topk > 0 ? `top-${s.teacher_topk} logits + log-sum-exp` : 'full logits'}`,
    `device     ${p.deviceName}, ${p.dtype}`,
  ];
  if (p.evalProtocol) {
    const e = p.evalProtocol;
    lines.push(`eval       ${e.name} on ${e.file}: ${formatInt(e.windows)} windows, ${formatInt(e.tokens_scored)} tokens scored`);
  }
  if (p.startStep > 0) lines.push(`resume     from step ${formatInt(p.startStep)} of ${formatInt(s.steps)}`);
  return lines;
}

function summaryLines(r: DistillReport): string[] {
  const lines: string[] = [];
  const first = r.curve[0];
  const last = r.curve.at(-1);
  if (first && last) lines.push(`loss       step ${first.step} ${formatFloat(first.loss)} → step ${last.step} ${chalk.bold(formatFloat(last.loss))}`);
  if (r.eval) {
    const pts = r.eval.points;
    const start = pts[0];
    const end = pts.at(-1);
    if (r.eval.teacher) lines.push(`eval ppl   teacher ${formatFloat(r.eval.teacher.ppl)}`);
    if (start && end) lines.push(`           student step ${start.step} ${formatFloat(start.ppl)} → step ${end.step} ${chalk.bold(formatFloat(end.ppl))} (${r.eval.protocol.name}, ${formatInt(r.eval.protocol.tokens_scored)} tokens)`);
  }
  const t = r.timings_s;
  lines.push(
    `time       ${t.total.toFixed(1)} s wall: ${t.train.toFixed(1)} s training (${formatInt(Math.round(r.tokens_per_s))} tokens/s), ${t.eval.toFixed(1)} s eval, ${(t.checkpoints + t.write).toFixed(1)} s writing`,
    `output     ${r.output.path} (${r.output.files.join(', ')}; ${r.output.dtypes.join(', ')})`,
  );
  return lines;
}

async function distillCommand(flags: DistillFlags, toolVersion: string): Promise<void> {
  const requested: RequestedSettings = {
    steps: numberFlag('--steps', flags.steps, true),
    tokens: numberFlag('--tokens', flags.tokens, true),
    seqLen: numberFlag('--seq-len', flags.seqLen, true),
    batch: numberFlag('--batch', flags.batch, true),
    gradAccum: numberFlag('--grad-accum', flags.gradAccum, true),
    lr: numberFlag('--lr', flags.lr),
    warmup: numberFlag('--warmup', flags.warmup, true),
    weightDecay: numberFlag('--weight-decay', flags.weightDecay),
    clipGrad: numberFlag('--clip-grad', flags.clipGrad),
    seed: numberFlag('--seed', flags.seed, true),
    loss: flags.loss,
    temperature: numberFlag('--temperature', flags.temperature),
    alpha: numberFlag('--alpha', flags.alpha),
    teacherTopK: numberFlag('--teacher-topk', flags.teacherTopk, true),
  };
  // Checked now, although the device opens only after every input check.
  if (!['cpu', 'cuda', 'auto'].includes(flags.device)) throw new LlmoptError(`--device ${JSON.stringify(flags.device)}: unknown device; use cpu, cuda or auto`);
  parseDTypeFlag(flags.dtype);
  const out = flags.json ? process.stderr : process.stdout;
  let opened: OpenedDevice | undefined;
  let progress: Progress | undefined;
  let totalSteps = 0;
  const log = (line: string) => (progress ? progress.log(line) : process.stderr.write(`${line}\n`));
  try {
    const report = await runDistill({
      teacher: flags.teacher,
      student: flags.student,
      data: flags.data,
      output: flags.output,
      requested,
      evalData: flags.evalData,
      evalEvery: numberFlag('--eval-every', flags.evalEvery, true),
      evalSeqLen: numberFlag('--eval-seq-len', flags.evalSeqLen, true),
      evalMaxTokens: numberFlag('--eval-max-tokens', flags.evalMaxTokens, true),
      saveEvery: numberFlag('--save-every', flags.saveEvery, true),
      resume: flags.resume ?? false,
      overwrite: flags.force ?? false,
      device: () => {
        opened = openDevice(flags.device, flags.dtype);
        return { device: opened.device, name: opened.gpu !== undefined ? `${opened.name} (${opened.gpu})` : opened.name };
      },
      toolVersion,
      events: {
        onWarning: (line) => process.stderr.write(chalk.yellow(`warning: ${line}`) + '\n'),
        onPlan: (plan) => {
          totalSteps = plan.settings.steps;
          out.write(`${planLines(plan).join('\n')}\n`);
          const perStep = plan.settings.batch * plan.settings.grad_accum * plan.settings.seq_len;
          progress = createProgress('distill', totalSteps * perStep);
          if (plan.startStep > 0) progress.update(plan.startStep * perStep, 0);
        },
        onStep: (r, p) => progress?.update(p.tokens, p.tokensPerSecond, `step ${r.step}/${totalSteps} loss ${formatFloat(r.loss, 4)} lr ${lrText(r.lr)}`),
        onEval: (e, who) => log(who === 'teacher' ? `eval       teacher ppl ${formatFloat(e.ppl)}` : `eval       step ${e.step}: ppl ${formatFloat(e.ppl)}`),
        onCheckpoint: (step, s) => log(`checkpoint step ${step} (${s.toFixed(2)} s)`),
      },
    });
    progress?.stop();
    progress = undefined;
    process.stdout.write(flags.json ? `${JSON.stringify(report, null, 2)}\n` : `${summaryLines(report).join('\n')}\n`);
  } finally {
    progress?.stop();
    opened?.close();
  }
}

export function registerDistill(program: Command, toolVersion: string): void {
  program
    .command('distill')
    .description('knowledge distillation: train --student to match --teacher\'s token distributions → a Hugging Face checkpoint')
    .requiredOption('--teacher <model>', 'teacher checkpoint (folder or .safetensors); run in inference mode')
    .requiredOption('--student <model>', 'student checkpoint to train (e.g. the output of llmopt prune); same tokenizer as the teacher')
    .requiredOption('--data <file|name>', 'training text: a .txt file, a .jsonl file with a "text" field, or a built-in set (moby-dick)')
    .requiredOption('-o, --output <dir>', 'output folder (replaced atomically at each checkpoint and at the end)')
    .option('--tokens <n>', 'training budget in tokens (rounded up to whole steps); default: one epoch of --data')
    .option('--steps <n>', 'training budget in optimizer steps (instead of --tokens)')
    .option('--seq-len <l>', 'tokens per training window (default min(512, max_position_embeddings))')
    .option('--batch <b>', 'windows per micro-batch (default 8)')
    .option('--grad-accum <k>', 'micro-batches per optimizer step (default 1)')
    .option('--lr <x>', 'peak learning rate (default 1e-4 · (1e9 / student parameters)^(1/3), clamped to [1e-5, 3e-3])')
    .option('--warmup <n>', 'linear warmup steps (default 5% of the steps, at most 100); then cosine decay to 10% of --lr')
    .option('--weight-decay <x>', 'AdamW weight decay, not on norms and biases (default 0)')
    .option('--clip-grad <x>', 'global gradient-norm limit; 0 = off (default 1)')
    .option('--seed <s>', 'seeds the order and boundaries of the training windows (default 0)')
    .option('--loss <kind>', `distillation loss: ${LOSS_KINDS.join(', ')} (default kl: forward KL(teacher ‖ student))`)
    .option('--temperature <t>', 'softmax temperature of both distributions; the term is scaled by T² (default 1)')
    .option('--alpha <a>', 'weight of the hard-label cross-entropy: loss = (1−a)·T²·KD + a·CE (default 0; 1 = plain fine-tuning)')
    .option('--teacher-topk <k>', "keep only the teacher's top-K logits per token plus its log-sum-exp (the rest of its mass is one exact bucket)")
    .option('--eval-data <file>', 'text file to measure the student\'s perplexity on (chunksN) at step 0, every --eval-every steps, and at the end')
    .option('--eval-every <n>', 'eval every N steps (needs --eval-data)')
    .option('--eval-seq-len <l>', 'eval window (default --seq-len)')
    .option('--eval-max-tokens <n>', 'score only the first N tokens of --eval-data')
    .option('--save-every <n>', 'checkpoint every N steps; 0 = only at the end (default 1000)')
    .option('--resume', 'continue from the checkpoint in the output folder (flags left out take its values)')
    .option('--force', 'replace an existing output folder')
    .option('--device <kind>', 'cpu, cuda, or auto (the GPU when CUDA is usable)', 'auto')
    .option('--dtype <d>', 'GPU compute dtype of both models: bf16 (default on cuda), fp16, fp32; masters, gradients and AdamW moments are fp32 always')
    .option('--json', 'print the report (llmopt-report.json) as one JSON object on stdout; the rest goes to stderr')
    .action(async (flags: DistillFlags) => {
      await distillCommand(flags, toolVersion);
    });
}
