// Type declarations for @wsgate/client (wsgate.js).

export type SubscribableEvent =
  | "upload.progress"
  | "upload.completed"
  | "upload.error"
  | "upload.cancelled"
  | "review.updated"
  | "review.created"
  | "review.deleted"
  | "system.notification"
  | "system.maintenance"
  | "user.status_changed"
  | "file.processing"
  | "file.ready";

/** The 12 events a client may subscribe to. */
export const SUBSCRIBABLE_EVENTS: readonly SubscribableEvent[];

export const CloseCode: Readonly<{
  NORMAL: 1000;
  GOING_AWAY: 1001;
  ABNORMAL: 1006;
  POLICY: 1008;
  TOO_BIG: 1009;
  INTERNAL_ERROR: 1011;
  CONNECTION_TIMEOUT: 4000;
  TOKEN_EXPIRED: 4001;
  DISCONNECTED_BY_SERVER: 4003;
  SLOW_CONSUMER: 4008;
  CONNECTION_AGED: 4009;
  UNAUTHORIZED: 4401;
  TOO_MANY_CONNECTIONS: 4429;
  SERVER_AT_CAPACITY: 4503;
}>;

/** The retry advice a gateway close carries as its JSON reason (SPEC-v2 section 6). */
export interface CloseAdvice {
  /** e.g. SHUTDOWN, TOKEN_EXPIRED, SLOW_CONSUMER, UNAUTHORIZED */
  code: string;
  retry: "none" | "refresh" | "backoff" | "now";
  /** seconds: at least this long before reconnecting */
  retry_after?: number;
  /** SLOW_CONSUMER: messages this connection lost */
  dropped?: number;
}

/** The advice of a close reason, or null when the reason is not the gateway's JSON. */
export function parseCloseReason(reason: string): CloseAdvice | null;

export type ConnectionState = "idle" | "connecting" | "open" | "reconnecting" | "closed";

export const State: Readonly<{
  IDLE: "idle";
  CONNECTING: "connecting";
  OPEN: "open";
  RECONNECTING: "reconnecting";
  CLOSED: "closed";
}>;

/** A message as the server sends it. */
export interface ServerMessage<D = Record<string, any>> {
  type: string;
  data: D;
  timestamp: string;
  id: string;
  /** the id of the client message this answers */
  reply_to?: string;
  /** a recorded event's position in its stream (SPEC-v2 section 2.1) */
  stream?: Position & { name: string };
  /** a last value re-sent from the cache: its offset is not a gap */
  cached?: true;
}

/** a position in a stream: offsets grow by 1 per event within an epoch */
export interface Position {
  epoch: string;
  offset: number;
}

/** one stream of a `resumed` reply (or of subscription.confirmed's `streams`) */
export interface StreamRecovery {
  /** the stream's current epoch (null: the stream has no history yet) and top offset */
  epoch: string | null;
  offset: number;
  /** only where a position was given */
  recovered?: boolean;
  /** when not recovered: HISTORY_DISABLED, UNAVAILABLE, EPOCH_CHANGED, OFFSET_AHEAD, TOO_MANY, TOO_OLD */
  reason?: RecoveryFailureReason;
  replayed?: number;
}

export type RecoveryFailureReason =
  | "HISTORY_DISABLED"
  | "UNAVAILABLE"
  | "EPOCH_CHANGED"
  | "OFFSET_AHEAD"
  | "TOO_MANY"
  | "TOO_OLD"
  | string;

/** the `resumed` reply's data */
export interface ResumedData {
  /** true when every given position recovered (or none was given) */
  recovered: boolean;
  /** keyed by stream name: `user:{id}`, `broadcast`, `event:{type}` */
  streams: Record<string, StreamRecovery>;
  subscriptions: string[];
  topics: string[];
}

export interface ErrorData {
  code: string;
  message: string;
  /** RATE_LIMIT_EXCEEDED: whole seconds */
  retry_after?: number;
  /** INVALID_SUBSCRIPTION: the unknown events */
  invalid_events?: string[];
  [key: string]: unknown;
}

/**
 * An error reply from the gateway, or a client-side failure:
 * TIMEOUT, CONNECTION_LOST, QUEUE_OVERFLOW, CLOSED, TOKEN_ERROR, CONNECT_ERROR, NO_WEBSOCKET, INVALID_JSON.
 */
export class WsgateError extends Error {
  constructor(code: string, message?: string, data?: Record<string, unknown>, reply?: ServerMessage<ErrorData>);
  readonly name: "WsgateError";
  code: string;
  data: Partial<ErrorData> & Record<string, unknown>;
  /** seconds, for RATE_LIMIT_EXCEEDED */
  retryAfter?: number;
  /** the server's error message, when there was one */
  reply?: ServerMessage<ErrorData>;
}

export interface CloseInfo {
  code: number;
  reason: string;
  wasClean: boolean;
  /** the parsed reason of a gateway close; null for other closes (1006, an older gateway) */
  advice?: CloseAdvice | null;
  /** a refused upgrade (4401/4429/4503): the server's error data */
  refusal?: { code: string; message: string; retry_after?: number } | null;
}

export interface ClosedDetail extends CloseInfo {
  /** the socket had opened (false: a failed attempt, e.g. a refused handshake) */
  opened: boolean;
  willReconnect: boolean;
  failedOpens: number;
  /** close() was called */
  byClient?: boolean;
}

export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: { data: any }) => void) | null;
  onerror: ((ev: any) => void) | null;
  onclose: ((ev: { code: number; reason: string; wasClean: boolean }) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export interface WsgateClientOptions {
  /** http(s):// or ws(s):// base of the gateway; a URL without a path gets /api/v1/ws. Default: the page's origin. */
  url?: string;
  /** a fixed token; prefer getToken */
  token?: string;
  /** called before every (re)connect, so an expired token can be replaced */
  getToken?: () => string | Promise<string>;
  /** how the token is sent: the bearer.<token> subprotocol (default), ?token=, or the seed's /ws/{token} */
  auth?: "subprotocol" | "query" | "path";
  /** with getToken: ask for token.expiring (refresh=1) and answer it with auth.refresh on the same connection, no reconnect (default true) */
  refreshToken?: boolean;
  /** a WebSocket constructor (default: globalThis.WebSocket; in Node 20 pass `ws`'s or run with --experimental-websocket) */
  WebSocket?: WebSocketConstructor;
  /** reconnect after a close (default true) */
  reconnect?: boolean;
  /** backoff: a delay uniform in [0, min(backoffMax, backoffInitial * backoffFactor^attempt)] ms (full jitter) */
  backoffInitial?: number;
  backoffMax?: number;
  backoffFactor?: number;
  /** give up after this many consecutive attempts that never opened (default 8; Infinity: never) */
  maxFailedOpens?: number;
  /** reconnect even after a 4003 close (disconnected through the server API, or user deactivated). Default false */
  reconnectOnKick?: boolean;
  /** "close" (default): ask with ?refusal=close for refusals as 4401/4429/4503 closes, which browsers can see; "http": v1 */
  refusal?: "close" | "http";
  /** overrides the reconnect decision when it returns a boolean */
  shouldReconnect?: (info: CloseInfo & { opened: boolean; failedOpens: number }) => boolean | undefined;
  /** ms an attempt may take to open (default 10000) */
  openTimeout?: number;
  /** ms between application pings (default 25000; 0: off). Pings count against the server's rate limit */
  pingInterval?: number;
  /** ms without any incoming message before the connection is taken for dead and replaced (default 2.5 x pingInterval; 0: off) */
  deadTimeout?: number;
  /** default timeout of request() and its helpers, ms (default 10000; 0: none) */
  requestTimeout?: number;
  /** messages kept while not connected; the oldest are dropped first (default 100) */
  queueLimit?: number;
  /** ms a connection must stay open for the backoff to start again from backoffInitial (default 5000) */
  stableAfter?: number;
  /** random source for the jitter, for tests */
  random?: () => number;
  /** reconnect with resume=1 and send the last positions in a `resume` (default true; only while the server lists `recovery` in features) */
  recovery?: boolean;
  /** ask for the cached last values of streams not recovered (default true) */
  cache?: boolean;
  /** a stream's missed events cannot be replayed: refetch its state from the backend. position: what the client had (null if none) */
  onRecoveryFailed?: (stream: string, reason: RecoveryFailureReason, position: Position | null) => void;
  /** ids of recorded events remembered to drop a second copy (default 1000) */
  dedupWindow?: number;
}

export interface SubscriptionData {
  events: string[];
  subscriptions: string[];
  /** unsubscribe while disconnected: nothing was sent */
  pending?: boolean;
}

/** a token's expiry as the server states it (SPEC-v2 section 3) */
export interface TokenExpiry {
  /** the token's exp, RFC 3339 with ms */
  expires_at: string;
  /** whole seconds left, >= 0 (independent of the client's clock) */
  expires_in: number;
}

export interface ClientEvents {
  state: { state: ConnectionState; previous: ConnectionState; [k: string]: unknown };
  connecting: { attempt: number };
  open: { attempt: number };
  established: TokenExpiry & { connection_id: string; user_id: string; server_time: string; features: string[] };
  /** the token was renewed in-band (auth.refreshed) */
  refreshed: TokenExpiry;
  closed: ClosedDetail;
  reconnecting: { delay: number; attempt: number; code: number; reason: string };
  giveup: ClosedDetail;
  resubscribed: SubscriptionData;
  message: ServerMessage;
  sent: { type: string; data: unknown; timestamp: string; id: string };
  error: WsgateError;
  dropped: { message: { type: string; data: unknown; id: string } };
  latency: { rtt: number };
  /** the `resumed` reply after a (re)connect, before the replayed events */
  resumed: ResumedData;
  /** one per stream not recovered, as onRecoveryFailed */
  recoveryFailed: { stream: string; reason: RecoveryFailureReason; position: Position | null };
}

export type MessageHandler<D = any> = (data: D, message: ServerMessage<D>) => void;

export interface RequestOptions {
  /** ms; 0: no timeout */
  timeout?: number;
}

export class WsgateClient {
  constructor(options?: WsgateClientOptions | string);
  readonly options: Required<Omit<WsgateClientOptions, "url" | "token" | "getToken" | "WebSocket" | "shouldReconnect" | "onRecoveryFailed">> & WsgateClientOptions;
  /** seed-compatible: one handler per message type */
  messageHandlers: Map<string, MessageHandler>;
  /** the events this client wants; re-sent after every reconnect */
  subscriptions: Set<string>;
  /** what the server last confirmed, sorted */
  confirmedSubscriptions: string[];
  state: ConnectionState;
  connectionId: string | null;
  userId: string | null;
  lastClose: CloseInfo | null;
  /** round trip of the last application ping, ms */
  latency: number | null;
  /** the connection's token exp (RFC 3339) as the server last said: connection.established, then each auth.refreshed */
  tokenExpiresAt: string | null;
  /** the last position seen per stream name (from every recorded event, and the tops of resumed) */
  positions: Map<string, Position>;
  /** the last `resumed` reply, or null */
  lastRecovery: ResumedData | null;
  readonly isOpen: boolean;

  connect(): this;
  /** close for good: no reconnect, no timers left, pending requests rejected with CLOSED */
  close(code?: number, reason?: string): void;

  on<K extends keyof ClientEvents>(event: K, fn: (value: ClientEvents[K]) => void): () => void;
  off<K extends keyof ClientEvents>(event: K, fn: (value: ClientEvents[K]) => void): void;
  once<K extends keyof ClientEvents>(event: K): Promise<ClientEvents[K]>;
  onMessage<D = any>(type: string, fn: MessageHandler<D>): () => void;

  /** fire and forget (queued while disconnected); returns the message id */
  send(type: string, data?: unknown): string;
  send(message: { type: string; data?: unknown }): string;
  /** resolves with the reply whose reply_to is this message's id; rejects with WsgateError */
  request<D = any>(type: string, data?: unknown, options?: RequestOptions): Promise<ServerMessage<D>>;
  ping(options?: RequestOptions): Promise<{ timestamp: string; pingId: string | null; rtt: number }>;
  heartbeat(options?: RequestOptions): Promise<ServerMessage<{ timestamp: string }>>;
  subscribe(events: string | string[], options?: RequestOptions): Promise<SubscriptionData>;
  unsubscribe(events: string | string[], options?: RequestOptions): Promise<SubscriptionData>;
  cancelUpload(uploadId: string, options?: RequestOptions): Promise<{ upload_id: string }>;
  /** getToken(), then auth.refresh on the open connection; emits `refreshed`, or `error` and rejects (TOKEN_INVALID, TOKEN_SUB_MISMATCH, TOKEN_ERROR, ...) */
  refreshToken(options?: RequestOptions): Promise<TokenExpiry>;
}

/** the endpoint URL for a base URL: http(s) to ws(s), /api/v1/ws added when there is no path */
export function endpointUrl(url?: string): string;

/** new WsgateClient(options).connect() */
export function connect(options?: WsgateClientOptions | string): WsgateClient;

export default WsgateClient;
