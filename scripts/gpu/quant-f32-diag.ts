// Diagnostic (GPU machine): where does an activation-quantized checkpoint's f32 forward on cuda depart
// from the cpu's? Quantizes stories260K (FP8 static, W8A8) on the cpu, runs one 256-token window on
// the cpu and on an f32 CudaDevice with every hook point captured, and prints max |Δ|/max|cpu| per
// point; then applies both devices' fakeQuantRows to the cpu's captured inputs (real activations) and
// counts differing values. Usage: node .gpu/quant-f32-diag.mjs --model DIR --data FILE

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { quantizeModel } from '../../src/compress/quant/index.js';
import { loadModel } from '../../src/model/load.js';
import { TextTokenizer } from '../../src/model/tokenizer.js';
import { hookNames, type ActivationHooks } from '../../src/model/decoder.js';
import { createCpuDevice } from '../../src/tensor/cpu/index.js';
import { CudaDevice } from '../../src/tensor/cuda/index.js';
import type { Device, FakeQuantSpec } from '../../src/tensor/device.js';

const arg = (n: string) => process.argv[process.argv.indexOf(`--${n}`) + 1]!;
const model = arg('model'), data = arg('data');
const cpu = createCpuDevice({ threads: 4 });
const gpu: Device = process.argv.includes('--self-test') ? createCpuDevice({ threads: 2 }) : new CudaDevice({ dtype: 'f32' });
const tokens = (await TextTokenizer.load(model)).encode(fs.readFileSync(data, 'utf8').slice(0, 20000)).subarray(0, 256);
for (const scheme of ['FP8', 'W8A8'] as const) {
  const out = path.join(os.tmpdir(), `diag-${scheme}`);
  await quantizeModel({ model, output: out, force: true, scheme, calibration: { source: data, samples: 32, seqLen: 128, seed: 0 }, device: cpu });
  const capture = async (dev: Device) => {
    const m = await loadModel(out, dev);
    const got = new Map<string, Float32Array>();
    const hooks: ActivationHooks = {};
    const names: string[] = [];
    for (let i = 0; i < m.spec.numLayers; i++) {
      names.push(hookNames.layerInput(i), hookNames.qProjInput(i), hookNames.keyStates(i), hookNames.oProjInput(i), hookNames.gateProjInput(i), hookNames.downProjInput(i), hookNames.layerOutput(i));
    }
    for (const n of names) hooks[n] = (t) => got.set(n, dev.download(t));
    const logits = dev.download(m.decoder.forward(tokens, 1, tokens.length, { hooks }));
    got.set('logits', logits);
    const quant = m.decoder.weights.quant;
    m.decoder.dispose({ weights: true });
    return { got, names: [...names, 'logits'], quant };
  };
  const c = await capture(cpu), g = await capture(gpu);
  console.log(`== ${scheme}: layer 0 sims ${JSON.stringify(c.quant?.[0])} | gpu ${JSON.stringify(g.quant?.[0])}`);
  for (const n of c.names) {
    const a = c.got.get(n)!, b = g.got.get(n)!;
    let d = 0, m = 0;
    for (let i = 0; i < a.length; i++) { d = Math.max(d, Math.abs(a[i]! - b[i]!)); m = Math.max(m, Math.abs(a[i]!)); }
    console.log(`  ${n.padEnd(36)} max|Δ|/max ${(d / m).toExponential(2)}`);
  }
  const spec: FakeQuantSpec = scheme === 'FP8' ? { format: 'fp8_e4m3', scale: c.quant?.[0]?.qkvInput?.scale } : { format: 'int8' };
  for (const n of [hookNames.qProjInput(0), hookNames.downProjInput(1)]) {
    const x = c.got.get(n)!;
    const cols = n.includes('down') ? 172 : 64;
    const ct = cpu.upload(x, [x.length / cols, cols]), gt = gpu.upload(x, [x.length / cols, cols]);
    cpu.fakeQuantRows(ct, spec); gpu.fakeQuantRows(gt, spec);
    const a = cpu.download(ct), b = gpu.download(gt);
    let diff = 0;
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) diff++;
    console.log(`  fakeQuantRows ${JSON.stringify(spec)} on real ${n}: ${diff}/${a.length} values differ`);
  }
}
cpu.close();
