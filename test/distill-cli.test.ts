// `llmopt distill` through the built CLI (test/global-setup.ts builds dist/), on tiny generated
// Llamas with stories260K's tokenizer: bad input exits 1 with one line and writes nothing; a run
// writes a loadable Hugging Face checkpoint + report + training state in the student's dtype; and
// a run killed with SIGKILL after a checkpoint, then resumed, ends with weights byte-identical to
// an uninterrupted run.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { copyFiles, encodeFromFloat32, writeCheckpointTensors, type DType } from '../src/io/index.js';
import { seededRandom } from '../src/random.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const shared = path.resolve(root, '../shared');
const stories = path.join(shared, 'models/stories260K');
const cli = path.join(root, 'bin/llmopt.js');

let tmp: string;
let teacher: string;
let student: string;
let studentBf16: string;
let data: string;
let evalData: string;

/** A random Llama with stories260K's vocabulary and tokenizer (hidden h, n layers). */
function tinyLlama(dir: string, o: { hidden: number; layers: number; heads: number; kvHeads: number; ffn: number; seed: number; dtype?: DType }): string {
  fs.mkdirSync(dir);
  const V = 512;
  const hd = o.hidden / o.heads;
  const r = seededRandom(o.seed);
  const t = (name: string, shape: number[], scale: number, offset = 0) => {
    const data = Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => offset + (r() * 2 - 1) * scale);
    const dtype = o.dtype ?? 'F32';
    return { name, dtype, shape, data: encodeFromFloat32(dtype, data) };
  };
  const tensors = [t('model.embed_tokens.weight', [V, o.hidden], 0.5)];
  for (let l = 0; l < o.layers; l++) {
    const p = `model.layers.${l}`;
    const s = 1 / Math.sqrt(o.hidden);
    tensors.push(
      t(`${p}.input_layernorm.weight`, [o.hidden], 0.1, 1),
      t(`${p}.self_attn.q_proj.weight`, [o.heads * hd, o.hidden], s),
      t(`${p}.self_attn.k_proj.weight`, [o.kvHeads * hd, o.hidden], s),
      t(`${p}.self_attn.v_proj.weight`, [o.kvHeads * hd, o.hidden], s),
      t(`${p}.self_attn.o_proj.weight`, [o.hidden, o.heads * hd], s),
      t(`${p}.post_attention_layernorm.weight`, [o.hidden], 0.1, 1),
      t(`${p}.mlp.gate_proj.weight`, [o.ffn, o.hidden], s),
      t(`${p}.mlp.up_proj.weight`, [o.ffn, o.hidden], s),
      t(`${p}.mlp.down_proj.weight`, [o.hidden, o.ffn], 1 / Math.sqrt(o.ffn)),
    );
  }
  tensors.push(t('model.norm.weight', [o.hidden], 0.1, 1));
  writeCheckpointTensors(dir, tensors);
  const config = {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    vocab_size: V,
    hidden_size: o.hidden,
    intermediate_size: o.ffn,
    num_hidden_layers: o.layers,
    num_attention_heads: o.heads,
    num_key_value_heads: o.kvHeads,
    max_position_embeddings: 64,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    hidden_act: 'silu',
    tie_word_embeddings: true,
    bos_token_id: 1,
    eos_token_id: 2,
    torch_dtype: o.dtype === 'BF16' ? 'bfloat16' : 'float32',
  };
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config, null, 2));
  copyFiles(stories, dir, ['tokenizer.json', 'tokenizer_config.json', 'generation_config.json']);
  return dir;
}

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(tmpdir(), 'llmopt-distill-cli-'));
  teacher = tinyLlama(path.join(tmp, 'teacher'), { hidden: 32, layers: 2, heads: 4, kvHeads: 2, ffn: 48, seed: 1 });
  student = tinyLlama(path.join(tmp, 'student'), { hidden: 16, layers: 1, heads: 2, kvHeads: 1, ffn: 24, seed: 2 });
  studentBf16 = tinyLlama(path.join(tmp, 'student-bf16'), { hidden: 16, layers: 1, heads: 2, kvHeads: 1, ffn: 24, seed: 3, dtype: 'BF16' });
  const text = fs.readFileSync(path.join(shared, 'data/tinystories-valid.txt'), 'utf8');
  data = path.join(tmp, 'train.txt');
  fs.writeFileSync(data, text.slice(0, 12_000));
  evalData = path.join(tmp, 'eval.txt');
  fs.writeFileSync(evalData, text.slice(300_000, 306_000));
});
afterAll(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

function llmopt(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cli, ...args], { cwd: tmp, encoding: 'utf8', env: { ...process.env, FORCE_COLOR: '0' }, timeout: 90_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const base = (out: string, ...more: string[]) => ['distill', '--teacher', teacher, '--student', student, '--data', data, '-o', out, '--device', 'cpu', ...more];

/** Exit 1, one "error: …" line matching `message`, and nothing written. */
function expectBadInput(args: string[], message: RegExp): void {
  const before = fs.readdirSync(tmp).sort();
  const r = llmopt(...args);
  expect(r.code, r.stderr).toBe(1);
  expect(r.stderr.trim().split('\n')).toHaveLength(1);
  expect(r.stderr).toMatch(/^error: /);
  expect(r.stderr).toMatch(message);
  expect(fs.readdirSync(tmp).sort()).toEqual(before);
}

describe('bad input → exit 1, one line, nothing written', () => {
  const out = () => path.join(tmp, 'never');

  test('teacher and student vocabularies differ', () => {
    expectBadInput(['distill', '--teacher', teacher, '--student', path.join(root, 'test/fixtures/arch/qwen2'), '--data', data, '-o', out()], /--student .*qwen2: vocab_size 112 differs from the teacher's 512; distillation needs one shared tokenizer/);
  });

  test('same vocab_size, other tokenizer', () => {
    const other = path.join(tmp, 'other-tok');
    fs.cpSync(student, other, { recursive: true });
    const tok = JSON.parse(fs.readFileSync(path.join(other, 'tokenizer.json'), 'utf8'));
    const vocab = tok.model.vocab as Record<string, number>;
    const [a, b] = Object.keys(vocab).filter((k) => vocab[k]! > 300).slice(0, 2) as [string, string];
    [vocab[a], vocab[b]] = [vocab[b]!, vocab[a]!];
    fs.writeFileSync(path.join(other, 'tokenizer.json'), JSON.stringify(tok));
    try {
      expectBadInput(['distill', '--teacher', teacher, '--student', other, '--data', data, '-o', out()], /its tokenizer differs from the teacher's \(token id \d+ is .*\); distillation needs one shared tokenizer/);
    } finally {
      fs.rmSync(other, { recursive: true });
    }
  });

  test('missing, empty or too little data', () => {
    expectBadInput(base(out()).map((a) => (a === data ? path.join(tmp, 'nope.txt') : a)), /--data .*nope\.txt: no such file, and not a built-in set \(built-in: moby-dick\)/);
    const empty = path.join(tmp, 'empty.txt');
    fs.writeFileSync(empty, '\n\n');
    const short = path.join(tmp, 'short.txt');
    fs.writeFileSync(short, 'Once upon a time, there was a cat.');
    try {
      expectBadInput(base(out()).map((a) => (a === data ? empty : a)), /--data .*empty\.txt: the file is empty/);
      expectBadInput(base(out(), '--seq-len', '32').map((a) => (a === data ? short : a)), /--data .*short\.txt: \d+ tokens are fewer than one training window of 33 \(--seq-len 32 \+ the next token\)/);
      expectBadInput(base(out(), '--eval-data', short, '--seq-len', '32'), /--eval-data .*short\.txt: \d+ tokens are fewer than one 32-token eval window/);
    } finally {
      fs.rmSync(empty);
      fs.rmSync(short);
    }
  });

  test('--resume without a checkpoint', () => {
    expectBadInput(base(out(), '--resume'), /--resume: .*never does not exist, so there is no checkpoint to resume from/);
    const plain = path.join(tmp, 'plain');
    fs.mkdirSync(plain);
    try {
      expectBadInput(base(plain, '--resume'), /--resume: .*plain has no train-state\/state\.json/);
    } finally {
      fs.rmSync(plain, { recursive: true });
    }
  });

  test('quantized checkpoints are refused', () => {
    const q = path.join(tmp, 'quantized');
    fs.cpSync(student, q, { recursive: true });
    const cfg = JSON.parse(fs.readFileSync(path.join(q, 'config.json'), 'utf8'));
    cfg.quantization_config = { quant_method: 'compressed-tensors', format: 'float-quantized' };
    fs.writeFileSync(path.join(q, 'config.json'), JSON.stringify(cfg));
    try {
      expectBadInput(['distill', '--teacher', teacher, '--student', q, '--data', data, '-o', out()], /--student .*quantized: a quantized checkpoint \(config\.json has quantization_config\)/);
    } finally {
      fs.rmSync(q, { recursive: true });
    }
  });

  test('bad flag values', () => {
    expectBadInput(base(out(), '--alpha', '2'), /--alpha 2: expected a weight in \[0, 1\]/);
    expectBadInput(base(out(), '--lr', 'fast'), /--lr "fast": expected a number/);
    expectBadInput(base(out(), '--loss', 'mse'), /--loss "mse": expected one of kl, reverse-kl, skew-kl/);
    expectBadInput(base(out(), '--seq-len', '65'), /--seq-len 65 is longer than the models' context \(max_position_embeddings 64\)/);
    expectBadInput(base(out(), '--teacher-topk', '512'), /--teacher-topk 512 is not smaller than the vocabulary \(512\)/);
    expectBadInput(base(out(), '--steps', '3', '--tokens', '100'), /--steps and --tokens both given/);
    expectBadInput(base(out(), '--eval-every', '5'), /--eval-every needs --eval-data/);
    expectBadInput(base(out(), '--device', 'tpu', '--seq-len', '32'), /--device "tpu": unknown device/);
  });

  test('an existing output folder, or one inside an input', () => {
    const existing = path.join(tmp, 'existing');
    fs.mkdirSync(existing);
    try {
      expectBadInput(base(existing), /existing: already exists; use --force to replace it/);
    } finally {
      fs.rmSync(existing, { recursive: true });
    }
    expectBadInput(base(path.join(teacher, 'out')), /the output folder is inside the input/);
  });
});

describe('runs', () => {
  const runArgs = (out: string, steps: number, ...more: string[]) => base(out, '--seq-len', '32', '--batch', '2', '--steps', String(steps), '--lr', '3e-3', '--warmup', '1', ...more);

  test('a student larger than the teacher is a warning, not an error; the output is a loadable checkpoint with report and state', async () => {
    const out = path.join(tmp, 'big-student');
    const r = llmopt('distill', '--teacher', student, '--student', teacher, '--data', data, '-o', out, '--device', 'cpu', '--seq-len', '32', '--batch', '2', '--steps', '3', '--eval-data', evalData, '--json');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/^warning: the student \([\d,]+ parameters\) is larger than the teacher \([\d,]+\)$/m);
    const report = JSON.parse(r.stdout);
    expect(report).toMatchObject({ command: 'distill', teacher_forward: true, settings: { steps: 3, seq_len: 32, batch: 2, tokens: 192, loss: 'kl', lr_source: 'default rule' } });
    expect(report.curve).toHaveLength(3);
    expect(report.eval.points.map((p: { step: number }) => p.step)).toEqual([0, 3]);
    expect(report.eval.protocol.name).toBe('chunks32');
    expect(report.warnings).toHaveLength(1);
    expect(fs.readdirSync(out).sort()).toEqual(['config.json', 'generation_config.json', 'llmopt-report.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'train-state'].sort());
    const ev = llmopt('eval', out, '--data', evalData, '--seq-len', '32', '--device', 'cpu', '--json');
    expect(ev.code, ev.stderr).toBe(0);
    // The report's last eval point is the same protocol on the same weights.
    expect(JSON.parse(ev.stdout).metrics.ppl).toBeCloseTo(report.eval.points[1].ppl, 4);
  });

  test('the student\'s dtype is kept (BF16 in, BF16 out); --alpha 1 never runs the teacher', () => {
    const out = path.join(tmp, 'bf16');
    const r = llmopt(...runArgs(out, 6, '--alpha', '1', '--json').map((a) => (a === student ? studentBf16 : a)));
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout);
    expect(report.teacher_forward).toBe(false);
    expect(report.output.dtypes).toEqual(['BF16']);
    const header = fs.readFileSync(path.join(out, 'model.safetensors'));
    const json = JSON.parse(header.subarray(8, 8 + Number(header.readBigUInt64LE(0))).toString('utf8'));
    expect(Object.entries(json).filter(([k]) => k !== '__metadata__').every(([, v]) => (v as { dtype: string }).dtype === 'BF16')).toBe(true);
    expect(report.curve.every((p: { loss: number; ce: number }) => p.loss === p.ce)).toBe(true);
  });

  test('killed with SIGKILL after a checkpoint and resumed: weights byte-identical to an uninterrupted run', async () => {
    const steps = 60;
    const args = (out: string) => runArgs(out, steps, '--save-every', '5', '--teacher-topk', '16', '--eval-data', evalData, '--eval-every', '20');
    const full = path.join(tmp, 'full');
    const r = llmopt(...args(full));
    expect(r.code, r.stderr).toBe(0);

    const killed = path.join(tmp, 'killed');
    const child = spawn(process.execPath, [cli, ...args(killed)], { cwd: tmp, env: { ...process.env, FORCE_COLOR: '0' }, stdio: 'ignore' });
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, signal) => resolve(signal)));
    const stateFile = path.join(killed, 'train-state', 'state.json');
    let killedAt = -1;
    for (let i = 0; i < 30_000 && child.exitCode === null; i++) {
      if (fs.existsSync(stateFile)) {
        child.kill('SIGKILL');
        break;
      }
      await new Promise((res) => setTimeout(res, 2));
    }
    expect(await exited).toBe('SIGKILL');
    killedAt = JSON.parse(fs.readFileSync(stateFile, 'utf8')).step;
    expect(killedAt).toBeGreaterThan(0);
    expect(killedAt).toBeLessThan(steps);
    expect(fs.existsSync(path.join(killed, 'model.safetensors'))).toBe(false);

    // A resume with other settings than the checkpoint's is refused, and changes nothing.
    const otherLr = llmopt(...args(killed).map((a) => (a === '3e-3' ? '1e-3' : a)), '--resume');
    expect(otherLr.code).toBe(1);
    expect(otherLr.stderr).toMatch(/--resume: --lr 0\.001 differs from the checkpoint's --lr 0\.003/);

    const resumed = llmopt(...args(killed), '--resume', '--json');
    expect(resumed.code, resumed.stderr).toBe(0);
    const report = JSON.parse(resumed.stdout);
    expect(report.segments.map((s: { from_step: number; to_step: number }) => [s.from_step, s.to_step])).toEqual([[0, killedAt], [killedAt, steps]]);
    expect(fs.readFileSync(path.join(killed, 'model.safetensors')).equals(fs.readFileSync(path.join(full, 'model.safetensors')))).toBe(true);
    const fullReport = JSON.parse(fs.readFileSync(path.join(full, 'llmopt-report.json'), 'utf8'));
    expect(report.curve).toEqual(fullReport.curve);
    expect(report.eval.points).toEqual(fullReport.eval.points);
    expect(report.eval.points.map((p: { step: number }) => p.step)).toEqual([0, 20, 40, 60]);
    expect(fs.readdirSync(tmp).filter((f) => f.startsWith('.killed'))).toEqual([]);

    // Finished: nothing to resume.
    const again = llmopt(...args(killed), '--resume');
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/already finished \(step 60 of 60\); nothing to resume/);
  });
});
