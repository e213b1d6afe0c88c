// The llmopt program: commander wiring, and the one place errors become exit codes.
//   0 success · 1 bad input (LlmoptError: one line naming what and where) · 2 usage · 3 a failed gate.

import { readFileSync } from 'node:fs';
import chalk from 'chalk';
import { Command, CommanderError } from 'commander';
import { LlmoptError } from '../errors.js';
import { registerEval } from './eval.js';
import { registerGenerate } from './generate.js';
import { EXIT_OK, EXIT_USAGE, type ExitCodeSink } from './exit.js';
import { registerInspect } from './inspect.js';
import { registerQuantize } from './quantize.js';
import { registerPrune } from './prune.js';
import { registerDistill } from './distill.js';

function packageVersion(): string {
  // src/cli/main.ts and dist/cli/main.js both sit two levels below the package root.
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

function buildProgram(exit: ExitCodeSink): Command {
  const program = new Command('llmopt')
    .description('Make large language models cheaper to serve, and measure what it costs in quality.')
    .version(packageVersion())
    .exitOverride()
    .configureOutput({ outputError: (text, write) => write(chalk.red(text)) })
    .showSuggestionAfterError(true);
  registerInspect(program);
  registerQuantize(program);
  registerEval(program, exit);
  registerGenerate(program, exit);
  registerPrune(program, packageVersion());
  registerDistill(program, packageVersion());
  return program;
}

function oneLine(message: string): string {
  return message.replace(/\s*\n\s*/g, ' ').trim();
}

/** Runs llmopt on process-style argv (`node llmopt.js …`) and returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  const exit: ExitCodeSink = { code: 0 };
  try {
    await buildProgram(exit).parseAsync(argv);
    return exit.code;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Commander has already printed its message (or the help/version text).
      const informational = err.code === 'commander.helpDisplayed' || err.code === 'commander.version';
      return informational ? EXIT_OK : EXIT_USAGE;
    }
    if (err instanceof LlmoptError) {
      process.stderr.write(chalk.red(`error: ${oneLine(err.message)}`) + '\n');
      return err.exitCode;
    }
    // Anything else is a bug in llmopt: show where.
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    return 1;
  }
}
