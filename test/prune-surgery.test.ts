// Checkpoint surgery end to end (runPrune → files → loadModel): removing units that contribute
// nothing (zeroed o_proj columns / value rows / gate rows, an identity layer) must leave the logits
// bit-identical, and importance must find exactly those units. Also: dtypes kept bit for bit, biases
// and q/k norms (Qwen2/Qwen3 fixtures), hidden-channel pruning, and the pruned stories260K evaluates.
import fs from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { runPrune, type PruneOptions, type PruneReport } from '../src/compress/prune/run.js';
import { runEval } from '../src/eval/run.js';
import { CheckpointTensors, copyFiles, encodeFromFloat32, writeCheckpointTensors, type DType } from '../src/io/index.js';
import { loadModel } from '../src/model/load.js';
import { createCpuDevice, type CpuDevice } from '../src/tensor/cpu/index.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const shared = path.resolve(root, '../shared');
const stories = path.join(shared, 'models/stories260K');
const fixtures = path.join(root, 'test/fixtures/arch');

let device: CpuDevice;
let tmp: string;
let calibFile: string;

beforeAll(() => {
  device = createCpuDevice({ threads: 1 });
  tmp = fs.mkdtempSync(path.join(tmpdir(), 'llmopt-prune-'));
  calibFile = path.join(tmp, 'calib.txt');
  fs.writeFileSync(calibFile, fs.readFileSync(path.join(shared, 'data/tinystories-valid.txt'), 'utf8').slice(0, 30_000));
});
afterAll(() => {
  device?.close();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

type Edit = (name: string, data: Float32Array, shape: readonly number[]) => void;

/** A copy of `src` in tmp/<name> with `edit` applied to every tensor (as float32), stored as `dtype`. */
function variant(src: string, name: string, edit: Edit, dtype?: DType): string {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir);
  const ckpt = CheckpointTensors.open(src);
  try {
    const tensors = ckpt.names().map((n) => {
      const info = ckpt.info(n);
      const data = ckpt.readFloat32(n);
      edit(n, data, info.shape);
      const dt = dtype ?? info.dtype;
      return { name: n, dtype: dt, shape: [...info.shape], data: encodeFromFloat32(dt, data) };
    });
    writeCheckpointTensors(dir, tensors);
  } finally {
    ckpt.close();
  }
  copyFiles(src, dir, ['config.json', 'tokenizer.json', 'tokenizer_config.json'], { missingOk: true });
  return dir;
}

/** Zeroes rows [r0, r1) of a [rows, cols] matrix (or elements of a vector). */
function zeroRows(data: Float32Array, shape: readonly number[], r0: number, r1: number): void {
  const cols = shape.length === 2 ? shape[1]! : 1;
  data.fill(0, r0 * cols, r1 * cols);
}

function zeroCols(data: Float32Array, shape: readonly number[], c0: number, c1: number): void {
  const [rows, cols] = shape as [number, number];
  for (let r = 0; r < rows; r++) data.fill(0, r * cols + c0, r * cols + c1);
}

async function prune(model: string, out: string, opts: Partial<PruneOptions>): Promise<PruneReport> {
  return runPrune({
    model,
    output: path.join(tmp, out),
    request: {},
    importance: 'activation',
    calibration: { source: calibFile, samples: 6, seqLen: 64 },
    seed: 0,
    dryRun: false,
    overwrite: false,
    device,
    deviceName: 'cpu',
    toolVersion: 'test',
    ...opts,
  });
}

const IDS = Int32Array.from([1, 403, 407, 261, 378, 316, 306, 287, 395, 275, 442, 296, 267, 283, 263, 262, 486, 268, 309, 311, 276, 350, 263, 271, 262, 415, 271, 418, 349, 271, 416, 302, 264, 306, 347, 417, 450, 356, 266, 261]);

async function logits(model: string, ids: Int32Array = IDS): Promise<Float32Array> {
  const m = await loadModel(model, device);
  try {
    return device.download(m.decoder.forward(ids, 1, ids.length));
  } finally {
    m.decoder.dispose({ weights: true });
  }
}

const HD = 8; // stories260K head_dim

describe('removing units that contribute nothing leaves logits bit-identical (stories260K)', () => {
  test('query heads (magnitude): heads 1, 2, 5, 6 with zero q rows and o_proj columns, one per KV group', async () => {
    const dead = [1, 2, 5, 6];
    const model = variant(stories, 'dead-heads', (n, d, s) => {
      for (const h of dead) {
        if (n.endsWith('q_proj.weight')) zeroRows(d, s, h * HD, (h + 1) * HD);
        if (n.endsWith('o_proj.weight')) zeroCols(d, s, h * HD, (h + 1) * HD);
      }
    });
    const r = await prune(model, 'dead-heads-pruned', { request: { heads: 0.5 }, importance: 'magnitude' });
    for (const l of r.layers) {
      expect(l.removed_heads).toEqual(dead);
      expect(l.kept_heads).toEqual([0, 3, 4, 7]);
    }
    expect(r.config.after).toMatchObject({ num_attention_heads: 4, num_key_value_heads: 4, head_dim: 8 });
    expect(await logits(r.output!.path)).toEqual(await logits(model));
  });

  test('a KV group (activation): group 2 with zero value rows has zero attention output', async () => {
    const model = variant(stories, 'dead-group', (n, d, s) => {
      if (n.endsWith('v_proj.weight')) zeroRows(d, s, 2 * HD, 3 * HD);
    });
    const r = await prune(model, 'dead-group-pruned', { request: { kvHeads: 0.25, allowIndivisibleHeads: true } });
    for (const l of r.layers) {
      expect(l.removed_kv_groups).toEqual([2]);
      expect(l.removed_heads).toEqual([4, 5]);
    }
    expect(r.importance.heads![0]![4]).toBe(0);
    expect(r.calibration).toMatchObject({ samples: 6, seq_len: 64, tokens: 384 });
    expect(await logits(r.output!.path)).toEqual(await logits(model));
  });

  test('MLP channels (activation): 43 channels with zero gate rows, --multiple-of 1', async () => {
    const dead = Array.from({ length: 172 }, (_, c) => c).filter((c) => c % 4 === 1);
    expect(dead).toHaveLength(43);
    const model = variant(stories, 'dead-channels', (n, d, s) => {
      if (n.endsWith('gate_proj.weight')) for (const c of dead) zeroRows(d, s, c, c + 1);
    });
    const r = await prune(model, 'dead-channels-pruned', { request: { mlp: 0.25, multipleOf: 1 } });
    expect(r.plan.mlp_channels).toEqual({ from: 172, to: 129 });
    for (const l of r.layers) expect(l.removed_channels).toEqual(dead);
    expect(await logits(r.output!.path)).toEqual(await logits(model));
  });

  test('a layer (activation and magnitude): layer 2 with zero o_proj and down_proj is the identity', async () => {
    const model = variant(stories, 'dead-layer', (n, d) => {
      if (/layers\.2\.(self_attn\.o_proj|mlp\.down_proj)\.weight/.test(n)) d.fill(0);
    });
    const want = await logits(model);
    for (const importance of ['activation', 'magnitude'] as const) {
      const r = await prune(model, `dead-layer-${importance}`, { request: { layers: 1 }, importance });
      expect(r.removed_layers).toEqual([2]);
      expect(Math.abs(r.importance.layers![2]!)).toBeLessThan(1e-9);
      expect(r.layers.map((l) => [l.index, l.new_index])).toEqual([[0, 0], [1, 1], [3, 2], [4, 3]]);
      expect(await logits(r.output!.path)).toEqual(want);
    }
  });
});

describe('biases and q/k norms (arch fixtures, no tokenizer: magnitude importance)', () => {
  test('Qwen3 (q/k norm, attention bias): heads with zero q rows, q bias and o_proj columns', async () => {
    const hd = 16; // 4 heads in 2 groups
    const model = variant(path.join(fixtures, 'qwen3'), 'qwen3-dead', (n, d, s) => {
      for (const h of [1, 2]) {
        if (/q_proj\.(weight|bias)$/.test(n)) zeroRows(d, s, h * hd, (h + 1) * hd);
        if (n.endsWith('o_proj.weight')) zeroCols(d, s, h * hd, (h + 1) * hd);
      }
    });
    const ids = Int32Array.from([3, 17, 42, 8, 91, 5, 60, 33, 12, 77, 2, 50]);
    const r = await prune(model, 'qwen3-pruned', { request: { heads: 0.5 }, importance: 'magnitude' });
    for (const l of r.layers) expect(l.removed_heads).toEqual([1, 2]);
    expect(r.config.after).toMatchObject({ num_attention_heads: 2, num_key_value_heads: 2, head_dim: 16 });
    expect(await logits(r.output!.path, ids)).toEqual(await logits(model, ids));
  });

  test('Qwen2 (q/k/v bias): a KV group with zero k/v/q rows, biases and o_proj columns, plus MLP channels', async () => {
    const hd = 8; // 4 heads in 2 groups, 40 channels
    const deadChannels = [3, 9, 10, 21, 30, 31, 32, 39];
    const model = variant(path.join(fixtures, 'qwen2'), 'qwen2-dead', (n, d, s) => {
      if (/[kv]_proj\.(weight|bias)$/.test(n)) zeroRows(d, s, 1 * hd, 2 * hd);
      if (/q_proj\.(weight|bias)$/.test(n)) zeroRows(d, s, 2 * hd, 4 * hd);
      if (n.endsWith('o_proj.weight')) zeroCols(d, s, 2 * hd, 4 * hd);
      for (const c of deadChannels) {
        if (/(gate|up)_proj\.weight$/.test(n)) zeroRows(d, s, c, c + 1);
        if (n.endsWith('down_proj.weight')) zeroCols(d, s, c, c + 1);
      }
    });
    const ids = Int32Array.from([3, 17, 42, 8, 91, 5, 60, 33, 12, 77, 2, 50]);
    const r = await prune(model, 'qwen2-pruned', { request: { kvHeads: 0.5, mlp: 0.2 }, importance: 'magnitude' });
    for (const l of r.layers) {
      expect(l.removed_kv_groups).toEqual([1]);
      expect(l.removed_channels).toEqual(deadChannels);
    }
    const out = CheckpointTensors.open(r.output!.path);
    try {
      expect(out.info('model.layers.0.self_attn.k_proj.bias').shape).toEqual([8]);
      expect(out.info('model.layers.0.self_attn.q_proj.bias').shape).toEqual([16]);
      expect(out.info('model.layers.1.mlp.down_proj.weight').shape).toEqual([32, 32]);
    } finally {
      out.close();
    }
    expect(await logits(r.output!.path, ids)).toEqual(await logits(model, ids));
  });
});

describe('output checkpoint', () => {
  test('BF16 input stays BF16, bit for bit: kept slices are the input bytes', async () => {
    const model = variant(stories, 'bf16', () => {}, 'BF16');
    const r = await prune(model, 'bf16-pruned', { request: { kvHeads: 0.25, mlp: 0.25, allowIndivisibleHeads: true }, importance: 'magnitude' });
    expect(r.bytes.dtypes).toEqual(['BF16']);
    const input = CheckpointTensors.open(model);
    const output = CheckpointTensors.open(r.output!.path);
    try {
      for (const name of output.names()) expect(output.info(name).dtype).toBe('BF16');
      const l = r.layers[1]!;
      const down = new Uint16Array(input.readBytes('model.layers.1.mlp.down_proj.weight').buffer);
      const got = new Uint16Array(output.readBytes('model.layers.1.mlp.down_proj.weight').buffer);
      expect(got.length).toBe(64 * 128);
      const want = new Uint16Array(64 * 128);
      for (let row = 0; row < 64; row++) l.kept_channels.forEach((c, j) => (want[row * 128 + j] = down[row * 172 + c]!));
      expect(got).toEqual(want);
      const k = new Uint16Array(input.readBytes('model.layers.1.self_attn.k_proj.weight').buffer);
      const gotK = new Uint16Array(output.readBytes('model.layers.1.self_attn.k_proj.weight').buffer);
      const wantK = l.kept_kv_groups.flatMap((g) => Array.from(k.subarray(g * HD * 64, (g + 1) * HD * 64)));
      expect(Array.from(gotK)).toEqual(wantK);
    } finally {
      input.close();
      output.close();
    }
    // Parameters: 3 of 4 groups (k, v: 48 rows; q, o: 6 heads), 128 of 172 channels, 5 layers.
    const perLayer = 2 * 64 + 6 * HD * 64 * 2 + 3 * HD * 64 * 2 + 3 * 128 * 64;
    expect(r.parameters).toMatchObject({ before: 260_032, after: 512 * 64 + 64 + 5 * perLayer });
    expect(r.bytes.after).toBe(2 * r.parameters.after);
  });

  test('hidden channels (Minitron-style): every norm, embedding and projection sliced; the model loads and runs', async () => {
    const r = await prune(stories, 'hidden-pruned', { request: { hidden: 0.25, layers: 1 } });
    expect(r.config.after).toMatchObject({ hidden_size: 48, head_dim: 8, num_attention_heads: 8, num_hidden_layers: 4 });
    expect(r.hidden!.removed).toHaveLength(16);
    const out = CheckpointTensors.open(r.output!.path);
    try {
      expect(out.info('model.embed_tokens.weight').shape).toEqual([512, 48]);
      expect(out.info('model.norm.weight').shape).toEqual([48]);
      expect(out.info('model.layers.3.self_attn.o_proj.weight').shape).toEqual([48, 64]);
      expect(out.info('model.layers.3.mlp.gate_proj.weight').shape).toEqual([172, 48]);
    } finally {
      out.close();
    }
    const l = await logits(r.output!.path);
    expect(l.every(Number.isFinite)).toBe(true);
  });

  test('pruned stories260K (activation, KV groups 25% + MLP 25%) evaluates with the llmopt decoder; report and files', async () => {
    const r = await prune(stories, 'stories-kv-mlp', { request: { kvHeads: 0.25, mlp: 0.25, allowIndivisibleHeads: true } });
    expect(r.plan.rounding).toEqual([expect.stringMatching(/129 of 172 MLP channels kept, rounded to a multiple of 8: 128/)]);
    const dir = r.output!.path;
    expect(fs.readdirSync(dir).sort()).toEqual(['config.json', 'llmopt-report.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'generation_config.json'].sort());
    const onDisk = JSON.parse(fs.readFileSync(path.join(dir, 'llmopt-report.json'), 'utf8')) as PruneReport;
    expect(onDisk.parameters).toEqual(r.parameters);
    expect(onDisk.input.weights[0]!.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(onDisk.importance.channels![0]).toHaveLength(172);
    const run = await runEval({
      model: dir,
      baseline: stories,
      dataFile: path.join(shared, 'data/tinystories-valid.txt'),
      seqLen: 256,
      keepLast: false,
      maxTokens: 4096,
      device,
      deviceName: 'cpu',
    });
    const b = run.result.baseline!;
    console.log(`kv 25% + mlp 25% (activation, 6×64 calibration): ppl ${run.result.ppl.toFixed(3)} vs ${b.ppl.toFixed(3)}, kld ${b.kldMean.toFixed(3)}`);
    expect(run.result.ppl).toBeGreaterThan(b.ppl);
    expect(run.result.ppl).toBeLessThan(200);
    expect(b.kldMean).toBeGreaterThan(0);
  });
});
