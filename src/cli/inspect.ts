// llmopt inspect <model>: config summary, parameters by component, tensor table, totals,
// quantization config. Reads headers only (and the tiny weight_shape tensors of packed quantized
// weights), so it is instant on any size.

import { statSync } from 'node:fs';
import path from 'node:path';
import chalk from 'chalk';
import type { Command } from 'commander';
import { countParameters, COMPONENTS, isPackedWeight, type ParameterCounts } from '../eval/params.js';
import { CheckpointTensors, readJsonFile, resolveModelPath } from '../io/index.js';
import { parseModelConfig } from '../model/config.js';
import type { ModelSpec } from '../model/spec.js';
import { formatBytes, formatInt, renderTable } from './format.js';

interface TensorRow {
  name: string;
  dtype: string;
  shape: number[];
  bytes: number;
  file: string;
}

export interface InspectReport {
  model: string;
  config_file: string;
  weight_files: string[];
  config: {
    model_type: string;
    architectures: unknown;
    layers: number;
    hidden_size: number;
    heads: number;
    kv_heads: number;
    head_dim: number;
    intermediate_size: number;
    activation: string;
    vocab_size: number;
    max_position_embeddings: number;
    positions: string;
    rope_theta: number | null;
    rope_scaling: ModelSpec['ropeScaling'] | null;
    tie_word_embeddings: boolean;
  };
  parameters: ParameterCounts;
  tensors: TensorRow[];
  totals: { tensors: number; tensor_bytes: number; files: number; file_bytes: number };
  quantization_config: unknown;
}

/**
 * A packed weight's [out, in] from its `weight_shape` tensor (compressed-tensors writes one beside
 * every `weight_packed`); the stored shape when it is missing.
 */
function packedLogicalShape(checkpoint: CheckpointTensors, packed: TensorRow): number[] {
  const shapeName = packed.name.replace(/\.weight_packed$/, '.weight_shape');
  return checkpoint.has(shapeName) ? Array.from(checkpoint.readFloat32(shapeName)) : packed.shape;
}

/** Orders names with embedded numbers numerically: layers.2 before layers.10. */
const naturalOrder = new Intl.Collator('en', { numeric: true }).compare;

export function inspectModel(modelPath: string): InspectReport {
  const resolved = resolveModelPath(modelPath);
  const rawConfig = readJsonFile(resolved.configFile) as Record<string, unknown>;
  const spec = parseModelConfig(rawConfig, resolved.configFile);
  const checkpoint = CheckpointTensors.open(resolved);
  try {
    const tensors: TensorRow[] = [...checkpoint.names()].sort(naturalOrder).map((name) => {
      const info = checkpoint.info(name);
      return { name, dtype: info.dtype, shape: [...info.shape], bytes: info.byteLength, file: path.basename(info.file) };
    });
    return {
      model: modelPath,
      config_file: resolved.configFile,
      weight_files: resolved.weightFiles,
      config: {
        model_type: String(rawConfig.model_type),
        architectures: rawConfig.architectures ?? null,
        layers: spec.numLayers,
        hidden_size: spec.hiddenSize,
        heads: spec.numHeads,
        kv_heads: spec.numKvHeads,
        head_dim: spec.headDim,
        intermediate_size: spec.intermediateSize,
        activation: spec.activation,
        vocab_size: spec.vocabSize,
        max_position_embeddings: spec.maxPositionEmbeddings,
        positions: spec.positions,
        rope_theta: spec.positions === 'rope' ? spec.ropeTheta : null,
        rope_scaling: spec.positions === 'rope' ? spec.ropeScaling : null,
        tie_word_embeddings: spec.tieWordEmbeddings,
      },
      parameters: countParameters(
        tensors.map((t) => ({ name: t.name, shape: isPackedWeight(t.name) ? packedLogicalShape(checkpoint, t) : t.shape })),
        spec.tieWordEmbeddings,
      ),
      tensors,
      totals: {
        tensors: tensors.length,
        tensor_bytes: tensors.reduce((sum, t) => sum + t.bytes, 0),
        files: resolved.weightFiles.length,
        file_bytes: resolved.weightFiles.reduce((sum, f) => sum + statSync(f).size, 0),
      },
      quantization_config: rawConfig.quantization_config ?? null,
    };
  } finally {
    checkpoint.close();
  }
}

function ropeText(c: InspectReport['config']): string {
  if (c.positions !== 'rope') return 'learned absolute positions';
  const s = c.rope_scaling;
  const scaling = !s || s.type === 'default' ? 'no scaling' : `${s.type} scaling ×${s.factor}`;
  return `rope theta ${c.rope_theta}, ${scaling}`;
}

export function renderInspect(r: InspectReport): string[] {
  const c = r.config;
  const archs = Array.isArray(c.architectures) ? ` (${c.architectures.join(', ')})` : '';
  const lines = [
    chalk.bold(r.model),
    `  architecture  ${c.model_type}${archs}`,
    `  layers        ${c.layers}`,
    `  hidden        ${c.hidden_size}`,
    `  heads         ${c.heads} query, ${c.kv_heads} kv, head_dim ${c.head_dim}`,
    `  ffn           ${c.intermediate_size} (${c.activation})`,
    `  vocab         ${formatInt(c.vocab_size)}`,
    `  context       ${formatInt(c.max_position_embeddings)}`,
    `  positions     ${ropeText(c)}`,
    `  tied embed.   ${c.tie_word_embeddings ? 'yes' : 'no'}`,
    '',
    chalk.bold('parameters'),
  ];
  const paramRows = COMPONENTS.filter((k) => k !== 'other' || r.parameters.other > 0).map((k) => [
    k,
    formatInt(r.parameters[k]),
    k === 'lm_head' && c.tie_word_embeddings ? '(tied to embeddings)' : '',
  ]);
  paramRows.push(['total', formatInt(r.parameters.total), '']);
  lines.push(...renderTable(['component', 'params', ''], paramRows, [false, true]).map((l) => `  ${l}`));
  lines.push('', chalk.bold('tensors'));
  const multiFile = r.totals.files > 1;
  const tensorRows = r.tensors.map((t) => [t.name, t.dtype, `[${t.shape.join(', ')}]`, formatInt(t.bytes), ...(multiFile ? [t.file] : [])]);
  lines.push(
    ...renderTable(['name', 'dtype', 'shape', 'bytes', ...(multiFile ? ['file'] : [])], tensorRows, [false, false, false, true]).map((l) => `  ${l}`),
  );
  const t = r.totals;
  lines.push(
    '',
    `${formatInt(t.tensors)} tensors, ${formatInt(t.tensor_bytes)} bytes of tensor data; ` +
      `${t.files} weight file${t.files === 1 ? '' : 's'}, ${formatInt(t.file_bytes)} bytes on disk (${formatBytes(t.file_bytes)})`,
    `quantization_config: ${r.quantization_config === null ? 'none' : JSON.stringify(r.quantization_config, null, 2)}`,
  );
  return lines;
}

export function registerInspect(program: Command): void {
  program
    .command('inspect')
    .description('config summary, parameters by component, tensors (name, dtype, shape, bytes), quantization config')
    .argument('<model>', 'checkpoint folder, or a .safetensors file with config.json beside it')
    .option('--json', 'one JSON object on stdout')
    .action((model: string, opts: { json?: boolean }) => {
      const report = inspectModel(model);
      process.stdout.write(opts.json ? JSON.stringify(report, null, 2) + '\n' : renderInspect(report).join('\n') + '\n');
    });
}
