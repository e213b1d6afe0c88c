// One distill run, start to end: check every input (nothing is opened on the device, nothing is
// written, until they all pass) → load the teacher (inference Decoder) and the student
// (TrainableDecoder) → train, with periodic eval and checkpoints → write the output folder: the
// trained student as a plain Hugging Face checkpoint, its training state, and llmopt-report.json.
//
// The output folder is only ever replaced whole (src/io writeOutputDir): each checkpoint publishes
// OUT = { train-state/ }, the end publishes OUT = { model, config, tokenizer files, report,
// train-state/ }. A kill at any moment leaves the last complete checkpoint.

import fs from 'node:fs';
import path from 'node:path';
import { LlmoptError } from '../../errors.js';
import { CONFIG_FILE, SafetensorsReader, checkNotAnInput, copyFiles, encodeFromFloat32, writeCheckpointTensors, writeOutputDir, sha256File, type DType, type TensorToWrite } from '../../io/index.js';
import { evaluatePerplexity } from '../../eval/perplexity.js';
import { defaultBatch } from '../../eval/run.js';
import { makeWindows, protocolName, type Window } from '../../eval/windows.js';
import { loadModel, type LoadedModel } from '../../model/load.js';
import { TrainableDecoder } from '../../model/train/index.js';
import type { Device, TrainingOps } from '../../tensor/device.js';
import { COPIED_FILES } from '../prune/run.js';
import { loadTokenStream, WindowSampler, type TokenStream } from './data.js';
import { checkModel, checkSameVocabulary, describeModel, modelFingerprint, tokensSha256, type CheckedModel } from './inputs.js';
import { REPORT_FILE, type CurvePoint, type DistillReport, type EvalPoint, type EvalProtocolReport, type RunSegment } from './report.js';
import { defaultLearningRate, defaultWarmup, FINAL_LR_FRACTION } from './schedule.js';
import { checkRequested, DEFAULTS, resolveSettings, settingsForResume, tokensPerStep, type RequestedSettings, type TrajectorySettings } from './settings.js';
import { masterName, momentName, readTrainState, STATE_DIR, writeTrainState, type InputHashes, type LoadedTrainState, type StateTensor, type TrainState } from './state.js';
import { DistillTrainer, type StepResult } from './trainer.js';

export interface DistillOptions {
  teacher: string;
  student: string;
  /** A text/JSONL file or a built-in set name. */
  data: string;
  output: string;
  requested: RequestedSettings;
  /** Perplexity of the student on this text file (chunksN) at step 0, every evalEvery steps and at the end. */
  evalData?: string;
  evalEvery?: number;
  /** Eval window (default: the training seq_len). */
  evalSeqLen?: number;
  /** Score only the first N tokens of the eval file. */
  evalMaxTokens?: number;
  /** Checkpoint every N steps (0: only at the end); default DEFAULTS.saveEvery. */
  saveEvery?: number;
  resume: boolean;
  /** Replace an existing output folder (a fresh run). */
  overwrite: boolean;
  /** Opened once every input check has passed. */
  device: () => { device: Device; name: string };
  toolVersion: string;
  events?: DistillEvents;
}

export interface DistillPlan {
  teacher: CheckedModel;
  student: CheckedModel;
  data: TokenStream;
  settings: TrajectorySettings;
  lrSource: 'flag' | 'default rule';
  windowsPerEpoch: number;
  /** Step the run starts at (> 0 when resuming). */
  startStep: number;
  evalProtocol?: EvalProtocolReport;
  deviceName: string;
  dtype: string;
}

export interface StepProgress {
  /** Training tokens done (whole run, resumed steps included) and in total. */
  tokens: number;
  totalTokens: number;
  /** Tokens per second of optimizer-step time in this process. */
  tokensPerSecond: number;
}

export interface DistillEvents {
  onWarning?: (line: string) => void;
  onPlan?: (plan: DistillPlan) => void;
  onStep?: (r: StepResult, p: StepProgress) => void;
  onEval?: (point: EvalPoint, who: 'student' | 'teacher') => void;
  onCheckpoint?: (step: number, seconds: number) => void;
}

interface EvalSet {
  file: string;
  tokens: Int32Array;
  windows: Window[];
  protocol: EvalProtocolReport;
}

const seconds = (t0: number): number => (performance.now() - t0) / 1000;

function checkRunFlags(opts: DistillOptions): void {
  checkRequested(opts.requested);
  const int = (flag: string, v: number | undefined, min: number) => {
    if (v !== undefined && (!Number.isSafeInteger(v) || v < min)) throw new LlmoptError(`${flag} ${v}: expected an integer ≥ ${min}`);
  };
  int('--eval-every', opts.evalEvery, 1);
  int('--eval-seq-len', opts.evalSeqLen, 2);
  int('--eval-max-tokens', opts.evalMaxTokens, 2);
  int('--save-every', opts.saveEvery, 0);
  if (opts.evalData === undefined) {
    const stray = [['--eval-every', opts.evalEvery], ['--eval-seq-len', opts.evalSeqLen], ['--eval-max-tokens', opts.evalMaxTokens]].find(([, v]) => v !== undefined);
    if (stray) throw new LlmoptError(`${stray[0]} needs --eval-data (the text to measure perplexity on)`);
  }
  if (opts.resume && opts.overwrite) throw new LlmoptError('--resume and --force both given: --resume continues the checkpoint in the output folder, --force replaces the folder');
}

/** Output folder checks that need no data: not an input; exists only with --force or --resume. */
function checkOutput(opts: DistillOptions, teacher: CheckedModel, student: CheckedModel): LoadedTrainState | undefined {
  const inputs = [teacher.paths.dir, ...teacher.paths.weightFiles, student.paths.dir, ...student.paths.weightFiles];
  if (fs.existsSync(opts.data)) inputs.push(opts.data);
  if (opts.evalData !== undefined && fs.existsSync(opts.evalData)) inputs.push(opts.evalData);
  checkNotAnInput(opts.output, inputs);
  if (opts.resume) return readTrainState(opts.output);
  const stat = fs.statSync(opts.output, { throwIfNoEntry: false });
  if (stat && !stat.isDirectory()) throw new LlmoptError(`${opts.output}: exists and is not a folder`);
  if (stat && !opts.overwrite) {
    const hasState = fs.existsSync(path.join(opts.output, STATE_DIR));
    throw new LlmoptError(`${opts.output}: already exists; ${hasState ? 'use --resume to continue its checkpoint, or ' : 'use '}--force to replace it`);
  }
  return undefined;
}

function loadEvalSet(opts: DistillOptions, teacher: CheckedModel, window: number, maxPositions: number): EvalSet | undefined {
  if (opts.evalData === undefined) return undefined;
  const file = opts.evalData;
  const stat = fs.statSync(file, { throwIfNoEntry: false });
  if (!stat) throw new LlmoptError(`--eval-data ${file}: no such file`);
  if (!stat.isFile()) throw new LlmoptError(`--eval-data ${file}: not a file`);
  if (window > maxPositions) throw new LlmoptError(`--eval-seq-len ${window} is longer than the student's context (max_position_embeddings ${maxPositions})`);
  const text = fs.readFileSync(file, 'utf8');
  if (text.trim() === '') throw new LlmoptError(`--eval-data ${file}: the file is empty`);
  const all = teacher.tokenizer!.encode(text);
  const tokens = opts.evalMaxTokens !== undefined ? all.subarray(0, opts.evalMaxTokens) : all;
  const protocol = { kind: 'chunks' as const, window, keepLast: false };
  const windows = makeWindows(protocol, tokens.length);
  if (windows.length === 0) {
    throw new LlmoptError(`--eval-data ${file}: ${tokens.length} tokens are fewer than one ${window}-token eval window; use a smaller --eval-seq-len`);
  }
  const scored = windows.reduce((n, w) => n + w.length - w.firstTarget, 0);
  return {
    file: path.resolve(file),
    tokens,
    windows,
    protocol: {
      file: path.resolve(file),
      sha256: sha256File(file),
      name: protocolName(protocol),
      window,
      windows: windows.length,
      tokens_in_file: all.length,
      tokens_used: tokens.length,
      tokens_scored: scored,
      max_tokens: opts.evalMaxTokens ?? null,
    },
  };
}

/** A resume must read the same teacher, student and training tokens as the run it continues. */
function checkResumeInputs(saved: InputHashes, now: InputHashes, opts: DistillOptions): void {
  const differs = (what: string) => new LlmoptError(`--resume: ${what} is not the one the checkpoint in ${opts.output} was trained with; resume with the same inputs`);
  if (saved.teacher !== now.teacher) throw differs(`--teacher ${opts.teacher}`);
  if (saved.student !== now.student) throw differs(`--student ${opts.student}`);
  if (saved.data_tokens !== now.data_tokens) throw differs(`--data ${opts.data} (its tokens)`);
}

/** A resume may drop or add --eval-data, but not measure other windows than the points it continues. */
function checkResumeEval(saved: EvalProtocolReport | null, now: EvalProtocolReport | undefined): void {
  if (saved === null || now === undefined) return;
  if (saved.sha256 !== now.sha256 || saved.name !== now.name || saved.tokens_used !== now.tokens_used) {
    throw new LlmoptError(
      `--resume: the eval (${now.name} on ${now.file}, ${now.tokens_used} tokens) differs from the checkpoint's (${saved.name} on ${saved.file}, ${saved.tokens_used} tokens); resume with the same --eval-data, --eval-seq-len and --eval-max-tokens, or without --eval-data`,
    );
  }
}

/** Leftovers of a killed atomic write (`.OUT.tmp-<pid>-…`, `.OUT.old-<pid>-…` of a process that is gone). */
function removeStaleSiblings(out: string): void {
  const target = path.resolve(out);
  const parent = path.dirname(target);
  if (!fs.existsSync(parent) || !fs.existsSync(target)) return;
  const name = path.basename(target);
  for (const entry of fs.readdirSync(parent)) {
    const m = new RegExp(`^\\.${name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\.(?:tmp|old)-(\\d+)-[0-9a-f]+$`).exec(entry);
    if (m === null || processAlive(Number(m[1]))) continue;
    fs.rmSync(path.join(parent, entry), { recursive: true, force: true });
  }
}

function processAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The output dtype of an exported tensor: the student checkpoint's dtype for that name when it is a float type, else F32. */
function outputDtype(student: CheckedModel, name: string): DType {
  const d = student.dtypes.get(name);
  return d === 'F32' || d === 'F16' || d === 'BF16' ? d : 'F32';
}

export async function runDistill(opts: DistillOptions): Promise<DistillReport> {
  const started = performance.now();
  const events = opts.events ?? {};
  const warnings: string[] = [];
  const warn = (line: string) => {
    warnings.push(line);
    events.onWarning?.(line);
  };

  // --- checks (nothing opened, nothing written) ----------------------------------------------
  checkRunFlags(opts);
  const teacher = await checkModel(opts.teacher, 'teacher');
  const student = await checkModel(opts.student, 'student');
  checkSameVocabulary(teacher, student);
  const resumed = checkOutput(opts, teacher, student);
  const data = loadTokenStream(opts.data, teacher.tokenizer!, '--data');
  checkSameVocabulary(teacher, student, data.sample);
  if (student.parameters > teacher.parameters) {
    warn(`the student (${student.parameters.toLocaleString('en-US')} parameters) is larger than the teacher (${teacher.parameters.toLocaleString('en-US')})`);
  }

  const maxSeqLen = Math.min(teacher.spec.maxPositionEmbeddings, student.spec.maxPositionEmbeddings);
  const defaultLr = defaultLearningRate(student.parameters);
  let settings: TrajectorySettings;
  if (resumed) {
    settings = settingsForResume(opts.requested, resumed.state.settings);
  } else {
    settings = resolveSettings(
      opts.requested,
      {
        windowsPerEpoch: (L) => WindowSampler.windowsPerEpoch(data.tokens.length, L),
        defaultSeqLen: Math.min(DEFAULTS.maxSeqLen, maxSeqLen),
        maxSeqLen,
        vocabSize: student.spec.vocabSize,
        defaultLr,
      },
      defaultWarmup,
    );
  }
  if (data.tokens.length < settings.seq_len + 1) {
    throw new LlmoptError(
      `--data ${opts.data}: ${data.tokens.length} tokens are fewer than one training window of ${settings.seq_len + 1} (--seq-len ${settings.seq_len} + the next token); use more text or a smaller --seq-len`,
    );
  }
  const evalSet = loadEvalSet(opts, teacher, opts.evalSeqLen ?? Math.min(settings.seq_len, student.spec.maxPositionEmbeddings), student.spec.maxPositionEmbeddings);
  if (resumed) checkResumeEval(resumed.state.eval_protocol, evalSet?.protocol);
  if (resumed && resumed.state.step >= settings.steps && fs.existsSync(path.join(opts.output, CONFIG_FILE))) {
    throw new LlmoptError(`--resume: the run in ${opts.output} already finished (step ${resumed.state.step} of ${settings.steps}); nothing to resume`);
  }

  const tHash = performance.now();
  const teacherInput = describeModel(teacher);
  const studentInput = describeModel(student);
  const hashes: InputHashes = { teacher: modelFingerprint(teacherInput), student: modelFingerprint(studentInput), data_tokens: tokensSha256(data.tokens) };
  if (resumed) checkResumeInputs(resumed.state.inputs, hashes, opts);
  const hashSeconds = seconds(tHash);

  // --- device and models ---------------------------------------------------------------------
  const { device, name: deviceName } = opts.device();
  const ops = device.training;
  if (ops === undefined) throw new LlmoptError(`the ${deviceName} device cannot train yet (no training ops); use --device cpu`);
  removeStaleSiblings(opts.output);

  const tLoad = performance.now();
  const useTeacher = settings.alpha < 1;
  let teacherModel: LoadedModel | undefined;
  let studentModel: TrainableDecoder | undefined;
  try {
    if (useTeacher || evalSet) teacherModel = await loadModel(opts.teacher, device);
    studentModel = await TrainableDecoder.load(opts.student, device);
    const windowsPerEpoch = WindowSampler.windowsPerEpoch(data.tokens.length, settings.seq_len);
    const sampler = new WindowSampler(data.tokens, settings.seq_len, settings.seed);
    const trainer = new DistillTrainer({
      ops,
      student: studentModel,
      teacher: useTeacher ? teacherModel!.decoder : undefined,
      nextBatch: (b) => sampler.next(b),
      batch: settings.batch,
      seqLen: settings.seq_len,
      gradAccum: settings.grad_accum,
      loss: { kind: settings.loss, temperature: settings.temperature, alpha: settings.alpha, skewLambda: settings.skew_lambda, teacherTopK: settings.teacher_topk },
      optimizer: {
        lr: settings.lr,
        warmup: settings.warmup,
        steps: settings.steps,
        weightDecay: settings.weight_decay,
        clipGrad: settings.clip_grad,
        beta1: settings.beta1,
        beta2: settings.beta2,
        eps: settings.eps,
      },
    });
    const curve: CurvePoint[] = resumed ? [...resumed.state.curve] : [];
    const evals: EvalPoint[] = resumed ? [...resumed.state.evals] : [];
    const segments: RunSegment[] = resumed ? [...resumed.state.segments] : [];
    let teacherEval: EvalPoint | null = resumed ? resumed.state.teacher_eval : null;
    let step = 0;
    if (resumed) {
      restoreState(ops, studentModel, trainer, resumed);
      sampler.seek(resumed.state.sampler);
      step = resumed.state.step;
    }
    const loadSeconds = seconds(tLoad);

    const lrSource: 'flag' | 'default rule' = resumed ? resumed.state.lr_source : opts.requested.lr !== undefined ? 'flag' : 'default rule';
    events.onPlan?.({
      teacher,
      student,
      data,
      settings,
      lrSource,
      windowsPerEpoch,
      startStep: step,
      evalProtocol: evalSet?.protocol,
      deviceName,
      dtype: device.dtype,
    });

    // --- eval --------------------------------------------------------------------------------
    let evalSeconds = 0;
    const perStep = tokensPerStep(settings);
    const evaluate = async (who: 'student' | 'teacher'): Promise<EvalPoint> => {
      const t0 = performance.now();
      const spec = who === 'teacher' ? teacher.spec : student.spec;
      const model = who === 'teacher' ? teacherModel!.decoder : studentModel!.decoder();
      const r = await evaluatePerplexity({
        device,
        model,
        tokens: evalSet!.tokens,
        windows: evalSet!.windows,
        batch: defaultBatch(evalSet!.protocol.window, spec),
        vocabSize: spec.vocabSize,
      });
      evalSeconds += seconds(t0);
      const point = { step: who === 'teacher' ? 0 : step, tokens: who === 'teacher' ? 0 : step * perStep, ppl: r.ppl, nll: r.nll, tokens_scored: r.tokensScored };
      events.onEval?.(point, who);
      return point;
    };
    // A fresh run scores the student before training; a resume that adds --eval-data starts at its step.
    if (evalSet && teacherEval === null) teacherEval = await evaluate('teacher');
    if (evalSet && evals.length === 0) evals.push(await evaluate('student'));
    const evalProtocol = evalSet?.protocol ?? resumed?.state.eval_protocol ?? null;

    // --- checkpoints ---------------------------------------------------------------------------
    const saveEvery = opts.saveEvery ?? DEFAULTS.saveEvery;
    let checkpointSeconds = 0;
    const segment: RunSegment = { started: new Date().toISOString(), device: deviceName, from_step: step, to_step: step, train_s: 0, tokens_per_s: 0 };
    const stateNow = (): Omit<TrainState, 'format' | 'version'> => ({
      step,
      sampler: sampler.position,
      settings,
      lr_source: lrSource,
      inputs: hashes,
      curve,
      evals,
      teacher_eval: teacherEval,
      eval_protocol: evalProtocol,
      segments: [...segments, segment],
    });
    const stateTensors = (): StateTensor[] => studentModel!.params.flatMap((p, i) => {
      const { m, v } = trainer.moments[i]!;
      return [
        { name: masterName(p.name), shape: p.shape, data: () => device.download(p.master) },
        { name: momentName('m', p.name), shape: p.shape, data: () => device.download(m) },
        { name: momentName('v', p.name), shape: p.shape, data: () => device.download(v) },
      ];
    });
    const inputsOfOutput = [teacher.paths.dir, student.paths.dir];
    const saveCheckpoint = async (): Promise<void> => {
      const t0 = performance.now();
      await writeOutputDir(opts.output, async (tmp) => writeTrainState(tmp, stateNow(), stateTensors()), { overwrite: true, inputs: inputsOfOutput });
      checkpointSeconds += seconds(t0);
      events.onCheckpoint?.(step, seconds(t0));
    };

    // --- train -----------------------------------------------------------------------------------
    const totalTokens = settings.steps * perStep;
    let trainSeconds = 0;
    while (step < settings.steps) {
      const t0 = performance.now();
      const r = trainer.step(step);
      device.synchronize();
      trainSeconds += seconds(t0);
      step = r.step;
      curve.push({ step, tokens: step * perStep, lr: r.lr, loss: r.loss, distill: r.distill, ce: r.ce, grad_norm: r.gradNorm });
      segment.to_step = step;
      segment.train_s = trainSeconds;
      segment.tokens_per_s = ((step - segment.from_step) * perStep) / trainSeconds;
      events.onStep?.(r, { tokens: step * perStep, totalTokens, tokensPerSecond: segment.tokens_per_s });
      const last = step === settings.steps;
      if (evalSet && (last || (opts.evalEvery !== undefined && step % opts.evalEvery === 0))) evals.push(await evaluate('student'));
      if (!last && saveEvery > 0 && step % saveEvery === 0) await saveCheckpoint();
    }
    if (evalSet && evals.at(-1)?.step !== step) evals.push(await evaluate('student'));

    // --- the output folder ---------------------------------------------------------------------
    const tWrite = performance.now();
    const exported = studentModel.exportWeights();
    const tensors: TensorToWrite[] = exported.map((w) => {
      const dtype = outputDtype(student, w.name);
      return { name: w.name, dtype, shape: w.shape, data: () => encodeFromFloat32(dtype, w.data) };
    });
    const report: DistillReport = {
      tool: { name: 'llmopt', version: opts.toolVersion },
      command: 'distill',
      created: new Date().toISOString(),
      inputs: {
        teacher: teacherInput,
        student: studentInput,
        data: {
          source: data.source,
          description: data.description,
          sha256: data.file !== undefined ? sha256File(data.file) : null,
          tokens: data.tokens.length,
          tokens_sha256: hashes.data_tokens,
          records: data.records ?? null,
          windows_per_epoch: windowsPerEpoch,
        },
      },
      output: { path: path.resolve(opts.output), files: [], dtypes: [...new Set(tensors.map((t) => t.dtype))] },
      settings: {
        ...settings,
        tokens: totalTokens,
        tokens_per_step: perStep,
        epochs: totalTokens / (windowsPerEpoch * settings.seq_len),
        lr_source: lrSource,
        eval_every: opts.evalEvery ?? null,
        save_every: saveEvery,
        final_lr_fraction: FINAL_LR_FRACTION,
      },
      device: { name: deviceName, dtype: device.dtype },
      teacher_forward: useTeacher,
      eval: evalProtocol ? { protocol: evalProtocol, teacher: teacherEval, points: evals } : null,
      curve,
      segments: [...segments, segment],
      warnings,
      timings_s: { load: loadSeconds, hash: hashSeconds, train: trainSeconds, eval: evalSeconds, checkpoints: checkpointSeconds, write: 0, total: 0 },
      tokens_per_s: segment.tokens_per_s,
    };
    const files = await writeOutputDir(
      opts.output,
      async (tmp) => {
        const written = writeCheckpointTensors(tmp, tensors);
        const copied = copyFiles(student.paths.dir, tmp, [CONFIG_FILE, ...COPIED_FILES], { missingOk: true });
        if (student.tokenizer === undefined) copied.push(...copyFiles(teacher.paths.dir, tmp, COPIED_FILES.filter((f) => !copied.includes(f)), { missingOk: true }));
        writeTrainState(tmp, stateNow(), stateTensors());
        const names = [...written.files.map((f) => path.basename(f)), ...(written.indexFile ? [path.basename(written.indexFile)] : []), ...copied, `${STATE_DIR}/`, REPORT_FILE];
        report.output.files = names;
        report.timings_s.write = seconds(tWrite);
        report.timings_s.total = seconds(started);
        fs.writeFileSync(path.join(tmp, REPORT_FILE), `${JSON.stringify(report, null, 2)}\n`);
        return names;
      },
      { overwrite: true, inputs: inputsOfOutput },
    );
    report.output.files = files;
    removeStaleSiblings(opts.output);
    return report;
  } finally {
    studentModel?.dispose();
    teacherModel?.decoder.dispose({ weights: true });
  }
}

/** Puts a checkpoint's master weights and AdamW moments back into the student and the trainer. */
function restoreState(ops: TrainingOps, student: TrainableDecoder, trainer: DistillTrainer, resumed: LoadedTrainState): void {
  const file = resumed.tensorsFile;
  const reader = SafetensorsReader.open(file);
  try {
    restoreTensors(ops, student, trainer, reader);
  } finally {
    reader.close();
  }
}

function restoreTensors(ops: TrainingOps, student: TrainableDecoder, trainer: DistillTrainer, reader: SafetensorsReader): void {
  const file = reader.file;
  const read = (name: string, shape: readonly number[]): Float32Array => {
    const info = reader.tensors.get(name);
    if (info === undefined) throw new LlmoptError(`${file}: no tensor "${name}"; the checkpoint does not match the student`);
    if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
      throw new LlmoptError(`${file}: tensor "${name}" has shape [${info.shape.join(', ')}], the student's is [${shape.join(', ')}]`);
    }
    return reader.readFloat32(name);
  };
  student.params.forEach((p, i) => {
    const master = ops.uploadF32(read(masterName(p.name), p.shape), p.shape);
    ops.castCopy(p.master, master);
    if (p.compute !== undefined) ops.castCopy(p.compute, p.master);
    student.device.free(master);
    const { m, v } = trainer.moments[i]!;
    for (const [which, t] of [['m', m], ['v', v]] as const) {
      const host = ops.uploadF32(read(momentName(which, p.name), p.shape), p.shape);
      ops.castCopy(t, host);
      student.device.free(host);
    }
  });
}

