/*
 * x86_64_restart.c — which interrupted system calls a ptrace stop must rewind so that the
 * program never sees EINTR, and how. Shared by the engine's ptrace stop (engine/ptrace_stop.c)
 * and the attach injector (cli/inject.c), which stop threads the same way and must leave them
 * the same way; it depends on nothing but the registers, so both compile it.
 *
 * Rewinding a system call. A thread stopped by PTRACE_INTERRUPT while it was blocked in a call
 * is stopped on its way back to user mode: orig_rax holds the call's number (>= 0; every other
 * way into the kernel leaves -1 there) and rax its result. When the thread goes on and no
 * handler runs, the kernel itself restarts what ended in -ERESTARTSYS, -ERESTARTNOINTR,
 * -ERESTARTNOHAND (rip -= 2, rax = orig_rax) and -ERESTART_RESTARTBLOCK (restart_syscall, with
 * the time that was left). A call that ended in -EINTR is not restarted: that is what a
 * program sees after any stop (signal(7), "Interruption of system calls and library functions
 * by stop signals"). For those calls the stop puts -ERESTARTNOHAND in rax, the code the
 * kernel itself gives a call that must not be restarted after a handler, and lets the kernel
 * decide as the thread goes on (its restart code runs after the stop, on these registers):
 *   - no handler runs: the call is restarted (rip -= 2 over the `syscall` instruction, 0F 05,
 *     or `int $0x80`, CD 80, both 2 bytes; rax = orig_rax), with the arguments it had (the
 *     registers that carry them are preserved by the kernel);
 *   - a handler runs (the program's own signal arrived while the thread was held, or the stop
 *     was a signal's): the call fails with EINTR, as it would have without the stop, and only
 *     in the thread that runs the handler. A process-directed signal reaches one thread; the
 *     others restart. Deciding this in the stop instead would mean guessing which thread the
 *     kernel will give it to.
 * A stop that comes again before the thread has left the kernel finds -ERESTARTNOHAND (not
 * EINTR) and leaves it. Only calls that are known to have done nothing when they fail with
 * EINTR, and whose second run means the same thing, are handed back:
 *   epoll_wait, epoll_pwait, epoll_pwait2 (a signal mask given to epoll_pwait is put back by
 *       the kernel before the thread returns to user mode, and set again by the second run);
 *   rt_sigtimedwait (sigtimedwait, sigwaitinfo), semop, semtimedop, msgrcv, msgsnd,
 *       mq_timedreceive, mq_timedsend, io_getevents, io_pgetevents;
 *   the socket calls that fail with EINTR when they time out by SO_RCVTIMEO/SO_SNDTIMEO
 *       (accept, accept4, recvfrom, recvmsg, recvmmsg, sendto, sendmsg, sendmmsg) and read,
 *       readv, write, writev (which reach the same code on a socket): EINTR only when nothing
 *       was transferred.
 * A relative timeout starts afresh in the second run: the call can end later than it would
 * have, by at most the time it had already waited, never earlier. Not rewound: close (the
 * descriptor is gone already), connect (the second run would say EALREADY), io_uring_enter
 * (it may have submitted), ioctl and everything else: those keep their EINTR.
 */
#include <errno.h>
#include <stdbool.h>
#include <sys/syscall.h>
#include <sys/user.h>

#include "arch.h"
#include "engine/stopped_window.h"

HP_STOPPED_WINDOW static bool rewindable(long nr)
{
    switch (nr) {
    case SYS_epoll_wait:
    case SYS_epoll_pwait:
#ifdef SYS_epoll_pwait2
    case SYS_epoll_pwait2:
#else
    case 441:
#endif
    case SYS_rt_sigtimedwait:
    case SYS_semop:
    case SYS_semtimedop:
    case SYS_msgrcv:
    case SYS_msgsnd:
    case SYS_mq_timedreceive:
    case SYS_mq_timedsend:
    case SYS_io_getevents:
#ifdef SYS_io_pgetevents
    case SYS_io_pgetevents:
#endif
    case SYS_accept:
    case SYS_accept4:
    case SYS_recvfrom:
    case SYS_recvmsg:
    case SYS_recvmmsg:
    case SYS_sendto:
    case SYS_sendmsg:
    case SYS_sendmmsg:
    case SYS_read:
    case SYS_readv:
    case SYS_write:
    case SYS_writev:
        return true;
    default:
        return false;
    }
}

HP_STOPPED_WINDOW bool hp_arch_interrupted_eintr(const struct user_regs_struct *r)
{
    long nr = (long)r->orig_rax;
    return nr >= 0 && (long)r->rax == -EINTR && rewindable(nr);
}

/* The kernel's own code for "restart unless a handler runs" (include/linux/errno.h); never
 * seen by a program. */
#define HP_ERESTARTNOHAND 514

HP_STOPPED_WINDOW void hp_arch_rewind_syscall(struct user_regs_struct *r)
{
    r->rax = (unsigned long long)-HP_ERESTARTNOHAND;
}

