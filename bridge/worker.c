/* What the session layer asks of the state its workers share: the runtime snapshot and
 * mail to other loops. */
#include "bridge/worker.h"

#include "bridge/ids.h"
#include "bridge/mailbox.h"
#include "bridge/runtime.h"
#include "connectors/connector.h"

struct wsb_runtime *wsb_shared_runtime(struct wsb_shared *sh)
{
    pthread_mutex_lock(&sh->rt_lock);
    struct wsb_runtime *rt = wsb_runtime_ref(sh->rt);
    pthread_mutex_unlock(&sh->rt_lock);
    return rt;
}

void wsb_worker_post(struct wsb_shared *sh, uint64_t mask, int type, uint64_t id,
                     struct wsb_msg *msg, const char *text, const char *text2, bool ok)
{
    for (unsigned i = 0; i < sh->nworkers; i++) {
        if (!(mask & (1u << i)))
            continue;
        struct wsb_msg *m = msg ? wsb_msg_ref(msg) : NULL;
        struct wsb_mail *mail = wsb_mail_new((enum wsb_mail_type)type, id, m, text, text2, ok);
        if (mail)
            wsb_mailbox_post(sh->workers[i]->mailbox, mail);
    }
}

void wsb_worker_broadcast_source(struct wsb_shared *sh, int type, uint64_t id)
{
    wsb_worker_post(sh, wsb_source_loops(id), type, id, NULL, NULL, NULL, true);
}
