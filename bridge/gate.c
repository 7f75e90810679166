/* The hand-off gate: behind clients, their allowance, and whether the loop may go on. */
#include "bridge/gate.h"

void wsb_gate_init(struct wsb_gate *g)
{
    g->behind = NULL;
    g->nbehind = 0;
    g->holders = 0;
    g->next_expiry_us = INT64_MAX;
    wsb_map_init(&g->sources);
    g->on_hold = NULL;
    g->hold_ctx = NULL;
}

void wsb_gate_cleanup(struct wsb_gate *g)
{
    wsb_map_cleanup(&g->sources);
}

void wsb_gate_set_hold_cb(struct wsb_gate *g, wsb_gate_hold_cb cb, void *ctx)
{
    g->on_hold = cb;
    g->hold_ctx = ctx;
}

void wsb_gate_member_init(struct wsb_gate_member *m, int64_t now_us)
{
    m->prev = m->next = NULL;
    m->behind = m->holding = m->exhausted = false;
    m->debt_us = 0;
    m->allow_us = 0;
    m->last_us = now_us;
}

/* Brings the member's debt up to now: it grows while behind, shrinks at half speed while
 * not. A clock that goes back changes nothing. */
static void settle(struct wsb_gate_member *m, int64_t now_us)
{
    int64_t dt = now_us > m->last_us ? now_us - m->last_us : 0;
    m->last_us = now_us > m->last_us ? now_us : m->last_us;
    if (m->behind) {
        m->debt_us = dt > m->allow_us - m->debt_us ? m->allow_us : m->debt_us + dt;
        if (m->debt_us >= m->allow_us)
            m->exhausted = true;
    } else {
        m->debt_us = dt / 2 >= m->debt_us ? 0 : m->debt_us - dt / 2;
        if (m->debt_us == 0)
            m->exhausted = false;
    }
}

static int64_t expiry(const struct wsb_gate_member *m)
{
    return m->last_us + (m->allow_us - m->debt_us);
}

static void set_holding(struct wsb_gate *g, struct wsb_gate_member *m, bool holding)
{
    if (holding == m->holding)
        return;
    m->holding = holding;
    if (holding) {
        g->holders++;
        int64_t e = expiry(m);
        if (e < g->next_expiry_us)
            g->next_expiry_us = e;
    } else {
        g->holders--;
    }
    if (g->on_hold)
        g->on_hold(g->hold_ctx, m, holding);
}

void wsb_gate_note(struct wsb_gate *g, struct wsb_gate_member *m, bool behind, int64_t allow_us,
                   int64_t now_us)
{
    settle(m, now_us);
    m->allow_us = allow_us > 0 ? allow_us : 0;
    if (m->debt_us > m->allow_us)
        m->debt_us = m->allow_us;
    if (m->debt_us >= m->allow_us && m->behind)
        m->exhausted = true;
    if (behind != m->behind) {
        m->behind = behind;
        if (behind) {
            m->prev = NULL;
            m->next = g->behind;
            if (g->behind)
                g->behind->prev = m;
            g->behind = m;
            g->nbehind++;
        } else {
            if (m->prev)
                m->prev->next = m->next;
            else
                g->behind = m->next;
            if (m->next)
                m->next->prev = m->prev;
            m->prev = m->next = NULL;
            g->nbehind--;
        }
    }
    set_holding(g, m, m->behind && !m->exhausted && m->allow_us > 0);
}

void wsb_gate_leave(struct wsb_gate *g, struct wsb_gate_member *m)
{
    wsb_gate_note(g, m, false, m->allow_us, m->last_us);
}

/* Someone's allowance may have run out by `now_us`: settle every behind member. */
static void expire(struct wsb_gate *g, int64_t now_us)
{
    if (g->holders == 0 || now_us < g->next_expiry_us)
        return;
    g->next_expiry_us = INT64_MAX;
    for (struct wsb_gate_member *m = g->behind; m; m = m->next) {
        settle(m, now_us);
        bool holding = !m->exhausted && m->allow_us > 0;
        /* set_holding lowers next_expiry_us only for a member that starts holding */
        set_holding(g, m, holding);
        if (holding && expiry(m) < g->next_expiry_us)
            g->next_expiry_us = expiry(m);
    }
}

bool wsb_gate_open(struct wsb_gate *g, int64_t now_us)
{
    expire(g, now_us);
    return g->holders == 0;
}

long wsb_gate_source_hold(struct wsb_gate *g, uint64_t source, int delta)
{
    uintptr_t n = (uintptr_t)wsb_map_get_u64(&g->sources, source);
    if (delta > 0) {
        if (wsb_map_put_u64(&g->sources, source, (void *)(n + 1)) < 0)
            return -1;
        return (long)(n + 1);
    }
    if (n <= 1) {
        wsb_map_del_u64(&g->sources, source);
        return 0;
    }
    wsb_map_put_u64(&g->sources, source, (void *)(n - 1)); /* replaces: no allocation */
    return (long)(n - 1);
}

bool wsb_gate_source_open(struct wsb_gate *g, uint64_t source, int64_t now_us)
{
    if (g->holders == 0)
        return true;
    expire(g, now_us);
    return g->holders == 0 || !wsb_map_get_u64(&g->sources, source);
}
