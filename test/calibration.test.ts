import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadCalibration } from '../src/compress/calibration.js';
import { TextTokenizer } from '../src/model/tokenizer.js';
import { LlmoptError } from '../src/errors.js';

const shared = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../shared');
let tok: TextTokenizer;
beforeAll(async () => {
  tok = await TextTokenizer.load(path.join(shared, 'models/stories260K'));
});

describe('calibration windows', () => {
  it('draws seeded BOS-led windows from the built-in set', () => {
    const a = loadCalibration({ source: 'moby-dick', samples: 8, seqLen: 64, seed: 7 }, tok);
    const b = loadCalibration({ source: 'moby-dick', samples: 8, seqLen: 64, seed: 7 }, tok);
    const c = loadCalibration({ source: 'moby-dick', samples: 8, seqLen: 64, seed: 8 }, tok);
    expect(a.windows).toHaveLength(8);
    expect(a.tokens).toBe(8 * 64);
    for (const w of a.windows) {
      expect(w.length).toBe(64);
      expect(w[0]).toBe(tok.bosTokenId);
      expect(new Set(w).size).toBeGreaterThan(10);
    }
    expect(a.windows.map((w) => Array.from(w))).toEqual(b.windows.map((w) => Array.from(w)));
    expect(a.windows.map((w) => Array.from(w))).not.toEqual(c.windows.map((w) => Array.from(w)));
    expect(tok.decode(a.windows[0]!.subarray(1)).length).toBeGreaterThan(64);
  });

  it('reads JSONL records as samples and rejects bad input', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'llmopt-calib-'));
    const jsonl = path.join(dir, 'c.jsonl');
    fs.writeFileSync(jsonl, ['Once upon a time there was a cat.', 'The dog ran to the park and played.', 'Lily was happy.']
      .map((text) => JSON.stringify({ text })).join('\n'));
    const set = loadCalibration({ source: jsonl, samples: 2, seqLen: 6, seed: 1 }, tok);
    expect(set.windows).toHaveLength(2);
    for (const w of set.windows) {
      expect(w[0]).toBe(tok.bosTokenId);
      expect(w.length).toBeLessThanOrEqual(6);
    }
    const tiny = path.join(dir, 'tiny.txt');
    fs.writeFileSync(tiny, 'Once upon a time.');
    expect(() => loadCalibration({ source: tiny, samples: 1, seqLen: 512, seed: 0 }, tok)).toThrow(/fewer than one window/);
    expect(() => loadCalibration({ source: path.join(dir, 'nope.txt'), samples: 1, seqLen: 8, seed: 0 }, tok)).toThrow(LlmoptError);
    fs.writeFileSync(path.join(dir, 'bad.jsonl'), '{"text": 1}\n');
    expect(() => loadCalibration({ source: path.join(dir, 'bad.jsonl'), samples: 1, seqLen: 8, seed: 0 }, tok)).toThrow(/line 1 has no string "text"/);
    fs.rmSync(dir, { recursive: true });
  });
});
