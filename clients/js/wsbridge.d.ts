// Type declarations for wsbridge.js (protocol wsbridge.v1, SPEC §5 and §10).

/** A server `message` object (SPEC §5), passed verbatim to onMessage. */
export interface Message<T = unknown> {
    type: "message";
    channel: string;
    /** The broker payload: verbatim JSON, else a string, else base64 (see `encoding`). */
    data: T;
    encoding?: "base64";
    key?: string;
    key_encoding?: "base64";
    headers?: Record<string, string | { base64: string } | null>;
    /** Broker timestamp, Unix milliseconds. */
    timestamp?: number;
    /** Kafka channels. */
    partition?: number;
    offset?: number;
    /** `delivery: ack` channels: echo back through ack()/nack(). */
    ack_id?: number | string;
}

/** Where a Kafka subscription starts (AMQP channels accept only "latest"). */
export type From =
    | "latest"
    | "earliest"
    | { timestamp: number }
    | { offsets: Record<string, number> };

export type State = "connecting" | "open" | "reconnecting" | "closed";

export interface StateEvent {
    state: State;
    /** WebSocket close code that caused "reconnecting" / "closed" (4401 token refused, 1001
     * server draining, 1006 connection failed or handshake refused, ...). */
    code?: number;
    /** The close reason; for 4401 a JSON text such as `{"error":"token_expired"}`. */
    reason?: string;
    /** The `error` member of a JSON close reason (`token_expired`, `token_invalid`, ...). */
    error?: string | null;
    /** reconnecting/connecting: the attempt number; reconnecting: the delay before it, ms. */
    attempt?: number;
    delay?: number;
    /** open: from the server's welcome. */
    session?: string;
    sub?: string | null;
    expires_at?: number | null;
    transport?: "websocket" | "sse";
}

/** How publish() and subscriptions fail: the server's error code (SPEC §5: "forbidden",
 * "unknown_channel", "publish_failed", "rate_limited", ...) or one of the client's own:
 * "disconnected" (the connection dropped before the answer: outcome unknown), "closed",
 * "timeout", "token_unavailable". */
export interface WsbridgeError extends Error {
    code: string;
    message: string;
}

export interface ConnectOptions {
    /** A fixed token. Without getToken a refused or expired token ends the client. */
    token?: string;
    /** Called for the first token, after a 4401, and before `expires_at` to refresh the
     * token through the `auth` op (no reconnect; on SSE the stream reopens with
     * Last-Event-ID positions, nothing lost). */
    getToken?: () => string | Promise<string>;
    /** Transports in order of preference. Default ["websocket", "sse"]: when the WebSocket
     * cannot open (upgrade refused, or cut before `welcome`) the next attempt uses Server-Sent
     * Events (EventSource on `ssePath`, publish through `POST /publish`; a token refresh
     * reopens the stream from the delivered offsets). ack/nack need the WebSocket. */
    transports?: Array<"websocket" | "sse">;
    /** Reconnect delays: min(maxMs, initialMs * factor^n) with jitter in [d/2, d]. Default
     * {initialMs: 500, maxMs: 30000, factor: 2, maxAttempts: Infinity}. */
    backoff?: { initialMs?: number; maxMs?: number; factor?: number; maxAttempts?: number };
    /** Refresh the token this many seconds before `expires_at` (at most half of the time
     * left). Default 30. */
    refreshMarginS?: number;
    /** A connection that stayed open this long resets the backoff. Default 5000. */
    stableMs?: number;
    /** How the token travels: a `bearer.T` subprotocol entry (default) or `?access_token=`. */
    tokenIn?: "subprotocol" | "query";
    /** A WebSocket constructor for runtimes without a global one. */
    WebSocket?: unknown;
    /** The bridge's `sse.path` (default "/sse"); publish goes to `/publish` on the same host. */
    ssePath?: string;
    /** An EventSource constructor and a fetch function for runtimes without global ones
     * (the "sse" transport is skipped when either is missing). */
    EventSource?: unknown;
    fetch?: unknown;
}

/** One alternative of a per-record filter: every condition must hold. */
export interface Filter {
    key?: string;
    headers?: { [name: string]: string };
}

export interface SubscribeOptions {
    /** Where the first subscription starts; after a reconnect a Kafka channel resumes from
     * the offsets just past the last message delivered. */
    from?: From;
    /** Narrows the channel's per-record filter (docs/filters.md): `{key?, headers?}` or a
     * list of such objects (alternatives). A filter that would widen it is `forbidden`. */
    filter?: Filter | Filter[];
    /** The subscription was refused or ended by the server. */
    onError?: (err: WsbridgeError) => void;
}

export interface Subscription {
    readonly channel: string;
    /** False once unsubscribed, refused or ended by the server. */
    readonly active: boolean;
    /** Resolves with the first `subscribed` reply; rejects with its error. */
    readonly ready: Promise<{ type: "subscribed"; channel: string; offsets?: Record<string, number> }>;
    /** Kafka channels: the next offset per partition (where a resume starts), else null. */
    readonly offsets: Record<string, number> | null;
    /** Stops delivery at once; resolves when the server confirmed. */
    unsubscribe(): Promise<void>;
}

export interface PublishOptions {
    key?: string;
    headers?: Record<string, string>;
    /** Reject with code "timeout" after this many ms (default: wait for the server). */
    timeoutMs?: number;
}

export interface Client {
    readonly url: string;
    readonly state: State;
    /** From the current welcome. */
    readonly session: string | null;
    readonly sub: string | null;
    readonly expiresAt: number | null;
    on(event: "state", fn: (e: StateEvent) => void): () => void;
    on(event: "subscribed", fn: (e: { channel: string; offsets: Record<string, number> | null; resumed: boolean }) => void): () => void;
    on(event: "unsubscribed", fn: (e: { type: "unsubscribed"; channel: string; reason?: string }) => void): () => void;
    on(event: "gap", fn: (e: { type: "gap"; channel: string; dropped: number }) => void): () => void;
    on(event: "authenticated", fn: (e: { expires_at: number | null }) => void): () => void;
    on(event: "error", fn: (e: { code: string; message: string; channel?: string }) => void): () => void;
    off(event: string, fn: (...args: any[]) => void): void;
    subscribe<T = unknown>(channel: string, onMessage: (msg: Message<T>) => void, options?: SubscribeOptions): Subscription;
    /** Resolves with the `published` reply after the broker confirmed; rejects with a
     * WsbridgeError. Publishes made while disconnected are sent when the connection opens. */
    publish(channel: string, data: unknown, options?: PublishOptions): Promise<{ type: "published"; id: number; channel: string }>;
    ack(msg: Message): void;
    nack(msg: Message, options?: { requeue?: boolean }): void;
    /** Closes for good (no reconnect). */
    close(code?: number, reason?: string): void;
}

export function connect(url: string, options?: ConnectOptions): Client;
