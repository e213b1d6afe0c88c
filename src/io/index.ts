// The tensor-IO core's public API: everything other layers import from src/io.

export * from './dtypes.js';
export * from './safetensors.js';
export * from './checkpoint.js';
export * from './atomic.js';
export { checkJson, describeJsonProblem, parseJsonStrict, type JsonCheckOptions, type JsonParseResult, type JsonProblem } from './json.js';
export { sha256File } from './hash.js';
