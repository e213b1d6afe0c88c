// Post-training quantization to compressed-tensors: schemes, observers, RTN, GPTQ, SmoothQuant, the
// sequential pipeline and the exporter.

export { quantizeModel, prepareQuantize, runQuantize, DEFAULTS, REPORT_FILE, COPIED_FILES, type QuantizeOptions, type QuantizeSettings, type QuantizeRun, type PreparedQuantize, type QuantizeReport } from './quantize.js';
export { DEFAULT_GROUP_SIZE, SCHEME_NAMES, resolveScheme, describeScheme, isSchemeName, type SchemeName, type ResolvedScheme, type SchemeOptions, type Method, type ObserverName } from './scheme.js';
export type { LayerReport } from './pipeline.js';
