/**
 * The part of multicast-dns (and the dns-packet records it carries) that discovery uses. A local
 * declaration keeps @types/multicast-dns and @types/dns-packet out of the dependencies.
 */
declare module 'multicast-dns' {
  import type { EventEmitter } from 'node:events';
  import type { RemoteInfo } from 'node:dgram';

  export interface MdnsQuestion {
    name: string;
    type: string;
    class?: string;
  }

  export interface SrvData {
    port: number;
    target: string;
    priority?: number;
    weight?: number;
  }

  /** TXT data is encoded from strings or buffers and always decodes to an array of buffers. */
  export type MdnsRecord =
    | { name: string; type: 'A' | 'AAAA' | 'PTR'; ttl?: number; class?: string; flush?: boolean; data: string }
    | { name: string; type: 'SRV'; ttl?: number; class?: string; flush?: boolean; data: SrvData }
    | { name: string; type: 'TXT'; ttl?: number; class?: string; flush?: boolean; data: string | Buffer | Array<string | Buffer> }
    | { name: string; type: Exclude<string, 'A' | 'AAAA' | 'PTR' | 'SRV' | 'TXT'>; ttl?: number; class?: string; flush?: boolean; data?: unknown };

  export interface MdnsPacket {
    id?: number;
    type?: 'query' | 'response';
    flags?: number;
    questions?: MdnsQuestion[];
    answers?: MdnsRecord[];
    authorities?: MdnsRecord[];
    additionals?: MdnsRecord[];
  }

  export interface MdnsOptions {
    port?: number;
    /** Multicast group (default 224.0.0.251). */
    ip?: string;
    /** Local address whose interface joins the group and carries what is sent. */
    interface?: string;
    /** Address to bind (default: `interface`); false to not bind. */
    bind?: string | false;
    reuseAddr?: boolean;
    loopback?: boolean;
    ttl?: number;
    multicast?: boolean;
  }

  export interface Destination {
    port: number;
    address?: string;
    host?: string;
  }

  export interface MulticastDns extends EventEmitter {
    query(packet: MdnsPacket, callback?: (err: Error | null) => void): void;
    query(packet: MdnsPacket, destination: Destination, callback?: (err: Error | null) => void): void;
    respond(packet: MdnsPacket, destination?: Destination | null, callback?: (err: Error | null) => void): void;
    send(packet: MdnsPacket, destination?: Destination | null, callback?: (err: Error | null) => void): void;
    destroy(callback?: () => void): void;
    on(event: 'query' | 'response' | 'packet', listener: (packet: MdnsPacket, rinfo: RemoteInfo) => void): this;
    on(event: 'error' | 'warning', listener: (err: NodeJS.ErrnoException) => void): this;
    on(event: 'ready' | 'networkInterface', listener: () => void): this;
    once(event: 'ready', listener: () => void): this;
    once(event: 'error', listener: (err: NodeJS.ErrnoException) => void): this;
  }

  export default function multicastDns(options?: MdnsOptions): MulticastDns;
}
