// Error types that reach the user. Anything thrown that is an LlmoptError is printed as one line
// and exits with its exitCode; anything else is a bug and prints a stack trace.

/** Bad input from the user: a file, a tensor, a flag. Exit code 1. */
export class LlmoptError extends Error {
  readonly exitCode: number = 1;
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** A flag or argument that cannot be used. Exit code 2 (usage), as commander uses. */
export class UsageError extends LlmoptError {
  override readonly exitCode = 2;
}

/** A safetensors file that violates the format. Names the file and, where known, the tensor. */
export class SafetensorsError extends LlmoptError {
  constructor(
    readonly file: string,
    readonly tensor: string | undefined,
    readonly reason: string,
  ) {
    super(`${file}${tensor !== undefined ? `: tensor "${tensor}"` : ''}: ${reason}`);
  }
}

/** A config.json (or other checkpoint file) that cannot be understood. */
export class ConfigError extends LlmoptError {
  constructor(
    readonly file: string,
    reason: string,
  ) {
    super(`${file}: ${reason}`);
  }
}
