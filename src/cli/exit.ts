// Exit codes: 0 success · 1 bad input (LlmoptError) · 2 usage (UsageError, commander) · 3 a failed gate.

export const EXIT_OK = 0;
export const EXIT_USAGE = 2;
export const EXIT_GATE_FAILED = 3;

/** Where a subcommand's action leaves its exit code for main(). */
export interface ExitCodeSink {
  code: number;
}
