// Strict JSON (RFC 8259) checking with positions, and optional rejection of duplicate keys.
//
// JSON.parse builds the values, but it silently keeps the last of two equal keys and its error
// messages do not always say where the problem is. This scanner runs first: it walks the text once
// with an explicit stack (no recursion, so deep nesting cannot overflow the call stack) and
// reports the first problem with its line and column.

export interface JsonProblem {
  /** Offset in UTF-16 code units from the start of the text. */
  offset: number;
  /** 1-based. */
  line: number;
  /** 1-based, in UTF-16 code units. */
  column: number;
  message: string;
}

export interface JsonCheckOptions {
  /** Report `{"a":1,"a":2}` (keys compared after unescaping) as a problem. */
  rejectDuplicateKeys?: boolean;
  /** Deepest allowed nesting of objects and arrays. */
  maxDepth?: number;
}

export type JsonParseResult = { ok: true; value: unknown } | { ok: false; problem: JsonProblem };

/** Parses `text` as strict JSON, or says where and why it is not. */
export function parseJsonStrict(text: string, options: JsonCheckOptions = {}): JsonParseResult {
  const problem = checkJson(text, options);
  if (problem) return { ok: false, problem };
  return { ok: true, value: JSON.parse(text) };
}

export function describeJsonProblem(p: JsonProblem): string {
  return `invalid JSON at line ${p.line} col ${p.column}: ${p.message}`;
}

const enum State {
  Value,
  ValueOrArrayEnd,
  KeyOrObjectEnd,
  Key,
  Colon,
  AfterValue,
}

interface Frame {
  isObject: boolean;
  keys: Set<string> | undefined;
}

const CH_QUOTE = 0x22;
const CH_BACKSLASH = 0x5c;

function isWhitespace(c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
}

function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}

function isHex(c: number): boolean {
  return isDigit(c) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66);
}

class ScanError {
  constructor(
    readonly offset: number,
    readonly message: string,
  ) {}
}

function describeChar(text: string, i: number): string {
  if (i >= text.length) return 'end of input';
  const c = text.codePointAt(i)!;
  if (c < 0x20 || c === 0x7f) return `control character U+${c.toString(16).toUpperCase().padStart(4, '0')}`;
  return `'${String.fromCodePoint(c)}'`;
}

/** Returns the index just past the string that starts with the quote at `start`. */
function scanString(text: string, start: number): { end: number; hasEscape: boolean } {
  let i = start + 1;
  let hasEscape = false;
  for (;;) {
    if (i >= text.length) throw new ScanError(start, 'unterminated string');
    const c = text.charCodeAt(i);
    if (c === CH_QUOTE) return { end: i + 1, hasEscape };
    if (c < 0x20) throw new ScanError(i, `${describeChar(text, i)} inside a string (must be escaped)`);
    if (c === CH_BACKSLASH) {
      hasEscape = true;
      const e = text.charCodeAt(i + 1);
      if (e === 0x75 /* u */) {
        for (let k = 2; k < 6; k++) {
          if (!isHex(text.charCodeAt(i + k))) throw new ScanError(i, 'invalid \\u escape (needs 4 hex digits)');
        }
        i += 6;
        continue;
      }
      // " \ / b f n r t
      if (e === 0x22 || e === 0x5c || e === 0x2f || e === 0x62 || e === 0x66 || e === 0x6e || e === 0x72 || e === 0x74) {
        i += 2;
        continue;
      }
      throw new ScanError(i, `invalid escape '\\${Number.isNaN(e) ? '' : String.fromCharCode(e)}'`);
    }
    i++;
  }
}

/** Returns the index just past the number that starts at `start`. */
function scanNumber(text: string, start: number): number {
  let i = start;
  if (text.charCodeAt(i) === 0x2d) i++;
  const first = text.charCodeAt(i);
  if (first === 0x30) {
    i++;
  } else if (isDigit(first)) {
    while (isDigit(text.charCodeAt(i))) i++;
  } else {
    throw new ScanError(i, `expected a digit, found ${describeChar(text, i)}`);
  }
  if (text.charCodeAt(i) === 0x2e) {
    i++;
    if (!isDigit(text.charCodeAt(i))) throw new ScanError(i, `expected a digit after '.', found ${describeChar(text, i)}`);
    while (isDigit(text.charCodeAt(i))) i++;
  }
  const e = text.charCodeAt(i);
  if (e === 0x65 || e === 0x45) {
    i++;
    const s = text.charCodeAt(i);
    if (s === 0x2b || s === 0x2d) i++;
    if (!isDigit(text.charCodeAt(i))) throw new ScanError(i, `expected a digit in the exponent, found ${describeChar(text, i)}`);
    while (isDigit(text.charCodeAt(i))) i++;
  }
  return i;
}

function positionOf(text: string, offset: number): { line: number; column: number } {
  let line = 1;
  let lineStart = 0;
  for (let i = 0; i < offset && i < text.length; i++) {
    if (text.charCodeAt(i) === 0x0a) {
      line++;
      lineStart = i + 1;
    }
  }
  return { line, column: offset - lineStart + 1 };
}

/** The first syntax problem in `text`, or undefined when it is one valid JSON value. */
export function checkJson(text: string, options: JsonCheckOptions = {}): JsonProblem | undefined {
  try {
    scan(text, options.rejectDuplicateKeys ?? false, options.maxDepth ?? 1000);
    return undefined;
  } catch (e) {
    if (!(e instanceof ScanError)) throw e;
    return { offset: e.offset, ...positionOf(text, e.offset), message: e.message };
  }
}

function scan(text: string, rejectDuplicateKeys: boolean, maxDepth: number): void {
  const stack: Frame[] = [];
  let state = State.Value;
  let i = 0;
  const n = text.length;
  for (;;) {
    while (i < n && isWhitespace(text.charCodeAt(i))) i++;
    if (i >= n) {
      if (state === State.AfterValue && stack.length === 0) return;
      throw new ScanError(i, i === 0 ? 'empty input' : 'unexpected end of input');
    }
    const c = text.charCodeAt(i);
    switch (state) {
      case State.Value:
      case State.ValueOrArrayEnd: {
        if (c === 0x5d /* ] */ && state === State.ValueOrArrayEnd) {
          stack.pop();
          i++;
          state = State.AfterValue;
          break;
        }
        if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
          if (stack.length >= maxDepth) throw new ScanError(i, `nested deeper than ${maxDepth} levels`);
          const isObject = c === 0x7b;
          stack.push({ isObject, keys: isObject && rejectDuplicateKeys ? new Set() : undefined });
          i++;
          state = isObject ? State.KeyOrObjectEnd : State.ValueOrArrayEnd;
          break;
        }
        if (c === CH_QUOTE) {
          i = scanString(text, i).end;
        } else if (c === 0x2d || isDigit(c)) {
          i = scanNumber(text, i);
        } else if (text.startsWith('true', i)) {
          i += 4;
        } else if (text.startsWith('false', i)) {
          i += 5;
        } else if (text.startsWith('null', i)) {
          i += 4;
        } else {
          throw new ScanError(i, `expected a value, found ${describeChar(text, i)}`);
        }
        state = State.AfterValue;
        break;
      }
      case State.KeyOrObjectEnd:
      case State.Key: {
        if (c === 0x7d /* } */ && state === State.KeyOrObjectEnd) {
          stack.pop();
          i++;
          state = State.AfterValue;
          break;
        }
        if (c !== CH_QUOTE) throw new ScanError(i, `expected a property name in double quotes, found ${describeChar(text, i)}`);
        const { end, hasEscape } = scanString(text, i);
        const keys = stack[stack.length - 1]!.keys;
        if (keys) {
          const key = hasEscape ? (JSON.parse(text.slice(i, end)) as string) : text.slice(i + 1, end - 1);
          if (keys.has(key)) throw new ScanError(i, `duplicate key ${JSON.stringify(key)}`);
          keys.add(key);
        }
        i = end;
        state = State.Colon;
        break;
      }
      case State.Colon:
        if (c !== 0x3a) throw new ScanError(i, `expected ':' after a property name, found ${describeChar(text, i)}`);
        i++;
        state = State.Value;
        break;
      case State.AfterValue: {
        const top = stack[stack.length - 1];
        if (!top) throw new ScanError(i, `unexpected ${describeChar(text, i)} after the JSON value`);
        if (c === 0x2c /* , */) {
          i++;
          state = top.isObject ? State.Key : State.Value;
        } else if (c === (top.isObject ? 0x7d : 0x5d)) {
          stack.pop();
          i++;
        } else {
          throw new ScanError(i, `expected ',' or '${top.isObject ? '}' : ']'}', found ${describeChar(text, i)}`);
        }
        break;
      }
    }
  }
}
