// Where a fused decode layer's time goes: one eager batch-1 decode step per checkpoint with the
// decode_layer launches writing per-stage globaltimer stamps (CudaDevice.decodeLayerStamps; every
// layer writes the same buffer, so the last layer's remain), printed as µs from the first block's
// start: per stamp, the earliest / median / latest block. Stamps: 0 start (after the PDL wait),
// 1 A (norm + q/k/v + rope) done, 2 past barrier 1, 3 B (attention) done, 4 past barrier 2, 5 C
// (o_proj) done, 6 past barrier 3, 7 D (norm + gate/up) done, 8 past barrier 4, 9 E (down_proj) done.
// Usage (GPU machine): node .gpu/decode-layer-stamps.mjs --models DIR[,DIR…] [--ctx 576] [--json FILE]

import fs from 'node:fs';
import path from 'node:path';
import { Workspace, type DecodeStepAt } from '../../src/model/decoder.js';
import { loadModel } from '../../src/model/load.js';
import { CudaDevice, type CudaInts } from '../../src/tensor/cuda/index.js';
import { DECODE_LAYER_STAMPS } from '../../src/tensor/cuda/decode-layer.js';

function flag(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : fallback;
}

const LABELS = ['start', 'A done', 'barrier 1', 'B done', 'barrier 2', 'C done', 'barrier 3', 'D done', 'barrier 4', 'E done'];
const dirs = flag('models', '').split(',').filter((d) => d !== '');
const ctx = Number(flag('ctx', '576'));
const dev = new CudaDevice({ dtype: 'bf16' });
dev.fusedDecodeLayer = true;
const blocks = dev.info.multiprocessors;
const bytes = blocks * DECODE_LAYER_STAMPS * 8;
const results: Record<string, unknown> = {};
for (const dir of dirs) {
  const model = await loadModel(dir, dev);
  const d = model.decoder;
  const cache = d.newCache(1, ctx + 16);
  const ws = new Workspace(dev, d.spec, 1, 1);
  const ids = Int32Array.from({ length: ctx + 8 }, (_, i) => (i * 7919) % d.spec.vocabSize);
  d.forwardHidden(ids.subarray(0, ctx), 1, ctx, { cache });
  const ints: CudaInts[] = [dev.allocInts(1), dev.allocInts(1), dev.allocInts(1)];
  const at: DecodeStepAt<CudaInts> = { ops: dev, ids: ints[0]!, positions: ints[1]!, kvLens: ints[2]! };
  const stamps = dev.allocateBytes(bytes);
  const runStep = (pos: number) => {
    dev.setInts(ints[0]!, ids.subarray(pos, pos + 1));
    dev.setInts(ints[1]!, Int32Array.of(pos));
    dev.setInts(ints[2]!, Int32Array.of(pos + 1));
    d.decodeStepAt(ws, at, cache);
  };
  for (let s = 0; s < 4; s++) runStep(ctx);
  dev.decodeLayerStamps = stamps;
  runStep(ctx);
  dev.synchronize();
  dev.decodeLayerStamps = 0n;
  const host = new BigUint64Array(blocks * DECODE_LAYER_STAMPS);
  dev.driver.copyToHost(host, stamps, bytes);
  dev.releaseBytes(stamps, bytes);
  let t0 = host[0]!;
  for (let b = 0; b < blocks; b++) if (host[b * DECODE_LAYER_STAMPS]! < t0) t0 = host[b * DECODE_LAYER_STAMPS]!;
  const rows = LABELS.map((label, i) => {
    const us = Array.from({ length: blocks }, (_, b) => Number(host[b * DECODE_LAYER_STAMPS + i]! - t0) / 1000).sort((x, y) => x - y);
    return { label, first: us[0]!, median: us[Math.floor(blocks / 2)]!, last: us[blocks - 1]! };
  });
  console.log(`${path.basename(dir)}: last layer of one eager step at kv ${ctx + 1}, µs from the first block's start (${blocks} blocks)`);
  for (const r of rows) console.log(`  ${r.label.padEnd(10)} first ${r.first.toFixed(2).padStart(7)}  median ${r.median.toFixed(2).padStart(7)}  last ${r.last.toFixed(2).padStart(7)}`);
  results[path.basename(dir)] = rows;
  for (const t of ints) dev.freeInts(t);
  cache.free();
  ws.free();
  d.dispose({ weights: true });
}
const out = flag('json', '');
if (out !== '') fs.writeFileSync(out, JSON.stringify({ gpu: dev.info.name, ctx, results }, null, 1));
