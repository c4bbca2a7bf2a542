// The teacher's camera for the adaptation scenarios (shaped.mjs, bursty.mjs).

import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

/**
 * Writes a 2 s loop of 960x540 video at 15 fps (Y4M, which Chromium's fake capture plays) that
 * costs about what a real camera costs: bars for structure, and fresh noise in every frame, which
 * no motion search can predict, so each layer fills the bitrate cap the teacher page gives it.
 * 960x540 (the smallest size for which Chromium still sends three simulcast layers) and 15 fps, a
 * common classroom camera rate, rather than the fake camera's 1280x720 at 20: three encoders and
 * two decoders of this picture share the machine's two cores, and a Chromium short of CPU
 * encodes and decodes in fits and starts, which would look like a stall.
 */
export async function texturedCamera() {
  const [width, height, frames] = [960, 540, 30];
  const file = path.join(tmpdir(), `classroom-camera-${process.pid}.y4m`);
  const luma = width * height;
  const chroma = Buffer.alloc(luma / 2, 128);
  const parts = [Buffer.from(`YUV4MPEG2 W${width} H${height} F15:1 Ip A1:1 C420jpeg\n`)];
  for (let f = 0; f < frames; f += 1) {
    const y = randomBytes(luma);
    for (let i = 0; i < luma; i += 1) {
      const bar = (((i % width) + f * 10) >> 6) & 1 ? 150 : 70;
      y[i] = bar + (y[i] & 63);
    }
    parts.push(Buffer.from('FRAME\n'), y, chroma);
  }
  await writeFile(file, Buffer.concat(parts));
  return file;
}
