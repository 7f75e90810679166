/* Deliveries: what the hub calls on a session (a message for a subscription, its source
 * started or failed). The hub never includes the session; the worker hands it these
 * callbacks. Runs on the session's loop. */
#ifndef WSB_BRIDGE_DELIVERY_H
#define WSB_BRIDGE_DELIVERY_H

#include <stdint.h>

#include "bridge/hub.h"

/** A pending subscription's source started (or was running at attach): answers
 * `subscribed` with the start positions (JSON text or NULL). `owner` is the session. */
void wsb_delivery_started(void *owner, uint32_t slot, const char *positions);

/** The hub callbacks, with the session as owner and the subscription slot as tag. */
extern const struct wsb_hub_cbs wsb_delivery_hub_cbs;

#endif
