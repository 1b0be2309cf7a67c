/** The one yes/no prompt, on a terminal only (callers check isInteractive first). */
import readline from 'node:readline/promises';
import process from 'node:process';

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
