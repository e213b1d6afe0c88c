// Errors of the CUDA backend. Both are LlmoptErrors: they reach the user as one line.

import { LlmoptError } from '../../errors.js';

/** No usable GPU: a library is missing, the driver is too old, or no device is present. */
export class CudaUnavailableError extends LlmoptError {}

/** A CUDA, NVRTC or cuBLASLt call that failed. The message names the call (and kernel) and the status. */
export class CudaError extends LlmoptError {}
