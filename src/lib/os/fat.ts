/**
 * A FAT12/16/32 reader and writer over a byte range of an image or drive: no mount, no root, the
 * same on every OS. It reads the BPB, keeps the FAT in memory (a boot partition's FAT is small),
 * writes every FAT copy on flush and keeps FAT32's FSInfo free count and next-free hint current.
 * Names: 8.3 with the NT lower-case flags where they suffice, VFAT long names otherwise (with the
 * short alias `BASENA~N.EXT` and its checksum), as Linux and Windows write them.
 *
 * @example
 *   const fs = await FatFs.open(device);
 *   await fs.writeFile('system-connections/resin-wifi', Buffer.from(text));
 *   await fs.flush();
 */

/** Random access to bytes: an image file, a block device, a partition of one, or a Buffer. */
export interface BlockDevice {
  readonly size: number;
  read(offset: number, length: number): Promise<Buffer>;
  write(offset: number, data: Buffer): Promise<void>;
  /** Makes what was written durable before what follows (fsync); absent where there is nothing to flush. */
  sync?(): Promise<void>;
}

/** A BlockDevice in memory (tests, and small images read whole). */
export class BufferDevice implements BlockDevice {
  constructor(readonly buffer: Buffer) {}
  get size(): number {
    return this.buffer.length;
  }
  async read(offset: number, length: number): Promise<Buffer> {
    return Buffer.from(this.buffer.subarray(offset, offset + length));
  }
  async write(offset: number, data: Buffer): Promise<void> {
    data.copy(this.buffer, offset);
  }
}

/** The bytes [offset, offset + size) of `device` as a device of its own (a partition). */
export function rangeOf(device: BlockDevice, offset: number, size: number): BlockDevice {
  const check = (at: number, length: number) => {
    if (at < 0 || at + length > size) throw new FatError('corrupt', `access at ${at}+${length} is outside the ${size}-byte file system`);
  };
  return {
    size,
    read: (at, length) => {
      check(at, length);
      return device.read(offset + at, length);
    },
    write: (at, data) => {
      check(at, data.length);
      return device.write(offset + at, data);
    },
    ...(device.sync ? { sync: () => device.sync?.() ?? Promise.resolve() } : {}),
  };
}

export type FatErrorCode = 'notFound' | 'notDirectory' | 'isDirectory' | 'noSpace' | 'exists' | 'corrupt' | 'invalidName';

/** What went wrong in the file system, typed so callers can word it for their users. */
export class FatError extends Error {
  constructor(
    readonly code: FatErrorCode,
    message: string,
    /** For noSpace: bytes free and bytes the write needs. */
    readonly space?: { free: number; needed: number },
  ) {
    super(message);
    this.name = 'FatError';
  }
}

export type FatType = 12 | 16 | 32;

export interface FatEntry {
  /** The long name when there is one, else the 8.3 name as shown by Linux. */
  name: string;
  /** The 8.3 name as stored (`CONFIG~1.JSO`). */
  shortName: string;
  isDirectory: boolean;
  size: number;
  firstCluster: number;
}

/** Geometry read from the boot sector. */
export interface FatGeometry {
  type: FatType;
  bytesPerSector: number;
  sectorsPerCluster: number;
  reservedSectors: number;
  fatCount: number;
  fatSectors: number;
  rootEntryCount: number;
  totalSectors: number;
  rootCluster: number;
  fsInfoSector: number;
  /** FAT32 with mirroring off: the only FAT in use. */
  activeFat?: number;
  clusterCount: number;
  dataOffset: number;
  rootOffset: number;
}

const ATTR_READ_ONLY = 0x01;
const ATTR_HIDDEN = 0x02;
const ATTR_SYSTEM = 0x04;
const ATTR_VOLUME = 0x08;
const ATTR_DIRECTORY = 0x10;
const ATTR_ARCHIVE = 0x20;
const ATTR_LFN = ATTR_READ_ONLY | ATTR_HIDDEN | ATTR_SYSTEM | ATTR_VOLUME;
const ENTRY = 32;
const FREE = 0;

/**
 * Reads the geometry of a FAT boot sector, or undefined when the sector is not one (so callers
 * can probe partitions). Type by cluster count, as the specification decides it.
 */
export function parseBootSector(sector: Buffer): FatGeometry | undefined {
  if (sector.length < 512 || sector.readUInt16LE(510) !== 0xaa55) return undefined;
  if (sector[0] !== 0xeb && sector[0] !== 0xe9) return undefined;
  const bytesPerSector = sector.readUInt16LE(11);
  const sectorsPerCluster = sector.readUInt8(13);
  const reservedSectors = sector.readUInt16LE(14);
  const fatCount = sector.readUInt8(16);
  const rootEntryCount = sector.readUInt16LE(17);
  const totalSectors = sector.readUInt16LE(19) || sector.readUInt32LE(32);
  const fatSectors = sector.readUInt16LE(22) || sector.readUInt32LE(36);
  const powerOfTwo = (n: number) => n > 0 && (n & (n - 1)) === 0;
  if (![512, 1024, 2048, 4096].includes(bytesPerSector) || !powerOfTwo(sectorsPerCluster) || reservedSectors < 1 || fatCount < 1 || fatSectors < 1 || totalSectors < 1) return undefined;
  const rootSectors = Math.ceil((rootEntryCount * ENTRY) / bytesPerSector);
  const firstDataSector = reservedSectors + fatCount * fatSectors + rootSectors;
  if (firstDataSector >= totalSectors) return undefined;
  const clusterCount = Math.floor((totalSectors - firstDataSector) / sectorsPerCluster);
  const type: FatType = clusterCount < 4085 ? 12 : clusterCount < 65525 ? 16 : 32;
  const extFlags = type === 32 ? sector.readUInt16LE(40) : 0;
  return {
    type,
    bytesPerSector,
    sectorsPerCluster,
    reservedSectors,
    fatCount,
    fatSectors,
    rootEntryCount,
    totalSectors,
    rootCluster: type === 32 ? sector.readUInt32LE(44) : 0,
    fsInfoSector: type === 32 ? sector.readUInt16LE(48) : 0,
    activeFat: extFlags & 0x80 ? extFlags & 0x0f : undefined,
    clusterCount,
    dataOffset: firstDataSector * bytesPerSector,
    rootOffset: (reservedSectors + fatCount * fatSectors) * bytesPerSector,
  };
}

/** A directory: FAT12/16's fixed root region, or a cluster chain. */
type DirRef = { kind: 'fixed' } | { kind: 'chain'; cluster: number };

interface RawEntry extends FatEntry {
  /** Index of the 8.3 entry in the directory, and of its first long-name entry. */
  slot: number;
  firstSlot: number;
}

interface LoadedDir {
  ref: DirRef;
  bytes: Buffer;
  /** Clusters of a chain directory, in order. */
  clusters: number[];
  entries: RawEntry[];
  label?: string;
}

export class FatFs {
  readonly geometry: FatGeometry;
  private volumeLabel: string;
  private readonly fat: Buffer;
  private dirtyFrom = Number.POSITIVE_INFINITY;
  private dirtyTo = -1;
  private freeCount: number;
  private nextFree = 2;

  private constructor(private readonly device: BlockDevice, geometry: FatGeometry, fat: Buffer, bootLabel: string) {
    this.geometry = geometry;
    this.fat = fat;
    this.freeCount = 0;
    for (let c = 2; c < geometry.clusterCount + 2; c++) if (this.get(c) === FREE) this.freeCount++;
    this.volumeLabel = bootLabel;
  }

  /** Opens the file system on `device`; a device that holds none is a `corrupt` FatError. */
  static async open(device: BlockDevice): Promise<FatFs> {
    const boot = await device.read(0, 512);
    const geometry = parseBootSector(boot);
    if (!geometry) throw new FatError('corrupt', 'no FAT file system (the boot sector is not a FAT boot sector)');
    const fatBytes = geometry.fatSectors * geometry.bytesPerSector;
    const needed = geometry.dataOffset + geometry.clusterCount * geometry.sectorsPerCluster * geometry.bytesPerSector;
    if (needed > device.size) throw new FatError('corrupt', `the FAT file system claims ${needed} bytes but its partition has ${device.size}`);
    const fatIndex = geometry.activeFat ?? 0;
    const fat = await device.read(geometry.reservedSectors * geometry.bytesPerSector + fatIndex * fatBytes, fatBytes);
    const labelAt = geometry.type === 32 ? 71 : 43;
    const bootSig = boot[geometry.type === 32 ? 66 : 38];
    const bootLabel = bootSig === 0x29 ? boot.subarray(labelAt, labelAt + 11).toString('latin1').trimEnd() : '';
    const fs = new FatFs(device, geometry, fat, bootLabel === 'NO NAME' ? '' : bootLabel);
    const root = await fs.loadDir(fs.rootRef());
    if (root.label !== undefined) fs.volumeLabel = root.label;
    return fs;
  }

  /** Volume label: the root directory's label entry, else the boot sector's. */
  get label(): string {
    return this.volumeLabel;
  }

  get type(): FatType {
    return this.geometry.type;
  }

  get clusterSize(): number {
    return this.geometry.sectorsPerCluster * this.geometry.bytesPerSector;
  }

  /** Bytes in free clusters. */
  get freeBytes(): number {
    return this.freeCount * this.clusterSize;
  }

  /** The entries of a directory (`''` or `'/'` is the root), without `.` and `..`. */
  async list(dirPath: string): Promise<FatEntry[]> {
    const dir = await this.loadDir(await this.resolveDir(splitPath(dirPath)));
    return dir.entries.filter((e) => e.shortName !== '.' && e.shortName !== '..').map(publicEntry);
  }

  /** The entry at `path`, or undefined when it (or a parent) does not exist. */
  async stat(path: string): Promise<FatEntry | undefined> {
    const parts = splitPath(path);
    const name = parts.pop();
    if (name === undefined) return { name: '/', shortName: '/', isDirectory: true, size: 0, firstCluster: 0 };
    let dir: DirRef;
    try {
      dir = await this.resolveDir(parts);
    } catch (err) {
      if (err instanceof FatError && (err.code === 'notFound' || err.code === 'notDirectory')) return undefined;
      throw err;
    }
    const entry = findEntry(await this.loadDir(dir), name);
    return entry && publicEntry(entry);
  }

  async readFile(path: string): Promise<Buffer> {
    const entry = await this.stat(path);
    if (!entry) throw new FatError('notFound', `${path} does not exist`);
    if (entry.isDirectory) throw new FatError('isDirectory', `${path} is a directory`);
    if (entry.size === 0) return Buffer.alloc(0);
    const chain = this.chain(entry.firstCluster);
    if (chain.length * this.clusterSize < entry.size) throw new FatError('corrupt', `${path}: its cluster chain is shorter than its size`);
    const data = await this.readClusters(chain.slice(0, Math.ceil(entry.size / this.clusterSize)));
    return data.subarray(0, entry.size);
  }

  /**
   * The bytes writing these files would need beyond what is free (0 when they fit): new
   * clusters for the data, minus the clusters of files they replace, plus a cluster for each new
   * directory and for each directory that has to grow. Checked before anything is written.
   */
  async shortfall(files: Array<{ path: string; size: number }>): Promise<{ free: number; needed: number }> {
    let needed = 0;
    let reclaimed = 0;
    const newDirs = new Set<string>();
    const newEntries = new Map<string, { names: string[]; dir?: LoadedDir }>();
    for (const file of files) {
      needed += Math.ceil(file.size / this.clusterSize);
      const parts = splitPath(file.path);
      const name = parts.pop() ?? '';
      let parentKnown = true;
      for (let i = 1; i <= parts.length; i++) {
        const sub = parts.slice(0, i).join('/');
        if (!parentKnown || !(await this.stat(sub))) {
          parentKnown = false;
          if (!newDirs.has(sub.toLowerCase())) {
            newDirs.add(sub.toLowerCase());
            needed += 1;
          }
        }
      }
      const existing = parentKnown ? await this.stat(file.path) : undefined;
      if (existing && !existing.isDirectory && existing.size > 0) reclaimed += this.chain(existing.firstCluster).length;
      if (!existing && parentKnown) {
        const key = parts.join('/').toLowerCase();
        const group = newEntries.get(key) ?? { names: [], dir: await this.loadDir(await this.resolveDir(parts)) };
        group.names.push(name);
        newEntries.set(key, group);
      }
    }
    for (const { names, dir } of newEntries.values()) {
      if (!dir || dir.ref.kind === 'fixed') continue;
      const slots = names.reduce((n, name) => n + entriesFor(name), 0);
      const freeSlots = countFreeSlots(dir.bytes);
      if (freeSlots < slots) needed += Math.ceil(((slots - freeSlots) * ENTRY) / this.clusterSize);
    }
    const free = (this.freeCount + reclaimed) * this.clusterSize;
    return { free, needed: needed * this.clusterSize };
  }

  /** Creates or replaces a file; parent directories must exist (see mkdir). */
  async writeFile(path: string, data: Buffer): Promise<void> {
    const parts = splitPath(path);
    const name = parts.pop();
    if (name === undefined) throw new FatError('isDirectory', '/ is a directory');
    const dirRef = await this.resolveDir(parts);
    const dir = await this.loadDir(dirRef);
    const existing = findEntry(dir, name);
    if (existing?.isDirectory) throw new FatError('isDirectory', `${path} is a directory`);
    const count = Math.ceil(data.length / this.clusterSize);
    const old = existing && existing.firstCluster >= 2 ? this.chain(existing.firstCluster) : [];
    const available = this.freeCount + old.length;
    const growth = existing ? 0 : this.growthFor(dir, entriesFor(name));
    if (count + growth > available) {
      throw new FatError('noSpace', `no space for ${path}`, { free: available * this.clusterSize, needed: (count + growth) * this.clusterSize });
    }
    // New clusters first, so the old content stays intact until the entry points elsewhere (the
    // old ones are taken only when nothing else is free).
    const clusters = this.allocate(count, old);
    await this.writeClusters(clusters, data);
    // The new chain is in the FATs before the entry points at it; the old one is freed after.
    await this.commit();
    const first = clusters[0] ?? 0;
    if (existing) {
      const at = existing.slot * ENTRY;
      setCluster(dir.bytes, at, first);
      dir.bytes.writeUInt32LE(data.length, at + 28);
      stampWrite(dir.bytes, at, new Date());
      dir.bytes[at + 11] = (dir.bytes[at + 11] ?? 0) | ATTR_ARCHIVE;
      await this.writeDirSlots(dir, existing.slot, 1);
    } else {
      await this.addEntry(dir, name, { attr: ATTR_ARCHIVE, cluster: first, size: data.length });
    }
    const reused = new Set(clusters);
    if (old.some((c) => !reused.has(c))) {
      await this.device.sync?.();
      for (const c of old) if (!reused.has(c)) this.release(c);
    }
  }

  /** Creates a directory (and, with recursive, its missing parents); an existing one is fine with recursive. */
  async mkdir(path: string, options: { recursive?: boolean } = {}): Promise<void> {
    const parts = splitPath(path);
    let ref = this.rootRef();
    for (let i = 0; i < parts.length; i++) {
      const part = parts[i] ?? '';
      const dir = await this.loadDir(ref);
      const entry = findEntry(dir, part);
      const last = i === parts.length - 1;
      if (entry) {
        if (!entry.isDirectory) throw new FatError('notDirectory', `${parts.slice(0, i + 1).join('/')} is not a directory`);
        if (last && !options.recursive) throw new FatError('exists', `${path} already exists`);
        ref = { kind: 'chain', cluster: entry.firstCluster };
        continue;
      }
      if (!last && !options.recursive) throw new FatError('notFound', `${parts.slice(0, i + 1).join('/')} does not exist`);
      const growth = this.growthFor(dir, entriesFor(part));
      if (1 + growth > this.freeCount) throw new FatError('noSpace', `no space for directory ${path}`, { free: this.freeCount * this.clusterSize, needed: (1 + growth) * this.clusterSize });
      const [cluster] = this.allocate(1, []);
      if (cluster === undefined) throw new FatError('noSpace', 'no free cluster');
      const body = Buffer.alloc(this.clusterSize);
      const now = new Date();
      writeShortEntry(body, 0, Buffer.from('.          ', 'latin1'), ATTR_DIRECTORY, cluster, 0, 0, now);
      const parentCluster = ref.kind === 'chain' && ref.cluster !== this.geometry.rootCluster ? ref.cluster : 0;
      writeShortEntry(body, ENTRY, Buffer.from('..         ', 'latin1'), ATTR_DIRECTORY, parentCluster, 0, 0, now);
      await this.writeClusters([cluster], body);
      await this.commit();
      await this.addEntry(dir, part, { attr: ATTR_DIRECTORY, cluster, size: 0 });
      ref = { kind: 'chain', cluster };
    }
  }

  /** Deletes a file (not a directory); false when there was none. */
  async remove(path: string): Promise<boolean> {
    const parts = splitPath(path);
    const name = parts.pop();
    if (name === undefined) throw new FatError('isDirectory', '/ is a directory');
    let dir: LoadedDir;
    try {
      dir = await this.loadDir(await this.resolveDir(parts));
    } catch (err) {
      if (err instanceof FatError && err.code === 'notFound') return false;
      throw err;
    }
    const entry = findEntry(dir, name);
    if (!entry) return false;
    if (entry.isDirectory) throw new FatError('isDirectory', `${path} is a directory`);
    if (entry.firstCluster >= 2) for (const c of this.chain(entry.firstCluster)) this.release(c);
    for (let s = entry.firstSlot; s <= entry.slot; s++) dir.bytes[s * ENTRY] = 0xe5;
    await this.writeDirSlots(dir, entry.firstSlot, entry.slot - entry.firstSlot + 1);
    return true;
  }

  /**
   * Data written so far, then the FATs, made durable in that order: the step before a directory
   * entry points at new clusters. With it, a write cut off at any point (Ctrl-C, a pulled card)
   * leaves either the old file or the new one, and at worst clusters marked used that no entry
   * names, which fsck frees.
   */
  private async commit(): Promise<void> {
    await this.device.sync?.();
    await this.flush();
    await this.device.sync?.();
  }

  /** Writes the changed part of the FAT to every copy, and FAT32's FSInfo. Call after writes. */
  async flush(): Promise<void> {
    const g = this.geometry;
    if (this.dirtyTo >= 0) {
      const bps = g.bytesPerSector;
      const from = Math.floor(this.dirtyFrom / bps) * bps;
      const to = Math.min(this.fat.length, Math.ceil((this.dirtyTo + 1) / bps) * bps);
      const slice = this.fat.subarray(from, to);
      const fatBytes = g.fatSectors * bps;
      const copies = g.activeFat === undefined ? Array.from({ length: g.fatCount }, (_, i) => i) : [g.activeFat];
      for (const i of copies) await this.device.write(g.reservedSectors * bps + i * fatBytes + from, Buffer.from(slice));
      this.dirtyFrom = Number.POSITIVE_INFINITY;
      this.dirtyTo = -1;
    }
    if (g.type === 32 && g.fsInfoSector > 0) {
      // The primary FSInfo, and the copy in the backup boot region when mkfs made one.
      const backupBoot = (await this.device.read(0, 512)).readUInt16LE(50);
      const sectors = [g.fsInfoSector, ...(backupBoot > 0 && backupBoot < g.reservedSectors - 1 ? [backupBoot + g.fsInfoSector] : [])];
      for (const s of sectors) {
        const at = s * g.bytesPerSector;
        const info = await this.device.read(at, 512);
        if (info.readUInt32LE(0) !== 0x41615252 || info.readUInt32LE(484) !== 0x61417272) continue;
        info.writeUInt32LE(this.freeCount, 488);
        info.writeUInt32LE(this.nextFree, 492);
        await this.device.write(at, info);
      }
    }
  }

  // ------------------------------------------------------------------ FAT

  private get(cluster: number): number {
    const fat = this.fat;
    switch (this.geometry.type) {
      case 12: {
        const at = Math.floor(cluster * 1.5);
        const v = fat.readUInt16LE(at);
        return cluster & 1 ? v >> 4 : v & 0xfff;
      }
      case 16:
        return fat.readUInt16LE(cluster * 2);
      case 32:
        return fat.readUInt32LE(cluster * 4) & 0x0fffffff;
    }
  }

  private set(cluster: number, value: number): void {
    const fat = this.fat;
    let at: number;
    let width: number;
    switch (this.geometry.type) {
      case 12: {
        at = Math.floor(cluster * 1.5);
        width = 2;
        const v = fat.readUInt16LE(at);
        fat.writeUInt16LE(cluster & 1 ? (v & 0x000f) | ((value & 0xfff) << 4) : (v & 0xf000) | (value & 0xfff), at);
        break;
      }
      case 16:
        at = cluster * 2;
        width = 2;
        fat.writeUInt16LE(value & 0xffff, at);
        break;
      case 32:
        at = cluster * 4;
        width = 4;
        fat.writeUInt32LE(((fat.readUInt32LE(at) & 0xf0000000) | (value & 0x0fffffff)) >>> 0, at);
        break;
    }
    this.dirtyFrom = Math.min(this.dirtyFrom, at);
    this.dirtyTo = Math.max(this.dirtyTo, at + width - 1);
  }

  private get endOfChain(): number {
    return this.geometry.type === 12 ? 0xfff : this.geometry.type === 16 ? 0xffff : 0x0fffffff;
  }

  private isEnd(value: number): boolean {
    return value >= (this.geometry.type === 12 ? 0xff8 : this.geometry.type === 16 ? 0xfff8 : 0x0ffffff8);
  }

  private validCluster(c: number): boolean {
    return c >= 2 && c < this.geometry.clusterCount + 2;
  }

  /** The clusters of a chain, in order; a loop or a free/bad link is `corrupt`. */
  private chain(first: number): number[] {
    const out: number[] = [];
    const limit = this.geometry.clusterCount;
    let c = first;
    while (true) {
      if (!this.validCluster(c)) throw new FatError('corrupt', `cluster chain from ${first} reaches invalid cluster ${c}`);
      out.push(c);
      if (out.length > limit) throw new FatError('corrupt', `cluster chain from ${first} loops`);
      const next = this.get(c);
      if (this.isEnd(next)) return out;
      c = next;
    }
  }

  /** Takes `count` clusters, free ones first, then `reusable` ones; links them as one chain. */
  private allocate(count: number, reusable: number[]): number[] {
    const out: number[] = [];
    const total = this.geometry.clusterCount;
    let c = this.validCluster(this.nextFree) ? this.nextFree : 2;
    for (let scanned = 0; out.length < count && scanned < total; scanned++) {
      if (this.get(c) === FREE) out.push(c);
      c = c + 1 >= total + 2 ? 2 : c + 1;
    }
    for (const r of reusable) {
      if (out.length >= count) break;
      out.push(r);
    }
    if (out.length < count) throw new FatError('noSpace', 'not enough free clusters', { free: this.freeCount * this.clusterSize, needed: count * this.clusterSize });
    const reusableSet = new Set(reusable);
    for (let i = 0; i < out.length; i++) {
      const cluster = out[i] ?? 0;
      if (!reusableSet.has(cluster)) this.freeCount--;
      this.set(cluster, out[i + 1] ?? this.endOfChain);
    }
    this.nextFree = c;
    return out;
  }

  private release(cluster: number): void {
    this.set(cluster, FREE);
    this.freeCount++;
  }

  // ------------------------------------------------------------------ data

  private clusterOffset(c: number): number {
    return this.geometry.dataOffset + (c - 2) * this.clusterSize;
  }

  private async readClusters(clusters: number[]): Promise<Buffer> {
    const parts: Buffer[] = [];
    for (const run of runs(clusters)) parts.push(await this.device.read(this.clusterOffset(run.first), run.count * this.clusterSize));
    return Buffer.concat(parts);
  }

  /** Writes `data` across `clusters` (contiguous runs in one write), zero-filling the last. */
  private async writeClusters(clusters: number[], data: Buffer): Promise<void> {
    let at = 0;
    for (const run of runs(clusters)) {
      const length = run.count * this.clusterSize;
      let chunk = data.subarray(at, at + length);
      if (chunk.length < length) chunk = Buffer.concat([chunk, Buffer.alloc(length - chunk.length)]);
      await this.device.write(this.clusterOffset(run.first), chunk);
      at += length;
    }
  }

  // ------------------------------------------------------------------ directories

  private rootRef(): DirRef {
    return this.geometry.type === 32 ? { kind: 'chain', cluster: this.geometry.rootCluster } : { kind: 'fixed' };
  }

  private async resolveDir(parts: string[]): Promise<DirRef> {
    let ref = this.rootRef();
    for (let i = 0; i < parts.length; i++) {
      const entry = findEntry(await this.loadDir(ref), parts[i] ?? '');
      const where = parts.slice(0, i + 1).join('/');
      if (!entry) throw new FatError('notFound', `${where} does not exist`);
      if (!entry.isDirectory) throw new FatError('notDirectory', `${where} is not a directory`);
      ref = entry.firstCluster === 0 ? this.rootRef() : { kind: 'chain', cluster: entry.firstCluster };
    }
    return ref;
  }

  private async loadDir(ref: DirRef): Promise<LoadedDir> {
    let bytes: Buffer;
    let clusters: number[] = [];
    if (ref.kind === 'fixed') {
      bytes = await this.device.read(this.geometry.rootOffset, this.geometry.rootEntryCount * ENTRY);
    } else {
      clusters = this.chain(ref.cluster);
      bytes = await this.readClusters(clusters);
    }
    const { entries, label } = parseDir(bytes);
    return { ref, bytes, clusters, entries, label };
  }

  /** Clusters a directory must grow by to hold `slots` more entries (0 when they fit). */
  private growthFor(dir: LoadedDir, slots: number): number {
    if (findFreeRun(dir.bytes, slots) >= 0) return 0;
    if (dir.ref.kind === 'fixed') throw new FatError('noSpace', 'the root directory is full (FAT12/16 roots hold a fixed number of entries)');
    return Math.ceil((slots * ENTRY) / this.clusterSize);
  }

  private async addEntry(dir: LoadedDir, name: string, e: { attr: number; cluster: number; size: number }): Promise<void> {
    const existingShort = new Set(dir.entries.map((x) => x.shortName));
    const plan = planName(name, existingShort);
    const slots = plan.long.length + 1;
    let start = findFreeRun(dir.bytes, slots);
    if (start < 0) {
      if (dir.ref.kind === 'fixed') throw new FatError('noSpace', 'the root directory is full (FAT12/16 roots hold a fixed number of entries)');
      const extra = Math.ceil((slots * ENTRY) / this.clusterSize);
      const last = dir.clusters.at(-1) ?? 0;
      const added = this.allocate(extra, []);
      this.set(last, added[0] ?? this.endOfChain);
      await this.writeClusters(added, Buffer.alloc(0));
      // Zeroed clusters (the directory's end) join its chain on disk before entries go in them.
      await this.commit();
      const firstNew = dir.bytes.length / ENTRY;
      dir.bytes = Buffer.concat([dir.bytes, Buffer.alloc(extra * this.clusterSize)]);
      dir.clusters.push(...added);
      // Use the free tail of the old last cluster too when it joins the new space.
      const run = findFreeRun(dir.bytes, slots);
      start = run >= 0 ? run : firstNew;
    }
    plan.long.forEach((entry, i) => entry.copy(dir.bytes, (start + i) * ENTRY));
    const at = (start + plan.long.length) * ENTRY;
    writeShortEntry(dir.bytes, at, plan.short, e.attr, e.cluster, e.size, plan.caseFlags, new Date());
    await this.writeDirSlots(dir, start, slots);
  }

  /** Writes directory slots [first, first + count) back to where they live. */
  private async writeDirSlots(dir: LoadedDir, first: number, count: number): Promise<void> {
    const from = first * ENTRY;
    const to = (first + count) * ENTRY;
    if (dir.ref.kind === 'fixed') {
      await this.device.write(this.geometry.rootOffset + from, Buffer.from(dir.bytes.subarray(from, to)));
      return;
    }
    const size = this.clusterSize;
    for (let i = Math.floor(from / size); i * size < to; i++) {
      const cluster = dir.clusters[i];
      if (cluster === undefined) throw new FatError('corrupt', 'directory shorter than its entries');
      const lo = Math.max(from, i * size);
      const hi = Math.min(to, (i + 1) * size);
      await this.device.write(this.clusterOffset(cluster) + (lo - i * size), Buffer.from(dir.bytes.subarray(lo, hi)));
    }
  }
}

// -------------------------------------------------------------------- directory entries (pure)

function publicEntry(e: RawEntry): FatEntry {
  return { name: e.name, shortName: e.shortName, isDirectory: e.isDirectory, size: e.size, firstCluster: e.firstCluster };
}

function splitPath(p: string): string[] {
  return p.split(/[\\/]+/).filter((s) => s !== '' && s !== '.');
}

function findEntry(dir: LoadedDir, name: string): RawEntry | undefined {
  const lower = name.toLowerCase();
  return dir.entries.find((e) => e.name.toLowerCase() === lower) ?? dir.entries.find((e) => e.shortName.toLowerCase() === lower);
}

/** Entries of a directory's bytes, long names joined to their 8.3 entry when the checksum matches. */
export function parseDir(bytes: Buffer): { entries: RawEntry[]; label?: string } {
  const entries: RawEntry[] = [];
  let label: string | undefined;
  let long: { parts: string[]; checksum: number; first: number; expect: number } | undefined;
  for (let slot = 0; slot * ENTRY < bytes.length; slot++) {
    const at = slot * ENTRY;
    const first = bytes[at] ?? 0;
    if (first === 0x00) break;
    const attr = bytes[at + 11] ?? 0;
    if (first === 0xe5) {
      long = undefined;
      continue;
    }
    if ((attr & 0x3f) === ATTR_LFN) {
      const ord = first & 0x1f;
      const checksum = bytes[at + 13] ?? 0;
      if (first & 0x40) long = { parts: [], checksum, first: slot, expect: ord };
      if (!long || ord !== long.expect || checksum !== long.checksum || ord === 0) {
        long = undefined;
        continue;
      }
      long.parts[ord - 1] = lfnChars(bytes, at);
      long.expect = ord - 1;
      continue;
    }
    if (attr & ATTR_VOLUME) {
      if (label === undefined) label = bytes.subarray(at, at + 11).toString('latin1').trimEnd();
      long = undefined;
      continue;
    }
    const raw = Buffer.from(bytes.subarray(at, at + 11));
    if (raw[0] === 0x05) raw[0] = 0xe5;
    const shortName = displayShort(raw, 0);
    const name = long && long.expect === 0 && long.checksum === shortNameChecksum(bytes.subarray(at, at + 11)) ? long.parts.join('') : displayShort(raw, bytes[at + 12] ?? 0);
    entries.push({
      name,
      shortName,
      isDirectory: (attr & ATTR_DIRECTORY) !== 0,
      size: bytes.readUInt32LE(at + 28),
      firstCluster: (bytes.readUInt16LE(at + 20) << 16) | bytes.readUInt16LE(at + 26),
      slot,
      firstSlot: long && long.expect === 0 ? long.first : slot,
    });
    long = undefined;
  }
  return { entries, label };
}

const LFN_OFFSETS = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];

function lfnChars(bytes: Buffer, at: number): string {
  let s = '';
  for (const o of LFN_OFFSETS) {
    const code = bytes.readUInt16LE(at + o);
    if (code === 0x0000 || code === 0xffff) break;
    s += String.fromCharCode(code);
  }
  return s;
}

/** `CONFIG  TXT` → `CONFIG.TXT`; with the NT flags 0x08/0x10, base/extension in lower case. */
function displayShort(raw: Buffer, caseFlags: number): string {
  let base = raw.subarray(0, 8).toString('latin1').trimEnd();
  let ext = raw.subarray(8, 11).toString('latin1').trimEnd();
  if (caseFlags & 0x08) base = base.toLowerCase();
  if (caseFlags & 0x10) ext = ext.toLowerCase();
  return ext ? `${base}.${ext}` : base;
}

/** The checksum of an 8.3 name that its long-name entries carry. */
export function shortNameChecksum(name11: Buffer): number {
  let sum = 0;
  for (let i = 0; i < 11; i++) sum = (((sum & 1) << 7) + (sum >> 1) + (name11[i] ?? 0)) & 0xff;
  return sum;
}

function isFreeSlot(bytes: Buffer, slot: number): boolean {
  const b = bytes[slot * ENTRY];
  return b === 0x00 || b === 0xe5;
}

/** The first index of `count` consecutive free slots, or -1. */
function findFreeRun(bytes: Buffer, count: number): number {
  const slots = bytes.length / ENTRY;
  let run = 0;
  for (let s = 0; s < slots; s++) {
    // Everything after the end marker is free.
    if (bytes[s * ENTRY] === 0x00) return s - run + count <= slots ? s - run : -1;
    run = isFreeSlot(bytes, s) ? run + 1 : 0;
    if (run === count) return s - count + 1;
  }
  return -1;
}

function countFreeSlots(bytes: Buffer): number {
  let n = 0;
  for (let s = 0; s * ENTRY < bytes.length; s++) if (isFreeSlot(bytes, s)) n++;
  return n;
}

// 8.3 names: what may stand in one, and how a long name becomes one.
const SHORT_OK = /^[A-Z0-9!#$%&'()\-@^_`{}~\x80-\xff]$/;
// eslint-disable-next-line no-control-regex -- control characters are what long names may not hold
const LONG_INVALID = /[\x00-\x1f"*/:<>?\\|\x7f]/;

/** Number of directory slots a name takes: 1, plus its long-name entries when it needs them. */
function entriesFor(name: string): number {
  return plainShort(name) ? 1 : 1 + Math.ceil(name.length / 13);
}

/** The 11-byte name and NT case flags when `name` fits 8.3 as it is (one case per part). */
function plainShort(name: string): { short: Buffer; caseFlags: number } | undefined {
  if (name === '.' || name === '..') return undefined;
  const dot = name.lastIndexOf('.');
  const base = dot < 0 ? name : name.slice(0, dot);
  const ext = dot < 0 ? '' : name.slice(dot + 1);
  if (base.length < 1 || base.length > 8 || ext.length > 3 || (dot >= 0 && ext.length === 0)) return undefined;
  const oneCase = (s: string) => s === s.toUpperCase() || s === s.toLowerCase();
  if (!oneCase(base) || !oneCase(ext)) return undefined;
  const upper = (base + ext).toUpperCase();
  if (![...upper].every((ch) => SHORT_OK.test(ch))) return undefined;
  const caseFlags = (base !== base.toUpperCase() ? 0x08 : 0) | (ext !== ext.toUpperCase() ? 0x10 : 0);
  return { short: Buffer.from(base.toUpperCase().padEnd(8) + ext.toUpperCase().padEnd(3), 'latin1'), caseFlags };
}

/** Replaces what cannot stand in an 8.3 name; `lossy` when anything was changed or dropped. */
function shortChars(s: string): { text: string; lossy: boolean } {
  let text = '';
  let lossy = false;
  for (const ch of s.toUpperCase()) {
    if (ch === ' ' || ch === '.') {
      lossy = true;
      continue;
    }
    if (SHORT_OK.test(ch) && ch.charCodeAt(0) < 0x80) text += ch;
    else {
      text += '_';
      lossy = true;
    }
  }
  return { text, lossy };
}

/**
 * How a name is stored: an 8.3 entry alone when it fits, else long-name entries (last part first)
 * and a unique `BASENA~N.EXT` alias, as the VFAT specification describes.
 */
export function planName(name: string, taken: Set<string>): { short: Buffer; caseFlags: number; long: Buffer[] } {
  if (name.length === 0 || name.length > 255 || LONG_INVALID.test(name) || /^\.+$/.test(name)) {
    throw new FatError('invalidName', `'${name}' is not a valid file name`);
  }
  const plain = plainShort(name);
  if (plain) return { ...plain, long: [] };
  const trimmed = name.replace(/^\.+/, '');
  const dot = trimmed.lastIndexOf('.');
  const base = shortChars(dot < 0 ? trimmed : trimmed.slice(0, dot));
  const extChars = shortChars(dot < 0 ? '' : trimmed.slice(dot + 1));
  const ext = extChars.text.slice(0, 3);
  const baseText = base.text || '_';
  let short: Buffer | undefined;
  // Only case differs (e.g. `ReadMe.txt`): the upper-case 8.3 name needs no numeric tail.
  const exact = !base.lossy && !extChars.lossy && base.text.length <= 8 && extChars.text.length <= 3 && trimmed === name;
  if (exact && base.text && !taken.has(ext ? `${base.text}.${ext}` : base.text)) short = Buffer.from(base.text.padEnd(8) + ext.padEnd(3), 'latin1');
  for (let n = 1; n < 1_000_000 && !short; n++) {
    const tail = `~${n}`;
    const candidate = baseText.slice(0, 8 - tail.length) + tail;
    const display = ext ? `${candidate}.${ext}` : candidate;
    if (!taken.has(display)) short = Buffer.from(candidate.padEnd(8) + ext.padEnd(3), 'latin1');
  }
  if (!short) throw new FatError('noSpace', `no free short name for '${name}'`);
  const count = Math.ceil(name.length / 13);
  const checksum = shortNameChecksum(short);
  const long: Buffer[] = [];
  for (let ord = count; ord >= 1; ord--) {
    const entry = Buffer.alloc(ENTRY);
    entry[0] = ord | (ord === count ? 0x40 : 0);
    entry[11] = ATTR_LFN;
    entry[13] = checksum;
    LFN_OFFSETS.forEach((o, i) => {
      const index = (ord - 1) * 13 + i;
      const code = index < name.length ? name.charCodeAt(index) : index === name.length ? 0x0000 : 0xffff;
      entry.writeUInt16LE(code, o);
    });
    long.push(entry);
  }
  return { short, caseFlags: 0, long };
}

function setCluster(bytes: Buffer, at: number, cluster: number): void {
  bytes.writeUInt16LE((cluster >>> 16) & 0xffff, at + 20);
  bytes.writeUInt16LE(cluster & 0xffff, at + 26);
}

function dosDateTime(d: Date): { date: number; time: number } {
  const year = Math.min(Math.max(d.getFullYear(), 1980), 2107);
  return {
    date: ((year - 1980) << 9) | ((d.getMonth() + 1) << 5) | d.getDate(),
    time: (d.getHours() << 11) | (d.getMinutes() << 5) | Math.floor(d.getSeconds() / 2),
  };
}

function stampWrite(bytes: Buffer, at: number, now: Date): void {
  const { date, time } = dosDateTime(now);
  bytes.writeUInt16LE(time, at + 22);
  bytes.writeUInt16LE(date, at + 24);
  bytes.writeUInt16LE(date, at + 18);
}

function writeShortEntry(bytes: Buffer, at: number, name11: Buffer, attr: number, cluster: number, size: number, caseFlags: number, now: Date): void {
  bytes.fill(0, at, at + ENTRY);
  name11.copy(bytes, at, 0, 11);
  if (bytes[at] === 0xe5) bytes[at] = 0x05;
  bytes[at + 11] = attr;
  bytes[at + 12] = caseFlags;
  const { date, time } = dosDateTime(now);
  bytes.writeUInt16LE(time, at + 14);
  bytes.writeUInt16LE(date, at + 16);
  stampWrite(bytes, at, now);
  setCluster(bytes, at, cluster);
  bytes.writeUInt32LE(size, at + 28);
}

/** Consecutive clusters grouped, so each run is one read or write. */
function runs(clusters: number[]): Array<{ first: number; count: number }> {
  const out: Array<{ first: number; count: number }> = [];
  for (const c of clusters) {
    const last = out.at(-1);
    if (last && last.first + last.count === c) last.count++;
    else out.push({ first: c, count: 1 });
  }
  return out;
}
