/**
 * Every question the CLI asks goes through here, on a terminal only: callers check
 * isInteractive() first, and each question has a flag that answers it instead. inquirer is loaded
 * on the first question, so commands that never ask never load it. Ctrl-C at a question rejects
 * (report.ts turns that into exit 130).
 */
import readline from 'node:readline/promises';
import process from 'node:process';

/** A yes/no question; anything but y or yes is no. */
export async function confirm(question: string): Promise<boolean> {
  const rl = readline.createInterface({ input: process.stdin, output: process.stderr });
  try {
    const answer = (await rl.question(`${question} [y/N] `).catch((err: unknown) => {
      process.stderr.write('\n'); // Ctrl-C: what follows starts on a line of its own
      throw err;
    })).trim().toLowerCase();
    return answer === 'y' || answer === 'yes';
  } finally {
    rl.close();
  }
}

export interface Choice<T> {
  /** What the list shows. */
  name: string;
  value: T;
}

/** One of a list, picked with the arrow keys. */
export async function select<T>(message: string, choices: Array<Choice<T>>, options: { pageSize?: number } = {}): Promise<T> {
  const { default: inquirer } = await import('inquirer');
  const answer = await inquirer.prompt([{ type: 'select', name: 'value', message, choices, ...(options.pageSize ? { pageSize: options.pageSize } : {}) }]);
  return answer.value as T;
}

/** A line of text; `validate` returns true, or what is wrong (asked again). */
export async function input(message: string, options: { validate?: (value: string) => true | string } = {}): Promise<string> {
  const { default: inquirer } = await import('inquirer');
  const answer = await inquirer.prompt([{ type: 'input', name: 'value', message, ...(options.validate ? { validate: options.validate } : {}) }]);
  return answer.value as string;
}

/** A secret, echoed as `*`. */
export async function password(message: string): Promise<string> {
  const { default: inquirer } = await import('inquirer');
  const answer = await inquirer.prompt([{ type: 'password', name: 'value', message, mask: '*' }]);
  return answer.value as string;
}
