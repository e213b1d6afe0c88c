// Knowledge distillation: a student trained against a teacher's output distribution.
export { runDistill, type DistillEvents, type DistillOptions, type DistillPlan, type StepProgress } from './run.js';
export { DEFAULTS, LOSS_KINDS, type RequestedSettings, type TrajectorySettings } from './settings.js';
export { defaultLearningRate, defaultWarmup, learningRate, FINAL_LR_FRACTION } from './schedule.js';
export type { CurvePoint, DistillReport, EvalPoint } from './report.js';
export type { StepResult } from './trainer.js';
