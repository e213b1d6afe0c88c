// Engine smoke test for the GPU machine, independent of the cpu device: library discovery, device
// properties, NVRTC compile + disk cache, cuBLASLt GEMMs against a float64 host reference, CUDA graph
// capture/replay, events. Prints one line per item; returns the failures.

import fs from 'node:fs';
import { CudaDevice } from '../../src/tensor/cuda/index.js';
import type { ComputeDType } from '../../src/tensor/device.js';

function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296 - 0.5;
  };
}

export function runSmoke(log: (line: string) => void): string[] {
  const failures: string[] = [];
  const check = (what: string, ok: boolean, detail: string) => {
    log(`${ok ? 'PASS' : 'FAIL'} ${what}: ${detail}`);
    if (!ok) failures.push(`${what}: ${detail}`);
  };

  for (const dir of ['/usr/local/cuda/lib64', '/usr/lib/x86_64-linux-gnu']) {
    try {
      const libs = fs.readdirSync(dir).filter((f) => /^lib(cuda|nvrtc|cublasLt)\.so/.test(f));
      log(`libs in ${dir}: ${libs.join(' ')}`);
    } catch {
      log(`libs in ${dir}: (not readable)`);
    }
  }

  let t0 = performance.now();
  const f32 = new CudaDevice({ dtype: 'f32' });
  log(`device: ${JSON.stringify(f32.info)}`);
  log(`CudaDevice(f32) created in ${(performance.now() - t0).toFixed(0)} ms`);

  // GEMMs against a float64 reference (f32: tight; bf16: inputs rounded by the upload).
  for (const dtype of ['f32', 'bf16', 'f16'] as ComputeDType[]) {
    const dev = dtype === 'f32' ? f32 : new CudaDevice({ dtype });
    const [M, N, K] = [67, 96, 130];
    const rnd = lcg(7);
    const x = Float32Array.from({ length: M * K }, rnd);
    const w = Float32Array.from({ length: N * K }, rnd);
    const b = Float32Array.from({ length: N }, rnd);
    t0 = performance.now();
    const [gx, gw, gb, go] = [dev.upload(x, [M, K]), dev.upload(w, [N, K]), dev.upload(b, [N]), dev.empty([M, N])];
    dev.matmul(go, gx, gw, gb);
    const got = dev.download(go);
    const ms = performance.now() - t0;
    // Reference in float64 from the (rounded) inputs the device holds.
    const [xr, wr, br] = [dev.download(gx), dev.download(gw), dev.download(gb)];
    let maxErr = 0, maxRef = 0;
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let s = br[n];
        for (let k = 0; k < K; k++) s += xr[m * K + k] * wr[n * K + k];
        maxErr = Math.max(maxErr, Math.abs(s - got[m * N + n]));
        maxRef = Math.max(maxRef, Math.abs(s));
      }
    }
    const tol = dtype === 'f32' ? 1e-6 : 1e-2;
    check(`cuBLASLt ${dtype} GEMM ${M}x${N}x${K} +bias`, maxErr / maxRef < tol,
      `max rel err ${(maxErr / maxRef).toExponential(2)} (tol ${tol}; ${ms.toFixed(0)} ms incl. compiles)`);
    for (const t of [gx, gw, gb, go]) dev.free(t);
  }

  // Graph capture: three x += y launches captured once, replayed twice → x0 + 6y.
  {
    const n = 1000;
    const x0 = Float32Array.from({ length: n }, (_, i) => i % 17);
    const y = Float32Array.from({ length: n }, (_, i) => (i % 5) - 2);
    const gx = f32.upload(x0, [n]);
    const gy = f32.upload(y, [n]);
    f32.synchronize();
    const graph = f32.captureGraph(() => {
      for (let i = 0; i < 3; i++) f32.addInPlace(gx, gy);
    });
    const untouched = f32.download(gx).every((v, i) => v === x0[i]);
    graph.launch();
    graph.launch();
    const got = f32.download(gx);
    const ok = untouched && got.every((v, i) => v === x0[i] + 6 * y[i]);
    check('CUDA graph capture + 2 replays', ok, `capture ran nothing: ${untouched}; x = x0 + 6y: ${ok}`);
    graph.destroy();
    f32.free(gx);
    f32.free(gy);
  }

  // Events: a bf16 GEMM's throughput and device-to-device copy bandwidth.
  {
    const dev = new CudaDevice({ dtype: 'bf16' });
    const S = 4096;
    const a = dev.empty([S, S]), w = dev.empty([S, S]), o = dev.empty([S, S]);
    dev.matmul(o, a, w);
    const start = dev.recordEvent();
    const reps = 20;
    for (let i = 0; i < reps; i++) dev.matmul(o, a, w);
    const end = dev.recordEvent();
    const ms = dev.elapsedMs(start, end) / reps;
    log(`bf16 GEMM ${S}^3: ${ms.toFixed(3)} ms = ${((2 * S ** 3) / ms / 1e9).toFixed(0)} TFLOP/s`);
    const big = dev.empty([256 * 1024 * 1024]); // 512 MiB in bf16
    const big2 = dev.empty([256 * 1024 * 1024]);
    dev.copy(big2, big);
    const s2 = dev.recordEvent();
    for (let i = 0; i < 5; i++) dev.copy(big2, big);
    const e2 = dev.recordEvent();
    const copyMs = dev.elapsedMs(s2, e2) / 5;
    log(`device-to-device copy 512 MiB: ${copyMs.toFixed(3)} ms = ${((2 * big.bytes) / copyMs / 1e6).toFixed(0)} GB/s (read+write)`);
    const stats = dev.memoryStats();
    log(`memory: ${JSON.stringify(stats)}`);
    for (const t of [a, w, o, big, big2]) dev.free(t);
    dev.synchronize();
  }

  // The disk cache: a fresh device loads the cubins compiled above instead of compiling.
  {
    const again = new CudaDevice({ dtype: 'f32' });
    const t = again.upload(new Float32Array([1, 2, 3]), [3]);
    again.addInPlace(t, t);
    const ok = again.download(t).every((v, i) => v === 2 * (i + 1));
    const stats = again.compileStats();
    check('cubin disk cache', ok && stats.cached > 0 && stats.compiled === 0, JSON.stringify(stats));
  }
  return failures;
}
