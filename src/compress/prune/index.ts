// Structured pruning: importance scores, head/channel/layer selection, checkpoint surgery.
export { prunedConfig } from './config.js';
export { activationImportance, IMPORTANCE_METHODS, magnitudeImportance, randomImportance, type ImportanceMethod, type ImportanceScores } from './importance.js';
export { checkPrunable, PRUNABLE_ARCHITECTURES } from './names.js';
export { DEFAULT_MULTIPLE_OF, planCounts, type PruneCounts, type PruneRequest } from './plan.js';
export { COPIED_FILES, DEFAULT_CALIB_SAMPLES, DEFAULT_CALIB_SEQ_LEN, REPORT_FILE, runPrune, type PruneOptions, type PruneReport } from './run.js';
export { keepTop, selectUnits, type LayerSelection, type Selection } from './select.js';
export { prunedTensors, sliceMatrixBytes, type TensorSource } from './surgery.js';
