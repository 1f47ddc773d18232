// Capabilities: after this the sandbox holds none, in any set, and cannot regain them
// (securebits locked, bounding and ambient sets emptied). It is still uid 0 of its own namespace.
#include "worker.h"
#include <errno.h>
#include <linux/securebits.h>
#include <sys/capability.h>
#include <sys/prctl.h>

void cw_drop_capabilities(void) {
    CW_TRY("securebits", prctl(PR_SET_SECUREBITS,
        SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP | SECBIT_NO_SETUID_FIXUP_LOCKED |
        SECBIT_KEEP_CAPS_LOCKED | SECBIT_NO_CAP_AMBIENT_RAISE | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED, 0, 0, 0));
    for (int cap = 0; cap <= 63; cap++) {
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) {
            if (errno == EINVAL) break; // past the last capability this kernel knows
            cw_fail("drop-capabilities", errno, "PR_CAPBSET_DROP");
        }
    }
    CW_TRY("drop-capabilities", prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0));
    cap_t none = cap_init(); // every set empty
    if (!none) cw_fail("drop-capabilities", errno, "cap_init");
    if (cap_set_proc(none) < 0) cw_fail("drop-capabilities", errno, "cap_set_proc");
    cap_free(none);
}
