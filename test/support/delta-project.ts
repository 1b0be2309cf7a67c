/**
 * The project the agent's delta tests deploy: a large file of random data of which each version
 * changes 4 KB (so a delta is a small fraction of a pull), and a small code file.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, copyFileSync, openSync, writeFileSync, writeSync } from 'node:fs';
import path from 'node:path';
import { BASE_AMD64, TEST_LABEL } from './engine.js';

/**
 * Writes version `version` (from 1) of the project in `dir`: v1 gets `dataBytes` of random data;
 * each later one changes 4 KB of it at a random place (the previous data kept as `data.bin.old`).
 * The image carries the label `TEST_LABEL=<labelValue>`, for clean-up.
 */
export function writeDeltaProject(dir: string, version: number, dataBytes: number, labelValue: string): void {
  const data = path.join(dir, 'data.bin');
  if (version === 1) {
    const fd = openSync(data, 'w');
    for (let i = 0; i < dataBytes; i += 1024 * 1024) writeSync(fd, randomBytes(Math.min(1024 * 1024, dataBytes - i)));
    closeSync(fd);
  } else {
    copyFileSync(data, `${data}.old`);
    const fd = openSync(data, 'r+');
    writeSync(fd, randomBytes(4096), 0, 4096, Math.floor(Math.random() * (dataBytes - 4096)));
    closeSync(fd);
  }
  writeFileSync(path.join(dir, 'code.txt'), `version ${version} ${randomBytes(8).toString('hex')}\n`);
  writeFileSync(path.join(dir, 'Dockerfile'), `FROM ${BASE_AMD64}\nCOPY data.bin /data.bin\nCOPY code.txt /code.txt\nLABEL ${TEST_LABEL}=${labelValue}\n`);
}
