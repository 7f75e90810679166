/* Client connections: accept, the socket callbacks, and the WebSocket input of an open
 * session (frames, UTF-8, permessage-deflate, ping/pong/close, inbound limits). Above the
 * upgrade and the protocol ops, which it calls; nothing below calls it. */
#ifndef WSB_BRIDGE_CONN_H
#define WSB_BRIDGE_CONN_H

#include <sys/socket.h>

struct bufferevent;
struct wsb_session;
struct wsb_worker;

/** Sets TCP_NODELAY on listening socket `fd` once: Linux copies it to every socket accepted
 * from it, which saves a setsockopt per connection. Where that fails, wsb_conn_accept sets it
 * on each connection. @locality any thread, before its listener accepts */
void wsb_conn_listener_init(int fd);

/** Takes over an accepted socket (closed on failure). @locality worker loop */
void wsb_conn_accept(struct wsb_worker *w, int fd, const struct sockaddr *addr, int socklen);

/** Starts a session on `bev` (taken over: freed with the session, or at once on failure)
 * from peer `addr`, waiting for its HTTP upgrade. Returns the session (owned by the worker)
 * or NULL. Unit tests call it with one end of a bufferevent pair. @locality worker loop */
struct wsb_session *wsb_conn_open(struct wsb_worker *w, struct bufferevent *bev,
                                  const struct sockaddr *addr, int socklen);

#endif
