// llmopt generate <model> --prompt "…": the quickest sanity check a user has. Streams the
// continuation to stdout as it is produced (greedy at --temperature 0, the default); --json prints
// one object at the end instead.

import type { Command } from 'commander';
import { LlmoptError, UsageError } from '../errors.js';
import { generate, TextStream } from '../model/generate.js';
import { loadModel } from '../model/load.js';
import { openDevice } from './device.js';

interface GenerateFlags {
  prompt: string;
  maxNewTokens: string;
  temperature: string;
  topK: string;
  seed: string;
  device: string;
  dtype?: string;
  json?: boolean;
}

function numberFlag(flag: string, value: string, min: number, integer: boolean): number {
  const n = /^\s*[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?\s*$/i.test(value) ? Number(value) : NaN;
  if (!Number.isFinite(n) || n < min || (integer && !Number.isSafeInteger(n))) {
    throw new UsageError(`${flag} ${JSON.stringify(value)}: expected ${integer ? 'an integer' : 'a number'} ≥ ${min}`);
  }
  return n;
}

async function generateCommand(modelPath: string, flags: GenerateFlags): Promise<number> {
  const maxNewTokens = numberFlag('-n', flags.maxNewTokens, 0, true);
  const temperature = numberFlag('--temperature', flags.temperature, 0, false);
  const topK = numberFlag('--top-k', flags.topK, 0, true);
  const seed = numberFlag('--seed', flags.seed, 0, true);
  const opened = openDevice(flags.device, flags.dtype);
  try {
    const t0 = performance.now();
    const model = await loadModel(modelPath, opened.device);
    const loadMs = performance.now() - t0;
    if (!model.tokenizer) throw new LlmoptError(`${model.paths.dir}: no tokenizer.json; generate needs one to encode --prompt`);
    const tokenizer = model.tokenizer;
    const promptIds = tokenizer.encode(flags.prompt);
    if (promptIds.length === 0) throw new LlmoptError('--prompt: encodes to no tokens and the tokenizer adds no BOS; give some text');
    const room = model.spec.maxPositionEmbeddings - promptIds.length;
    if (maxNewTokens > room) {
      throw new LlmoptError(`-n ${maxNewTokens}: the prompt's ${promptIds.length} tokens leave room for ${Math.max(0, room)} (max_position_embeddings ${model.spec.maxPositionEmbeddings})`);
    }
    const specEos = model.spec.eosTokenId;
    const eos = [...(specEos === undefined ? [] : typeof specEos === 'number' ? [specEos] : specEos), ...(tokenizer.eosTokenId !== undefined ? [tokenizer.eosTokenId] : [])];
    const stream = new TextStream(tokenizer, promptIds);
    let text = '';
    if (!flags.json) process.stdout.write(flags.prompt);
    const result = generate(model.decoder, promptIds, {
      maxNewTokens,
      temperature,
      topK,
      seed,
      eosTokenId: eos,
      onToken: (id) => {
        const piece = stream.push(id);
        text += piece;
        if (!flags.json && piece.length > 0) process.stdout.write(piece);
      },
    });
    const tail = stream.flush();
    text += tail;
    const generated = result.tokens.length;
    const decodeTokens = Math.max(0, generated - 1);
    const summary = {
      model: modelPath,
      device: opened.name,
      ...(opened.gpu !== undefined ? { gpu: opened.gpu } : {}),
      dtype: opened.dtypeName,
      sampling: temperature === 0 || topK === 1 ? { mode: 'greedy' } : { mode: 'sample', temperature, top_k: topK, seed },
      prompt: flags.prompt,
      prompt_token_ids: Array.from(promptIds),
      token_ids: Array.from(result.tokens),
      text,
      stop_reason: result.stopReason,
      cuda_graph: result.usesGraph,
      load_s: loadMs / 1000,
      time_to_first_token_ms: result.firstTokenMs,
      decode_tokens_per_s: decodeTokens > 0 ? (decodeTokens * 1000) / result.decodeMs : null,
    };
    if (flags.json) {
      process.stdout.write(JSON.stringify(summary, null, 2) + '\n');
    } else {
      await new Promise<void>((resolve) => process.stdout.write(tail + '\n', () => resolve()));
      const rate = summary.decode_tokens_per_s !== null ? `, ${summary.decode_tokens_per_s.toFixed(1)} tokens/s after the first` : '';
      process.stderr.write(
        `[${generated} tokens (${result.stopReason}) on ${opened.name}${opened.gpu ? ` (${opened.gpu})` : ''} ${opened.dtypeName}` +
          `${result.usesGraph ? ', CUDA graph' : ''}; first token ${result.firstTokenMs.toFixed(1)} ms${rate}]\n`,
      );
    }
    model.decoder.dispose({ weights: true });
    return 0;
  } finally {
    opened.close();
  }
}

export function registerGenerate(program: Command, exit: { code: number }): void {
  program
    .command('generate')
    .description('continue a prompt with the model, streaming the text (greedy unless --temperature > 0)')
    .argument('<model>', 'checkpoint folder, or a .safetensors file with config.json beside it')
    .option('--prompt <text>', 'text to continue (the tokenizer adds BOS)', '')
    .option('-n, --max-new-tokens <n>', 'tokens to generate at most (stops early at EOS)', '128')
    .option('--temperature <t>', '0 = greedy; > 0 samples from softmax(logits / t)', '0')
    .option('--top-k <k>', 'sample only among the k most likely tokens (0 = all; 1 = greedy)', '0')
    .option('--seed <s>', 'seed of the sampling draws (same seed, same text)', '0')
    .option('--device <kind>', 'cpu, cuda, or auto (cuda when a GPU is usable, else cpu with a notice)', 'auto')
    .option('--dtype <dtype>', 'GPU dtype: bf16 (default on cuda), fp16 or fp32; the cpu computes in fp32')
    .option('--json', 'no streaming: one JSON object with the ids, text and timings')
    .action(async (model: string, flags: GenerateFlags) => {
      exit.code = await generateCommand(model, flags);
    });
}
