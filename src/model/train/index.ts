// The trainable decoder (distill): explicit forward/backward per block, parameters with f32 masters.
export { TrainableDecoder, type TrainParam, type TrainableOptions } from './trainable.js';
